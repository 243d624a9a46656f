"""Choosing an inference backend by name. Each backend module is imported only when chosen and provides
`is_available() -> bool` and `open_engine(bundle_dir, manifest, providers) -> Engine`."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path

from distilshot.errors import DistilshotError
from distilshot.serve.engines.base import Engine
from distilshot.serve.manifest import Manifest

# backend name -> module implementing it
BACKENDS: dict[str, str] = {
    "onnxruntime": "distilshot.serve.engines.onnxruntime_engine",
}
# "auto" takes the first available backend in this order
AUTO_ORDER: tuple[str, ...] = ("onnxruntime",)
INSTALL_HINT = "pip install distilshot[cpu] or distilshot[gpu]"


def open_engine(
    bundle_dir: Path | str,
    manifest: Manifest,
    backend: str = "auto",
    providers: Sequence[str] | None = None,
) -> Engine:
    """Opens the bundle's embedder with `backend` ("auto" or a key of BACKENDS)."""
    if backend == "auto":
        for name in AUTO_ORDER:
            module = importlib.import_module(BACKENDS[name])
            if module.is_available():
                return module.open_engine(Path(bundle_dir), manifest, providers)
        raise DistilshotError(f"no inference backend is installed: {INSTALL_HINT}")
    if backend not in BACKENDS:
        raise DistilshotError(f"unknown backend {backend!r}; choose auto or one of {sorted(BACKENDS)}")
    return importlib.import_module(BACKENDS[backend]).open_engine(Path(bundle_dir), manifest, providers)
