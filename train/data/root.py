"""Where dataset files and caches live, read from the environment on every call so tests can switch."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "DISTILSHOT_DATA"
CACHE_ENV = "DISTILSHOT_CACHE"
OFFLINE_ENV = "DISTILSHOT_OFFLINE"


def cache_dir() -> Path:
    """`$DISTILSHOT_CACHE`, default `~/.cache/distilshot`; relative paths count from the working dir."""
    return Path(os.path.abspath(os.path.expanduser(os.environ.get(CACHE_ENV) or "~/.cache/distilshot")))


def download_root() -> Path:
    """The writable data root that downloads unpack into."""
    return cache_dir() / "data"


def data_roots() -> list[Path]:
    """Roots to look for dataset files in, first match wins: `$DISTILSHOT_DATA` (may be read-only), then
    the download root."""
    roots = []
    if os.environ.get(DATA_ENV):
        roots.append(Path(os.path.abspath(os.path.expanduser(os.environ[DATA_ENV]))))
    if download_root() not in roots:
        roots.append(download_root())
    return roots


def offline() -> bool:
    """`DISTILSHOT_OFFLINE=1` (any value but empty or 0) forbids downloads."""
    return os.environ.get(OFFLINE_ENV, "") not in ("", "0")
