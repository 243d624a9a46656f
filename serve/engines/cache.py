"""Where engines keep what they build per machine (TensorRT plans): `$DISTILSHOT_CACHE/engines`, default
`~/.cache/distilshot/engines`, the same cache root as the training data's."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "DISTILSHOT_CACHE"


def engine_cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV) or "~/.cache/distilshot"
    return Path(os.path.abspath(os.path.expanduser(root))) / "engines"
