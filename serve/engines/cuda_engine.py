"""The `cuda` backend: ONNX Runtime on the CUDA execution provider (onnxruntime-gpu, the `gpu` extra),
refused unless CUDA really runs the graph."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from distilshot.core.manifest import Manifest
from distilshot.errors import DistilshotError
from distilshot.serve.engines.base import EngineUnavailable
from distilshot.serve.engines.onnxruntime_engine import CPU, OnnxRuntimeEngine
from distilshot.serve.engines.registry import backend

PROVIDER = "CUDAExecutionProvider"


def is_available() -> bool:
    if importlib.util.find_spec("onnxruntime") is None:
        return False
    import onnxruntime as ort

    return PROVIDER in ort.get_available_providers()


@backend("cuda")
def open_engine(
    bundle_dir: Path, manifest: Manifest, providers: Sequence[str] | None = None, precision: str = "fp32"
) -> OnnxRuntimeEngine:
    if providers:
        raise DistilshotError(
            "the cuda backend picks its own providers; choose them with --backend onnxruntime"
        )
    if not is_available():
        raise EngineUnavailable(
            f"onnxruntime has no {PROVIDER} here: install distilshot[gpu] (onnxruntime-gpu) instead of [cpu]"
        )
    # CPU stays in the list for the few ops CUDA lacks; the engine refuses to run if CUDA is not in use
    return OnnxRuntimeEngine(bundle_dir, manifest, (PROVIDER, CPU), precision=precision, name="cuda")
