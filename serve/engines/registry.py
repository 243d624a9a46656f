"""Choosing an inference backend by name, or `auto`. Each backend module (serve/engines/*_engine.py,
imported by serve/engines/__init__.py) registers its `open_engine(bundle_dir, manifest, providers,
precision) -> Engine` with `@backend(name)`, which raises EngineUnavailable when the backend cannot run
here after all (no GPU, a provider that fell back to the CPU) or EngineFailed when it is there but fails
on the graph or device (serve/engines/base.py), and provides `is_available() -> bool`
(cheap: are its packages installed?). Both are looked up on the module when used. Packages a backend
needs (tensorrt, openvino, onnxruntime) are imported only when it opens."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from distilshot.core.manifest import Manifest
from distilshot.errors import DistilshotError
from distilshot.serve.engines.base import Engine, EngineFailed, EngineUnavailable

# backend name -> the module implementing it, filled by @backend
BACKENDS: dict[str, str] = {}
# "auto" takes the first backend in this order that opens: GPU engines first, then the CPU ones. On the
# CPU, int8 graphs go to OpenVINO (ONNX Runtime's int8 CPU kernels are not faster than its fp32 ones;
# `make bench` measures both) and fp32/fp16 to ONNX Runtime, which starts about a second sooner.
AUTO_ORDER: dict[str, tuple[str, ...]] = {
    "fp32": ("tensorrt", "cuda", "onnxruntime", "openvino"),
    "fp16": ("tensorrt", "cuda", "onnxruntime", "openvino"),
    "int8": ("tensorrt", "cuda", "openvino", "onnxruntime"),
}
INSTALL_HINT = "pip install distilshot[cpu] or distilshot[gpu]"
OpenEngine = TypeVar("OpenEngine", bound=Callable[..., Engine])


def backend(name: str) -> Callable[[OpenEngine], OpenEngine]:
    """Registers the decorated `open_engine` of an engine module as backend `name`."""

    def register(open_engine: OpenEngine) -> OpenEngine:
        BACKENDS[name] = open_engine.__module__
        return open_engine

    return register


def open_engine(
    bundle_dir: Path | str,
    manifest: Manifest,
    backend: str = "auto",
    providers: Sequence[str] | None = None,
    precision: str = "fp32",
) -> Engine:
    """Opens the bundle's embedder graph of `precision` with `backend` ("auto" or a key of BACKENDS).
    `auto` skips backends whose packages are missing and warns (RuntimeWarning) about each installed one
    it passes over, so that a GPU host running on the CPU says why."""
    if backend == "auto":
        reasons = []
        for name in AUTO_ORDER.get(precision, AUTO_ORDER["fp32"]):
            module = importlib.import_module(BACKENDS[name])
            if not module.is_available():
                continue
            try:
                return module.open_engine(Path(bundle_dir), manifest, providers, precision)
            except (EngineUnavailable, EngineFailed) as error:
                reasons.append(f"{name}: {error}")
                message = f"backend {name} cannot run ({error}); trying the next"
                warnings.warn(message, RuntimeWarning, stacklevel=2)
        raise DistilshotError(
            f"no inference backend can run here ({'; '.join(reasons) or 'none is installed'}): {INSTALL_HINT}"
        )
    if backend not in BACKENDS:
        raise DistilshotError(f"unknown backend {backend!r}; choose auto or one of {sorted(BACKENDS)}")
    return importlib.import_module(BACKENDS[backend]).open_engine(
        Path(bundle_dir), manifest, providers, precision
    )
