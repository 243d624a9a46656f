"""The TensorRT backend (the `gpu` extra: tensorrt + cuda-bindings), written against the TensorRT 10/11
Python API: a strongly typed network parsed from the bundle's ONNX graph, so the precision is the graph's
own (fp32, fp16 from the fp16 graph, int8 from the Q/DQ graph); one optimisation profile for batches of
1..CHUNK_SIZE; named I/O tensors and `execute_async_v3` at run time.

Plans are specific to a GPU and a TensorRT version, so they live in the engine cache, keyed by GPU name,
compute capability, TensorRT version, the graph's sha256 and the profile, and are built on first use.
`tensorrt` and `cuda.bindings` are imported only when this backend is opened. A TensorRT that cannot
load is EngineUnavailable; a graph it cannot parse or build, a plan it cannot load, an unwritable cache
or a CUDA error is EngineFailed (serve/engines/base.py): `auto` moves on after either.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from distilshot.core.manifest import Manifest
from distilshot.errors import BundleError, DistilshotError
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

INSTALL_HINT = "pip install distilshot[gpu] (tensorrt, cuda-bindings, onnxruntime-gpu)"
REQUIRED = {"tensorrt": "tensorrt", "cuda.bindings": "cuda-bindings"}
WORKSPACE_BYTES = 1 << 30


def is_available() -> bool:
    return all(_importable(module) for module in REQUIRED)


def import_tensorrt() -> tuple[ModuleType, ModuleType]:
    """(tensorrt, cuda.bindings.runtime), or EngineUnavailable naming the missing packages."""
    missing = [package for module, package in REQUIRED.items() if not _importable(module)]
    if missing:
        raise EngineUnavailable(f"the tensorrt backend needs {', '.join(missing)}: {INSTALL_HINT}")
    try:
        return importlib.import_module("tensorrt"), importlib.import_module("cuda.bindings.runtime")
    except (ImportError, OSError) as error:  # installed, but its libraries (or the driver's) do not load
        raise EngineUnavailable(f"tensorrt is installed but cannot load: {error}") from None


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # the parent package is missing
        return False


def cuda_check(result: tuple[Any, ...]) -> Any:
    """cuda.bindings calls return (error, *values); raise on an error, return the value(s)."""
    error, *values = result
    if int(error) != 0:
        raise EngineFailed(f"CUDA call failed: {error}")
    return values[0] if len(values) == 1 else tuple(values)


@dataclass(frozen=True)
class Gpu:
    name: str
    compute_capability: str


def current_gpu(cudart: ModuleType) -> Gpu:
    """The GPU plans are built for (device 0), or EngineUnavailable when CUDA sees none."""
    error, count = cudart.cudaGetDeviceCount()
    if int(error) != 0 or count < 1:
        raise EngineUnavailable(f"the tensorrt backend needs a CUDA GPU, and none is visible ({error})")
    props = cuda_check(cudart.cudaGetDeviceProperties(0))
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return Gpu(name.rstrip("\x00"), f"{props.major}.{props.minor}")


@dataclass(frozen=True)
class PlanKey:
    """Everything a serialized plan depends on."""

    gpu: str
    compute_capability: str
    tensorrt: str
    graph_sha256: str
    profile: tuple[int, int, int]  # min, opt, max batch

    def path(self, cache: Path) -> Path:
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()
        return cache / "tensorrt" / f"{self.graph_sha256[:16]}-{digest[:16]}.plan"


def build_plan(
    trt: ModuleType,
    onnx_bytes: bytes,
    input_name: str,
    image_shape: tuple[int, int, int],
    profile: tuple[int, int, int] = (1, CHUNK_SIZE, CHUNK_SIZE),
) -> bytes:
    """Builds a serialized plan from an ONNX graph. Precision comes from the graph's own types: TensorRT
    11 networks are always strongly typed, and the flag makes TensorRT 10 do the same; TF32 is turned
    off so an fp32 graph computes in fp32, like on every other engine."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineFailed(f"TensorRT cannot parse the graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    config.clear_flag(trt.BuilderFlag.TF32)
    optimisation = builder.create_optimization_profile()
    optimisation.set_shape(input_name, *[(batch, *image_shape) for batch in profile])
    config.add_optimization_profile(optimisation)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineFailed("TensorRT could not build a plan for the graph; see its log above")
    return bytes(plan)


def load_or_build_plan(trt: ModuleType, key: PlanKey, graph_path: Path, **build: Any) -> tuple[bytes, Path]:
    """The cached plan for `key`, built and written (atomically) on a miss."""
    path = key.path(engine_cache_dir())
    if path.is_file():
        return path.read_bytes(), path
    plan = build_plan(trt, graph_path.read_bytes(), profile=key.profile, **build)
    try:
        write_atomic(path, plan)
    except OSError as error:
        raise EngineFailed(
            f"cannot write the TensorRT plan to {path.parent} ({error.strerror}); "
            "set DISTILSHOT_CACHE to a writable folder"
        ) from None
    return plan, path


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class TensorRTEngine:
    """Runs one of the bundle's ONNX graphs as a TensorRT plan on CUDA device 0. `close` frees its device
    memory and stream (a failed open frees what it had allocated)."""

    name = "tensorrt"

    def __init__(self, bundle_dir: Path, manifest: Manifest, precision: str = "fp32") -> None:
        trt, cudart = import_tensorrt()
        self._trt, self._cudart = trt, cudart
        self._buffers: dict[str, tuple[int, int]] = {}  # tensor name -> (device pointer, bytes per image)
        self._stream: Any = None
        self._lock = threading.Lock()  # one execution context runs one batch at a time
        self.gpu = current_gpu(cudart)
        self.role = graph_role(manifest, precision)
        self._manifest = manifest
        self._graph = manifest.graphs[self.role]
        prep = manifest.preprocessing
        self._image = (prep.channels, prep.height, prep.width)
        key = PlanKey(
            self.gpu.name,
            self.gpu.compute_capability,
            trt.__version__,
            manifest.files[self._graph.file],
            (1, CHUNK_SIZE, CHUNK_SIZE),
        )
        plan, self.plan_path = load_or_build_plan(
            trt,
            key,
            Path(bundle_dir) / self._graph.file,
            input_name=self._graph.input,
            image_shape=self._image,
        )
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise EngineFailed(f"TensorRT cannot load the cached plan {self.plan_path}; delete it to rebuild")
        self._context = self._engine.create_execution_context()
        try:
            self._stream = cuda_check(cudart.cudaStreamCreate())
            self._allocate()
        except BaseException:
            self.close()
            raise

    def _allocate(self) -> None:
        """Device buffers for the largest batch, into self._buffers as they are made (so that close frees
        them if a later one fails)."""
        trt = self._trt
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        expected = {self._graph.input: self._image, **{o.name: (o.dim,) for o in self._graph.outputs}}
        if sorted(names) != sorted(expected):
            raise BundleError(f"the TensorRT plan has tensors {names}; the manifest says {sorted(expected)}")
        for name in names:
            if self._engine.get_tensor_dtype(name) != trt.DataType.FLOAT:
                raise BundleError(f"TensorRT tensor {name!r} is not float32; graphs take and give float32")
            per_image = 4 * int(np.prod(expected[name]))
            pointer = cuda_check(self._cudart.cudaMalloc(per_image * CHUNK_SIZE))
            self._buffers[name] = (pointer, per_image)
            self._context.set_tensor_address(name, pointer)

    @property
    def providers_in_use(self) -> list[str]:
        return [
            f"TensorRT {self._trt.__version__} on {self.gpu.name} (compute {self.gpu.compute_capability}), "
            f"{self._graph.precision} graph"
        ]

    def _run(self, chunk: np.ndarray) -> dict[str, np.ndarray]:
        cudart, kinds = self._cudart, self._cudart.cudaMemcpyKind
        chunk = np.ascontiguousarray(chunk)
        with self._lock:
            if self._stream is None:
                raise closed_error(self.name)
            if not self._context.set_input_shape(self._graph.input, chunk.shape):
                raise DistilshotError(
                    f"TensorRT refused input shape {list(chunk.shape)} for {self._graph.input!r}: the plan "
                    f"{self.plan_path} was not built for it (delete it to rebuild)"
                )
            pointer, _ = self._buffers[self._graph.input]
            cuda_check(
                cudart.cudaMemcpyAsync(
                    pointer, chunk.ctypes.data, chunk.nbytes, kinds.cudaMemcpyHostToDevice, self._stream
                )
            )
            if not self._context.execute_async_v3(self._stream):
                raise DistilshotError("TensorRT failed to run the batch")
            out = {}
            for output in self._graph.outputs:
                host = np.empty((len(chunk), output.dim), np.float32)
                cuda_check(
                    cudart.cudaMemcpyAsync(
                        host.ctypes.data,
                        self._buffers[output.name][0],
                        host.nbytes,
                        kinds.cudaMemcpyDeviceToHost,
                        self._stream,
                    )
                )
                out[output.name] = host
            cuda_check(cudart.cudaStreamSynchronize(self._stream))  # the host arrays are filled now
        return out

    def embed(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        check_batch(batch, self._manifest.preprocessing)
        return embed_in_chunks(self._run, batch, self._graph, CHUNK_SIZE)

    def close(self) -> None:
        """Waits for the stream's work, frees the device buffers and the stream; again: nothing to do."""
        with self._lock:
            cudart, stream, buffers = self._cudart, self._stream, self._buffers
            self._stream, self._buffers = None, {}
            if stream is not None:
                cudart.cudaStreamSynchronize(stream)  # a failed run may have left copies queued
            for pointer, _ in buffers.values():
                cudart.cudaFree(pointer)
            if stream is not None:
                cudart.cudaStreamDestroy(stream)

    def __del__(self) -> None:
        if hasattr(self, "_lock"):  # not when the packages failed to import
            self.close()


@backend("tensorrt")
def open_engine(
    bundle_dir: Path, manifest: Manifest, providers: Sequence[str] | None = None, precision: str = "fp32"
) -> TensorRTEngine:
    if providers:
        raise DistilshotError("the tensorrt backend takes no providers")
    return TensorRTEngine(bundle_dir, manifest, precision)
