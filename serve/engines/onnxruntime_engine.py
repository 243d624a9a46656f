"""The ONNX Runtime backend: CPU by default; GPU execution providers (TensorRT, CUDA) on request, with a
check that they are really in use, since ONNX Runtime falls back to the CPU silently."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from distilshot.core.manifest import Manifest
from distilshot.errors import BundleError
from distilshot.serve.engines.base import (
    CHUNK_SIZE,
    EngineUnavailable,
    check_batch,
    embed_in_chunks,
    graph_role,
)
from distilshot.serve.engines.cache import engine_cache_dir
from distilshot.serve.engines.registry import backend

INSTALL_HINT = "pip install distilshot[cpu] (or distilshot[gpu] for CUDA)"
CPU = "CPUExecutionProvider"
DEFAULT_PROVIDERS = (CPU,)


def is_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def provider_options(name: str, manifest: Manifest, role: str) -> dict[str, Any]:
    """Options for one execution provider. TensorRT gets an engine cache (its engines take minutes to
    build) and an optimisation profile covering batches of 1 to CHUNK_SIZE images."""
    if name != "TensorrtExecutionProvider":
        return {}
    prep, graph = manifest.preprocessing, manifest.graphs[role]
    image = f"{prep.channels}x{prep.height}x{prep.width}"
    return {
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(engine_cache_dir() / "onnxruntime-tensorrt"),
        "trt_timing_cache_enable": True,
        "trt_profile_min_shapes": f"{graph.input}:1x{image}",
        "trt_profile_opt_shapes": f"{graph.input}:{CHUNK_SIZE}x{image}",
        "trt_profile_max_shapes": f"{graph.input}:{CHUNK_SIZE}x{image}",
    }


class OnnxRuntimeEngine:
    """Runs the bundle's ONNX graph of `precision` in an onnxruntime InferenceSession."""

    def __init__(
        self,
        bundle_dir: Path,
        manifest: Manifest,
        providers: Sequence[str] | None = None,
        chunk_size: int = CHUNK_SIZE,
        precision: str = "fp32",
        name: str = "onnxruntime",
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise EngineUnavailable(f"onnxruntime is not installed: {INSTALL_HINT}") from None
        self.name = name
        self.role = graph_role(manifest, precision)
        self._manifest = manifest
        self._graph = manifest.graphs[self.role]
        self._chunk_size = chunk_size
        requested = list(providers or DEFAULT_PROVIDERS)
        missing = [p for p in requested if p not in ort.get_available_providers()]
        if missing:
            raise EngineUnavailable(
                f"onnxruntime execution providers {missing} are not available here; "
                f"available: {ort.get_available_providers()}"
            )
        path = Path(bundle_dir) / self._graph.file
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: ORT's warnings are not actionable for users
        try:
            self._session = ort.InferenceSession(
                str(path),
                sess_options=options,
                providers=[(p, provider_options(p, manifest, self.role)) for p in requested],
            )
        except Exception as error:  # ORT raises its own pybind exception types for bad graphs
            raise BundleError(f"onnxruntime cannot load {path}: {error}") from None
        accelerators = [p for p in requested if p != CPU]
        if accelerators and not set(accelerators) & set(self.providers_in_use):
            raise EngineUnavailable(
                f"onnxruntime was asked for {accelerators} but fell back to {self.providers_in_use}: "
                "no usable GPU, or its CUDA/cuDNN/TensorRT libraries are missing"
            )
        self._check_signature(path)

    def _check_signature(self, path: Path) -> None:
        """The graph must take and produce what the manifest says, so mistakes show up at open."""
        prep = self._manifest.preprocessing
        inputs = {i.name: i for i in self._session.get_inputs()}
        graph_input = inputs.get(self._graph.input)
        if graph_input is None:
            raise BundleError(f"{path} has no input {self._graph.input!r}; it has {sorted(inputs)}")
        if graph_input.type != "tensor(float)" or len(graph_input.shape) != 4:
            raise BundleError(
                f"{path} input must be a 4-d float tensor, not {graph_input.type} {graph_input.shape}"
            )
        for actual, expected in zip(
            graph_input.shape[1:], (prep.channels, prep.height, prep.width), strict=True
        ):
            if isinstance(actual, int) and actual != expected:
                raise BundleError(
                    f"{path} input shape {graph_input.shape} does not match the manifest's "
                    f"[N, {prep.channels}, {prep.height}, {prep.width}]"
                )
        outputs = {o.name: o for o in self._session.get_outputs()}
        for output in self._graph.outputs:
            found = outputs.get(output.name)
            if found is None:
                raise BundleError(f"{path} has no output {output.name!r}; it has {sorted(outputs)}")
            dim = found.shape[-1] if found.shape else None
            if isinstance(dim, int) and dim != output.dim:
                raise BundleError(
                    f"{path} output {output.name!r} has dim {dim}; the manifest says {output.dim}"
                )

    @property
    def providers_in_use(self) -> list[str]:
        return list(self._session.get_providers())

    def embed(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        check_batch(batch, self._manifest.preprocessing)
        names = [o.name for o in self._graph.outputs]

        def run(chunk: np.ndarray) -> dict[str, np.ndarray]:
            return dict(zip(names, self._session.run(names, {self._graph.input: chunk}), strict=True))

        return embed_in_chunks(run, batch, self._graph, self._chunk_size)


@backend("onnxruntime")
def open_engine(
    bundle_dir: Path, manifest: Manifest, providers: Sequence[str] | None = None, precision: str = "fp32"
) -> OnnxRuntimeEngine:
    return OnnxRuntimeEngine(bundle_dir, manifest, providers=providers, precision=precision)
