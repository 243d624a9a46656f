"""Strict fakes of TensorRT, cuda.bindings.runtime and onnxruntime-gpu for tests/test_engines_gpu_offline.py,
each doing what the real one does where the engines could get it wrong:

- TensorRT: a plan carries its optimisation profile, `set_input_shape` returns False (and keeps the old
  shape) outside it, `execute_async_v3` only enqueues on the stream, the build, parse and deserialize
  steps can fail as TensorRT's do (None, False, None).
- CUDA: "device memory" is host memory of a given size (cudaMalloc fails past it), every copy and run is
  queued on its stream and happens at cudaStreamSynchronize, copies outside an allocation and frees of
  unknown pointers are errors, streams are objects (as cuda.bindings' cudaStream_t) not ints.
- ONNX Runtime: provider options are passed as strings and checked (unknown ones fail); the TensorRT
  provider creates only the last folder of its cache paths and, without a timing-cache path, uses the
  working directory; a provider whose CUDA libraries do not load is dropped without an error, and one
  that fails to start makes the session retry with CUDA (or the CPU) unless `enable_fallback=0`, as
  onnxruntime's InferenceSession does; `preload_dlls` makes NVIDIA's wheel libraries loadable.
"""

from __future__ import annotations

import ctypes
import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime

# -- TensorRT -------------------------------------------------------------------------------------


class FakeLogger:
    WARNING = "warning"

    def __init__(self, severity: str) -> None:
        self.severity = severity


class FakeTensorRT:
    """The slice of the tensorrt module the backend uses, recording what it is asked. Plans are
    b"PLAN" + a JSON line with the profile + the ONNX graph."""

    __version__ = "11.4.0.106"
    Logger = FakeLogger
    NetworkDefinitionCreationFlag = SimpleNamespace(STRONGLY_TYPED=5)
    MemoryPoolType = SimpleNamespace(WORKSPACE="workspace")
    BuilderFlag = SimpleNamespace(TF32="tf32")
    DataType = SimpleNamespace(FLOAT="float")

    def __init__(self, parse_ok: bool = True, build_ok: bool = True, deserialize_ok: bool = True) -> None:
        self.calls: list[tuple] = []
        self.parse_ok, self.build_ok, self.deserialize_ok = parse_ok, build_ok, deserialize_ok
        self.graph_bytes = b""
        self.cudart: FakeCudaRuntime | None = None  # the runtime whose streams execute_async_v3 uses
        fake = self

        class Builder:
            def __init__(self, logger):
                fake.calls.append(("Builder", logger.severity))

            def create_network(self, flags):
                fake.calls.append(("create_network", flags))
                return "network"

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                fake.calls.append(("build", network, config.flags_cleared, config.profiles))
                if not fake.build_ok:
                    return None
                name, low, _, high = config.profiles[0]
                return plan_bytes(name, low, high, fake.graph_bytes)

        class Config:
            def __init__(self):
                self.flags_cleared, self.profiles = [], []

            def set_memory_pool_limit(self, pool, size):
                fake.calls.append(("memory_pool", pool, size))

            def clear_flag(self, flag):
                self.flags_cleared.append(flag)

            def add_optimization_profile(self, profile):
                self.profiles.append(profile.shapes)

        class Profile:
            def set_shape(self, name, low, opt, high):
                self.shapes = (name, low, opt, high)

        class OnnxParser:
            def __init__(self, network, logger):
                self.num_errors = 0 if fake.parse_ok else 1

            def parse(self, data):
                fake.graph_bytes = data
                fake.calls.append(("parse", len(data)))
                return fake.parse_ok

            def get_error(self, i):
                return "In node 0: unsupported operator FancyOp"

        self.Builder, self.OnnxParser = Builder, OnnxParser
        self.Runtime = lambda logger: SimpleNamespace(deserialize_cuda_engine=fake.deserialize)

    def deserialize(self, plan: bytes):
        if not self.deserialize_ok or not plan.startswith(b"PLAN"):
            return None  # TensorRT logs the reason and returns None
        header, graph = plan[4:].split(b"\n", 1)
        return FakeEngine(self, json.loads(header), graph)


def plan_bytes(name: str, low: tuple[int, ...], high: tuple[int, ...], graph: bytes) -> bytes:
    profile = {"input": name, "min": list(low), "max": list(high)}
    return b"PLAN" + json.dumps(profile).encode() + b"\n" + graph


class FakeEngine:
    """A "plan" that runs its ONNX graph with ONNX Runtime, reading and writing device (host) memory."""

    def __init__(self, trt: FakeTensorRT, profile: dict, graph: bytes) -> None:
        self.trt, self.profile = trt, profile
        self.session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()] + [
            o.name for o in self.session.get_outputs()
        ]
        self.num_io_tensors = len(self.names)

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_dtype(self, name):
        return self.trt.DataType.FLOAT

    def create_execution_context(self):
        return FakeContext(self)


class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine, self.addresses, self.shape = engine, {}, None
        self.executions: list[tuple] = []

    def set_tensor_address(self, name, pointer):
        self.addresses[name] = pointer

    def set_input_shape(self, name, shape):
        """False, keeping the shape set before, unless `shape` lies within the plan's profile."""
        profile, shape = self.engine.profile, tuple(int(d) for d in shape)
        low, high = profile["min"], profile["max"]
        inside = len(shape) == len(low) and all(a <= d <= b for a, d, b in zip(low, shape, high, strict=True))
        if name != profile["input"] or not inside:
            return False
        self.shape = (name, shape)
        return True

    def execute_async_v3(self, stream_handle):
        if self.shape is None:
            return False
        name, shape = self.shape
        addresses = dict(self.addresses)

        def run() -> None:
            size = int(np.prod(shape))
            x = np.ctypeslib.as_array((ctypes.c_float * size).from_address(addresses[name]))
            outputs = self.engine.session.run(None, {name: x.reshape(shape).copy()})
            for meta, value in zip(self.engine.session.get_outputs(), outputs, strict=True):
                ctypes.memmove(addresses[meta.name], value.ctypes.data, value.nbytes)

        self.engine.trt.cudart.streams[int(stream_handle)].pending.append(run)
        self.executions.append((int(stream_handle), shape))
        return True


# -- CUDA -----------------------------------------------------------------------------------------


class FakeStream:
    """As cuda.bindings' cudaStream_t: an object whose int() is the handle."""

    def __init__(self, handle: int) -> None:
        self.handle, self.pending = handle, []

    def __int__(self) -> int:
        return self.handle


class FakeCudaRuntime:
    """cuda.bindings.runtime with `memory` bytes of host memory as "device" memory."""

    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)
    SUCCESS, INVALID_VALUE, MEMORY_ALLOCATION, NO_DEVICE = 0, 1, 2, 100  # cudaError_t values

    def __init__(self, devices: int = 1, memory: int = 1 << 30) -> None:
        self.devices, self.memory = devices, memory
        self.buffers: dict[int, ctypes.Array] = {}
        self.streams: dict[int, FakeStream] = {}

    def cudaGetDeviceCount(self):
        return (self.SUCCESS, self.devices) if self.devices else (self.NO_DEVICE, 0)

    def cudaGetDeviceProperties(self, device):
        return self.SUCCESS, SimpleNamespace(name=b"Fake GPU 80GB\x00", major=9, minor=0)

    def cudaMalloc(self, size):
        if sum(len(b) for b in self.buffers.values()) + size > self.memory:
            return self.MEMORY_ALLOCATION, 0
        buffer = (ctypes.c_char * size)()
        self.buffers[ctypes.addressof(buffer)] = buffer
        return self.SUCCESS, ctypes.addressof(buffer)

    def cudaFree(self, pointer):
        return (self.SUCCESS,) if self.buffers.pop(pointer, None) is not None else (self.INVALID_VALUE,)

    def cudaMemcpyAsync(self, dst, src, size, kind, stream):
        device = dst if kind == self.cudaMemcpyKind.cudaMemcpyHostToDevice else src
        if not self._allocated(device, size) or int(stream) not in self.streams:
            return (self.INVALID_VALUE,)
        self.streams[int(stream)].pending.append(lambda: ctypes.memmove(dst, src, size))
        return (self.SUCCESS,)

    def _allocated(self, pointer: int, size: int) -> bool:
        return any(base <= pointer and pointer + size <= base + len(b) for base, b in self.buffers.items())

    def cudaStreamCreate(self):
        stream = FakeStream(7 + len(self.streams))
        self.streams[stream.handle] = stream
        return self.SUCCESS, stream

    def cudaStreamSynchronize(self, stream):
        work = self.streams[int(stream)].pending
        while work:
            work.pop(0)()
        return (self.SUCCESS,)

    def cudaStreamDestroy(self, stream):
        return (self.SUCCESS,) if self.streams.pop(int(stream), None) else (self.INVALID_VALUE,)


# -- ONNX Runtime ---------------------------------------------------------------------------------

TENSORRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
GPU = [TENSORRT, CUDA, CPU]
# the TensorRT provider options the engines may set, by kind (ORT refuses unknown ones)
TENSORRT_OPTIONS = {
    "trt_engine_cache_enable": "bool",
    "trt_engine_cache_path": "path",
    "trt_timing_cache_enable": "bool",
    "trt_timing_cache_path": "path",
    "trt_profile_min_shapes": "str",
    "trt_profile_opt_shapes": "str",
    "trt_profile_max_shapes": "str",
}
BOOLS = {"0": False, "False": False, "false": False, "1": True, "True": True, "true": True}


class FakeOrt:
    """onnxruntime as onnxruntime-gpu on a machine whose GPU providers may or may not really start.

    `available`: what get_available_providers lists (the package's build); `starts`: the providers that
    start when asked (others are dropped, as when their libraries are missing); `cuda_libraries`:
    "system" (on the library path), "wheels" (NVIDIA's pip wheels: loadable after preload_dlls) or None;
    `fails`: providers whose start raises (an EP error)."""

    SessionOptions = onnxruntime.SessionOptions
    __spec__ = onnxruntime.__spec__  # importlib.util.find_spec looks at it

    def __init__(
        self,
        available: list[str],
        starts: set[str] | None = None,
        cuda_libraries: str | None = "system",
        fails: set[str] = frozenset(),
    ) -> None:
        self.available, self.starts = available, set(available if starts is None else starts)
        self.cuda_libraries, self.fails, self.preloaded = cuda_libraries, fails, False
        self.requested: list | None = None
        self.caches: dict[str, Path] = {}  # TensorRT's engine and timing cache folders, as it used them

    def get_available_providers(self):
        return self.available

    def preload_dlls(self, cuda=True, cudnn=True, msvc=True, directory=None):
        if self.cuda_libraries == "wheels":
            self.preloaded = True
        elif self.cuda_libraries is None:
            print("Failed to load libcudnn.so.9: cannot open shared object file: No such file or directory")

    def InferenceSession(self, path, sess_options=None, providers=None, enable_fallback=1):
        self.requested = providers
        try:
            in_use = self._start(providers)
        except RuntimeError:
            if int(enable_fallback) != 1:
                raise
            names = [name for name, _ in providers]
            fallback = [CUDA, CPU] if TENSORRT in names else [CPU]
            in_use = self._start([(name, {}) for name in fallback])
        session = onnxruntime.InferenceSession(path, sess_options, providers=[CPU])
        return SimpleNamespace(
            get_inputs=session.get_inputs,
            get_outputs=session.get_outputs,
            run=session.run,
            get_providers=lambda: in_use,
        )

    def _start(self, providers: list[tuple[str, dict]]) -> list[str]:
        in_use = []
        for name, options in providers:
            options = {str(k): str(v) for k, v in options.items()}  # ORT's Python API passes strings
            if name in self.fails:
                raise RuntimeError(f"{name}: CUDA failure 100: no CUDA-capable device is detected")
            if name == TENSORRT:
                self._start_tensorrt(options)
            gpu_libraries = self.cuda_libraries == "system" or self.preloaded
            if name in self.starts and (name == CPU or gpu_libraries):
                in_use.append(name)
        return in_use if CPU in in_use else [*in_use, CPU]

    def _start_tensorrt(self, options: dict[str, str]) -> None:
        unknown = sorted(set(options) - set(TENSORRT_OPTIONS))
        if unknown:
            raise RuntimeError(f"[TensorRT EP] Unknown provider option: {unknown}")
        for key, kind in TENSORRT_OPTIONS.items():
            if kind == "bool" and key in options and options[key] not in BOOLS:
                raise RuntimeError(f"[TensorRT EP] Failed to parse value: {options[key]!r} of {key}")
        for cache in ("engine", "timing"):
            if BOOLS.get(options.get(f"trt_{cache}_cache_enable", "0")):
                folder = Path(options.get(f"trt_{cache}_cache_path") or os.getcwd())
                self.caches[cache] = folder
                if not folder.is_dir():
                    try:
                        os.mkdir(folder)  # one level, as the provider's create_directory
                    except OSError:
                        raise RuntimeError(f"[TensorRT EP] Failed to create directory {folder}") from None
