"""The GPU engines on a machine without a GPU: what can be checked here is checked.

- TensorRT: the build runs against a fake `tensorrt` module that records every call (strongly typed
  network, optimisation profile, TF32 off); the runtime runs against fakes of `tensorrt` and
  `cuda.bindings.runtime` whose "device memory" is host memory and whose execution context runs the graph
  with ONNX Runtime, so the named-tensor plumbing (addresses, input shape, execute_async_v3, copies in
  chunks) is exercised for real; plans are cached by GPU, TensorRT version and graph; missing packages or
  a missing GPU give a message naming them.
- ONNX Runtime GPU providers: a fake onnxruntime that lists them shows what is requested (with TensorRT's
  cache and profile options) and that a silent fall-back to the CPU is caught.
- `auto` takes the first backend that really runs.
"""

from __future__ import annotations

import ctypes
import sys
from types import SimpleNamespace

import numpy as np
import onnxruntime
import pytest
from serve_fixtures import SIZE, make_bundle

from distilshot.core.manifest import load_manifest
from distilshot.errors import BundleError, DistilshotError
from distilshot.serve.classifier import FewShotClassifier
from distilshot.serve.engines import cuda_engine, open_engine
from distilshot.serve.engines import tensorrt_engine as trt_engine
from distilshot.serve.engines.base import EngineUnavailable


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("two"), "two")


@pytest.fixture(autouse=True)
def engine_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILSHOT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "engines"


def batch(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3, SIZE, SIZE)).astype(np.float32)


# -- a fake TensorRT + CUDA ------------------------------------------------------------------------


class FakeLogger:
    WARNING = "warning"

    def __init__(self, severity: str) -> None:
        self.severity = severity


class FakeTensorRT:
    """The slice of the tensorrt module the backend uses, recording what it is asked."""

    __version__ = "11.4.0.106"
    Logger = FakeLogger
    NetworkDefinitionCreationFlag = SimpleNamespace(STRONGLY_TYPED=5)
    MemoryPoolType = SimpleNamespace(WORKSPACE="workspace")
    BuilderFlag = SimpleNamespace(TF32="tf32")
    DataType = SimpleNamespace(FLOAT="float")

    def __init__(self, parse_ok: bool = True) -> None:
        self.calls: list[tuple] = []
        self.parse_ok = parse_ok
        self.graph_bytes = b""
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
                return b"PLAN" + fake.graph_bytes

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
        assert plan.startswith(b"PLAN")
        return FakeEngine(self, plan[4:])


class FakeEngine:
    """A "plan" that runs its ONNX graph with ONNX Runtime, reading and writing device (host) memory."""

    def __init__(self, trt: FakeTensorRT, graph: bytes) -> None:
        self.trt = trt
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
        self.shape = (name, tuple(shape))

    def execute_async_v3(self, stream):
        name, shape = self.shape
        x = np.ctypeslib.as_array((ctypes.c_float * int(np.prod(shape))).from_address(self.addresses[name]))
        outputs = self.engine.session.run(None, {name: x.reshape(shape).copy()})
        for meta, value in zip(self.engine.session.get_outputs(), outputs, strict=True):
            ctypes.memmove(self.addresses[meta.name], value.ctypes.data, value.nbytes)
        self.executions.append((stream, shape))
        return True


class FakeCudaRuntime:
    """cuda.bindings.runtime with host memory as "device" memory."""

    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)

    def __init__(self, devices: int = 1) -> None:
        self.devices, self.buffers = devices, {}

    def cudaGetDeviceCount(self):
        return (0, self.devices) if self.devices else (100, 0)  # 100: cudaErrorNoDevice

    def cudaGetDeviceProperties(self, device):
        return 0, SimpleNamespace(name=b"Fake GPU 80GB\x00", major=9, minor=0)

    def cudaMalloc(self, size):
        buffer = (ctypes.c_char * size)()
        self.buffers[ctypes.addressof(buffer)] = buffer
        return 0, ctypes.addressof(buffer)

    def cudaFree(self, pointer):
        self.buffers.pop(pointer, None)
        return (0,)

    def cudaMemcpyAsync(self, dst, src, size, kind, stream):
        ctypes.memmove(dst, src, size)
        return (0,)

    def cudaStreamCreate(self):
        return 0, 7

    def cudaStreamSynchronize(self, stream):
        return (0,)

    def cudaStreamDestroy(self, stream):
        return (0,)


@pytest.fixture
def fake_gpu(monkeypatch):
    trt, cudart = FakeTensorRT(), FakeCudaRuntime()
    monkeypatch.setattr(trt_engine, "import_tensorrt", lambda: (trt, cudart))
    monkeypatch.setattr(trt_engine, "is_available", lambda: True)
    return trt, cudart


# -- TensorRT ----------------------------------------------------------------------------------------


def test_build_plan_uses_a_strongly_typed_network_and_a_batch_profile(bundle):
    trt = FakeTensorRT()
    graph = (bundle / "embedder.onnx").read_bytes()
    plan = trt_engine.build_plan(trt, graph, "image", (3, SIZE, SIZE), profile=(1, 32, 64))
    assert plan == b"PLAN" + graph
    calls = dict((c[0], c[1:]) for c in trt.calls)
    assert calls["create_network"] == (1 << 5,)  # 1 << STRONGLY_TYPED: precision from the graph's types
    assert calls["parse"] == (len(graph),)
    assert calls["memory_pool"] == ("workspace", trt_engine.WORKSPACE_BYTES)
    network, cleared, profiles = calls["build"]
    assert network == "network" and cleared == ["tf32"]
    assert profiles == [("image", (1, 3, SIZE, SIZE), (32, 3, SIZE, SIZE), (64, 3, SIZE, SIZE))]


def test_a_graph_tensorrt_cannot_parse_is_refused_with_its_errors(bundle):
    with pytest.raises(BundleError, match="TensorRT cannot parse the graph: In node 0: unsupported operator"):
        trt_engine.build_plan(FakeTensorRT(parse_ok=False), b"graph", "image", (3, SIZE, SIZE))


def test_tensorrt_engine_runs_named_tensors_in_chunks_and_matches_onnxruntime(bundle, fake_gpu):
    manifest = load_manifest(bundle)
    engine = open_engine(bundle, manifest, "tensorrt")
    x = batch(100)  # two chunks: 64 + 36
    ours = engine.embed(x)
    reference = open_engine(bundle, manifest, "onnxruntime").embed(x)
    for name in ("global", "local"):
        assert ours[name].shape == reference[name].shape
        assert np.allclose(ours[name], reference[name], atol=1e-6)
    assert [shape for _, shape in engine._context.executions] == [(64, 3, SIZE, SIZE), (36, 3, SIZE, SIZE)]
    assert engine.role == "embedder" and engine.name == "tensorrt"
    assert engine.providers_in_use == ["TensorRT 11.4.0.106 on Fake GPU 80GB (compute 9.0), fp32 graph"]


def test_plans_are_cached_by_gpu_tensorrt_and_graph(bundle, fake_gpu, engine_cache):
    trt, _ = fake_gpu
    manifest = load_manifest(bundle)
    first = open_engine(bundle, manifest, "tensorrt")
    assert first.plan_path.parent == engine_cache / "tensorrt" and first.plan_path.is_file()
    builds = sum(c[0] == "build" for c in trt.calls)
    second = open_engine(bundle, manifest, "tensorrt")
    assert second.plan_path == first.plan_path and sum(c[0] == "build" for c in trt.calls) == builds
    key = trt_engine.PlanKey(
        "Fake GPU 80GB", "9.0", "11.4.0.106", manifest.files["embedder.onnx"], (1, 64, 64)
    )
    assert key.path(engine_cache.parent / "engines") == first.plan_path
    for other in (
        key.__class__("Other GPU", "9.0", "11.4.0.106", key.graph_sha256, key.profile),
        key.__class__(key.gpu, "8.6", key.tensorrt, key.graph_sha256, key.profile),
        key.__class__(key.gpu, key.compute_capability, "10.15.0", key.graph_sha256, key.profile),
        key.__class__(key.gpu, key.compute_capability, key.tensorrt, "0" * 64, key.profile),
    ):
        assert other.path(engine_cache) != key.path(engine_cache)


def test_tensorrt_without_its_packages_or_a_gpu_says_what_is_missing(bundle, monkeypatch):
    manifest = load_manifest(bundle)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(EngineUnavailable, match=r"needs tensorrt.*pip install distilshot\[gpu\]"):
        open_engine(bundle, manifest, "tensorrt")
    monkeypatch.setattr(trt_engine, "import_tensorrt", lambda: (FakeTensorRT(), FakeCudaRuntime(devices=0)))
    with pytest.raises(EngineUnavailable, match="needs a CUDA GPU, and none is visible"):
        open_engine(bundle, manifest, "tensorrt")


# -- ONNX Runtime GPU providers ----------------------------------------------------------------------


class FakeOrt:
    """onnxruntime as onnxruntime-gpu on a machine whose GPU providers may or may not really load."""

    SessionOptions = onnxruntime.SessionOptions
    __spec__ = onnxruntime.__spec__  # importlib.util.find_spec looks at it

    def __init__(self, available: list[str], in_use: list[str] | None = None) -> None:
        self.available, self.in_use, self.requested = available, in_use, None

    def get_available_providers(self):
        return self.available

    def InferenceSession(self, path, sess_options, providers):
        self.requested = providers
        session = onnxruntime.InferenceSession(path, sess_options, providers=["CPUExecutionProvider"])
        in_use = self.in_use if self.in_use is not None else [name for name, _ in providers]
        return SimpleNamespace(
            get_inputs=session.get_inputs,
            get_outputs=session.get_outputs,
            run=session.run,
            get_providers=lambda: in_use,
        )


GPU = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_gpu_providers_are_requested_with_options_and_reported_in_use(bundle, monkeypatch, engine_cache):
    fake = FakeOrt(GPU)
    monkeypatch.setitem(sys.modules, "onnxruntime", fake)
    engine = open_engine(bundle, load_manifest(bundle), "onnxruntime", providers=GPU)
    names = [name for name, _ in fake.requested]
    assert names == GPU and engine.providers_in_use == GPU
    options = dict(fake.requested)
    assert options["CUDAExecutionProvider"] == {} and options["CPUExecutionProvider"] == {}
    assert options["TensorrtExecutionProvider"] == {
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(engine_cache / "onnxruntime-tensorrt"),
        "trt_timing_cache_enable": True,
        "trt_profile_min_shapes": f"image:1x3x{SIZE}x{SIZE}",
        "trt_profile_opt_shapes": f"image:64x3x{SIZE}x{SIZE}",
        "trt_profile_max_shapes": f"image:64x3x{SIZE}x{SIZE}",
    }
    assert engine.embed(batch(3))["global"].shape == (3, 4)


def test_a_silent_fall_back_to_the_cpu_is_caught(bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", FakeOrt(GPU, in_use=["CPUExecutionProvider"]))
    monkeypatch.setattr(trt_engine, "is_available", lambda: False)  # the tensorrt backend: not installed
    manifest = load_manifest(bundle)
    with pytest.raises(EngineUnavailable, match=r"asked for \['TensorrtExecutionProvider', 'CUDAExecution"):
        open_engine(bundle, manifest, "onnxruntime", providers=GPU)
    with pytest.raises(EngineUnavailable, match="fell back to \\['CPUExecutionProvider'\\]"):
        open_engine(bundle, manifest, "cuda")
    # auto skips the GPU backends that do not really run and says what it runs instead
    engine = open_engine(bundle, manifest)
    assert engine.name == "onnxruntime" and engine.providers_in_use == ["CPUExecutionProvider"]


def test_cuda_backend_when_cuda_really_runs(bundle, monkeypatch):
    fake = FakeOrt(["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setitem(sys.modules, "onnxruntime", fake)
    monkeypatch.setattr(trt_engine, "is_available", lambda: False)
    engine = open_engine(bundle, load_manifest(bundle))  # auto: no tensorrt package, so cuda
    assert engine.name == "cuda" and [n for n, _ in fake.requested] == [
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert engine.providers_in_use == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(DistilshotError, match="picks its own providers"):
        open_engine(bundle, load_manifest(bundle), "cuda", providers=["CPUExecutionProvider"])


def test_cuda_backend_without_onnxruntime_gpu(bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", FakeOrt(["CPUExecutionProvider"]))  # the CPU build
    with pytest.raises(EngineUnavailable, match=r"no CUDAExecutionProvider.*distilshot\[gpu\]"):
        open_engine(bundle, load_manifest(bundle), "cuda")


# -- auto -------------------------------------------------------------------------------------------


def test_auto_prefers_tensorrt_when_a_gpu_runs_it_and_info_reports_it(bundle, fake_gpu):
    with FewShotClassifier(bundle) as classifier:
        info = classifier.info()
    assert info["engine"] == "tensorrt" and info["graph"] == "embedder" and info["precision"] == "fp32"
    assert info["providers"] == ["TensorRT 11.4.0.106 on Fake GPU 80GB (compute 9.0), fp32 graph"]


def test_auto_on_a_cpu_only_machine(bundle, cpu_only):
    engine = open_engine(bundle, load_manifest(bundle))
    assert engine.name == "onnxruntime" and engine.providers_in_use == ["CPUExecutionProvider"]


def test_the_cuda_backend_runs_the_graph_on_a_real_gpu(bundle):
    """Marked `gpu` in conftest.py: runs only where a CUDA device is visible."""
    if not cuda_engine.is_available():
        pytest.skip("onnxruntime has no CUDAExecutionProvider: install distilshot[gpu] for this check")
    manifest = load_manifest(bundle)
    engine = open_engine(bundle, manifest, "cuda")
    assert engine.providers_in_use[0] == "CUDAExecutionProvider"
    x = batch(100)
    ours, reference = engine.embed(x), open_engine(bundle, manifest, "onnxruntime").embed(x)
    for name in ("global", "local"):  # float32 means and maxima of O(1) values: a few ulps apart
        np.testing.assert_allclose(ours[name], reference[name], rtol=1e-5, atol=1e-5)


def test_a_precision_the_bundle_lacks_names_the_export_that_adds_it(bundle):
    with pytest.raises(BundleError, match=r"no int8 graph.*distilshot export --bundle BUNDLE --to int8"):
        open_engine(bundle, load_manifest(bundle), precision="int8")
    with pytest.raises(BundleError, match=r"no fp16 graph.*--to tensorrt"):
        open_engine(bundle, load_manifest(bundle), "openvino", precision="fp16")
    with pytest.raises(DistilshotError, match="precision must be one of fp32, fp16, int8, not 'bf16'"):
        open_engine(bundle, load_manifest(bundle), precision="bf16")
