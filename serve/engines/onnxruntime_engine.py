"""The ONNX Runtime backend: CPU by default; GPU execution providers (TensorRT, CUDA) on request, with a
check that every one asked for is really in use: ONNX Runtime drops a provider whose libraries do not
load and, when the TensorRT provider fails to start, retries with CUDA on its own (its `enable_fallback`,
turned off here), both without an error."""

from __future__ import annotations

import contextlib
import importlib.util
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from distilshot.core.manifest import Manifest
from distilshot.errors import BundleError
from distilshot.serve.engines.base import (
    CHUNK_SIZE,
    EngineFailed,
    EngineUnavailable,
    check_batch,
    closed_error,
    embed_in_chunks,
    graph_role,
)
from distilshot.serve.engines.cache import engine_cache_dir
from distilshot.serve.engines.registry import backend

INSTALL_HINT = "pip install distilshot[cpu] (or distilshot[gpu] for CUDA)"
CPU = "CPUExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
DEFAULT_PROVIDERS = (CPU,)
# onnxruntime-gpu 1.31 is built for CUDA 13 and cuDNN 9, which [gpu] does not install
GPU_LIBRARIES_HINT = (
    "missing CUDA 13 and cuDNN 9 libraries: pip install 'onnxruntime-gpu[cuda,cudnn]' (NVIDIA's wheels), "
    "or the system's CUDA 13 runtime, cuBLAS, cuFFT, cuRAND, NVRTC and cuDNN 9 on the library path"
)


def is_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def tensorrt_cache_dir() -> Path:
    """The TensorRT provider's engine and timing cache folder, created: the provider makes only the last
    folder of the path, and fails to start when its parent is missing."""
    folder = engine_cache_dir() / "onnxruntime-tensorrt"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise EngineFailed(
            f"cannot create the TensorRT engine cache {folder} ({error.strerror}); "
            "set DISTILSHOT_CACHE to a writable folder"
        ) from None
    return folder


def provider_options(name: str, manifest: Manifest, role: str) -> dict[str, Any]:
    """Options for one execution provider. TensorRT gets an engine cache (its engines take minutes to
    build) with its timing cache in it (by default that goes to the working directory), and an
    optimisation profile covering batches of 1 to CHUNK_SIZE images."""
    if name != TENSORRT:
        return {}
    prep, graph = manifest.preprocessing, manifest.graphs[role]
    image = f"{prep.channels}x{prep.height}x{prep.width}"
    cache = str(tensorrt_cache_dir())
    return {
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": cache,
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": cache,
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
        accelerators = [p for p in requested if p != CPU]
        not_loaded = preload_gpu_libraries(ort) if accelerators else ""
        with_options = [(p, provider_options(p, manifest, self.role)) for p in requested]
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: ORT's warnings are not actionable for users
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=options, providers=with_options, enable_fallback=0
            )
        except Exception as error:  # ORT raises its own pybind exception types for bad graphs
            if accelerators:
                raise EngineFailed(f"onnxruntime could not start {accelerators} on {path}: {error}") from None
            raise BundleError(f"onnxruntime cannot load {path}: {error}") from None
        self._providers = list(self._session.get_providers())
        dropped = [p for p in accelerators if p not in self._providers]
        if dropped:
            reported = f" (preloading reported: {not_loaded})" if not_loaded else ""
            raise EngineUnavailable(
                f"onnxruntime was asked for {accelerators} but fell back to {self._providers}: "
                f"{dropped} did not load: no usable GPU, or {GPU_LIBRARIES_HINT}{reported}"
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
        return list(self._providers)

    def embed(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        session = self._session
        if session is None:
            raise closed_error(self.name)
        check_batch(batch, self._manifest.preprocessing)
        names = [o.name for o in self._graph.outputs]

        def run(chunk: np.ndarray) -> dict[str, np.ndarray]:
            return dict(zip(names, session.run(names, {self._graph.input: chunk}), strict=True))

        return embed_in_chunks(run, batch, self._graph, self._chunk_size)

    def close(self) -> None:
        """Drops the session, and with it the memory its providers hold (on the GPU for CUDA/TensorRT)."""
        self._session = None


def preload_gpu_libraries(ort: Any) -> str:
    """Loads CUDA and cuDNN for the GPU providers where ONNX Runtime finds them (NVIDIA's pip wheels, then
    the library path): serving runs without torch, which would otherwise have loaded them. Returns what
    it reported (the libraries it could not load), for the error message if a provider then drops."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # it prints its failures
        ort.preload_dlls()
    return " ".join(printed.getvalue().split())


@backend("onnxruntime")
def open_engine(
    bundle_dir: Path, manifest: Manifest, providers: Sequence[str] | None = None, precision: str = "fp32"
) -> OnnxRuntimeEngine:
    return OnnxRuntimeEngine(bundle_dir, manifest, providers=providers, precision=precision)
