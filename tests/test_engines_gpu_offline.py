"""The GPU engines on a machine without a GPU: what can be checked here is checked, against the strict
fakes of tests/gpu_fakes.py.

- TensorRT: the build is recorded (strongly typed network, optimisation profile, TF32 off); the runtime
  runs the graph with ONNX Runtime in host memory posing as device memory, so the named-tensor plumbing
  (addresses, input shape within the profile, execute_async_v3 and copies queued on a stream, chunks) is
  exercised for real; plans are cached by GPU, TensorRT version and graph; a failed allocation and
  `close` free the device memory; missing packages, a TensorRT that cannot load or a missing GPU give a
  message naming them.
- ONNX Runtime GPU providers: what is requested (TensorRT's cache, timing cache and profile options, the
  cache folder created), that every provider asked for really runs (no silent fall-back to CUDA or the
  CPU), and that CUDA's libraries are preloaded from NVIDIA's wheels.
- `auto` takes the first backend that really runs, and moves on, with a warning, past one that fails.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from gpu_fakes import CPU, CUDA, GPU, TENSORRT, FakeCudaRuntime, FakeOrt, FakeTensorRT, plan_bytes
from serve_fixtures import SIZE, make_bundle

from distilshot.core.manifest import load_manifest
from distilshot.errors import BundleError, DistilshotError
from distilshot.serve.classifier import FewShotClassifier
from distilshot.serve.engines import cuda_engine, open_engine
from distilshot.serve.engines import tensorrt_engine as trt_engine
from distilshot.serve.engines.base import EngineFailed, EngineUnavailable


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("two"), "two")


@pytest.fixture(autouse=True)
def engine_cache(tmp_path, monkeypatch):
    """A fresh machine's cache: DISTILSHOT_CACHE names a folder that does not exist yet."""
    monkeypatch.setenv("DISTILSHOT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "engines"


def batch(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3, SIZE, SIZE)).astype(np.float32)


def use_gpu(monkeypatch, trt: FakeTensorRT, cudart: FakeCudaRuntime) -> tuple[FakeTensorRT, FakeCudaRuntime]:
    trt.cudart = cudart
    monkeypatch.setattr(trt_engine, "import_tensorrt", lambda: (trt, cudart))
    monkeypatch.setattr(trt_engine, "is_available", lambda: True)
    return trt, cudart


@pytest.fixture
def fake_gpu(monkeypatch):
    return use_gpu(monkeypatch, FakeTensorRT(), FakeCudaRuntime())


# -- TensorRT ----------------------------------------------------------------------------------------


def test_build_plan_uses_a_strongly_typed_network_and_a_batch_profile(bundle):
    trt = FakeTensorRT()
    graph = (bundle / "embedder.onnx").read_bytes()
    plan = trt_engine.build_plan(trt, graph, "image", (3, SIZE, SIZE), profile=(1, 32, 64))
    assert plan == plan_bytes("image", (1, 3, SIZE, SIZE), (64, 3, SIZE, SIZE), graph)
    calls = dict((c[0], c[1:]) for c in trt.calls)
    assert calls["create_network"] == (1 << 5,)  # 1 << STRONGLY_TYPED: precision from the graph's types
    assert calls["parse"] == (len(graph),)
    assert calls["memory_pool"] == ("workspace", trt_engine.WORKSPACE_BYTES)
    network, cleared, profiles = calls["build"]
    assert network == "network" and cleared == ["tf32"]
    assert profiles == [("image", (1, 3, SIZE, SIZE), (32, 3, SIZE, SIZE), (64, 3, SIZE, SIZE))]


def test_a_graph_tensorrt_cannot_parse_is_refused_with_its_errors(bundle):
    with pytest.raises(
        EngineFailed, match="TensorRT cannot parse the graph: In node 0: unsupported operator"
    ):
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


def test_a_batch_outside_the_plans_profile_is_refused_not_run_on_the_old_shape(bundle, fake_gpu):
    manifest = load_manifest(bundle)
    plan_path = open_engine(bundle, manifest, "tensorrt").plan_path
    # a cached plan whose profile stops at 32 images (built elsewhere, or by another distilshot)
    graph = plan_path.read_bytes().split(b"\n", 1)[1]
    plan_path.write_bytes(plan_bytes("image", (1, 3, SIZE, SIZE), (32, 3, SIZE, SIZE), graph))
    engine = open_engine(bundle, manifest, "tensorrt")
    assert engine.embed(batch(3))["global"].shape == (3, 4)
    with pytest.raises(DistilshotError, match=r"TensorRT refused input shape \[40, 3, 16, 16\].*delete it"):
        engine.embed(batch(40))  # TensorRT would keep the 3-image shape: 37 rows of stale memory


def test_a_failed_allocation_frees_the_device_memory_already_allocated(bundle, monkeypatch):
    input_bytes = 4 * 3 * SIZE * SIZE * trt_engine.CHUNK_SIZE
    _, cudart = use_gpu(monkeypatch, FakeTensorRT(), FakeCudaRuntime(memory=input_bytes + 100))
    with pytest.raises(EngineFailed, match="CUDA call failed: 2"):  # cudaErrorMemoryAllocation
        open_engine(bundle, load_manifest(bundle), "tensorrt")
    assert cudart.buffers == {} and cudart.streams == {}


def test_close_frees_the_device_memory_at_once_and_embed_refuses_after(bundle, fake_gpu):
    _, cudart = fake_gpu
    engine = open_engine(bundle, load_manifest(bundle), "tensorrt")
    assert len(cudart.buffers) == 3 and len(cudart.streams) == 1
    engine.embed(batch(2))
    engine.close()
    assert cudart.buffers == {} and cudart.streams == {}
    engine.close()  # again: nothing left to free
    with pytest.raises(DistilshotError, match="the tensorrt engine is closed"):
        engine.embed(batch(2))
    cpu = open_engine(bundle, load_manifest(bundle), "onnxruntime")
    cpu.close()
    with pytest.raises(DistilshotError, match="the onnxruntime engine is closed"):
        cpu.embed(batch(2))


def test_tensorrt_without_its_packages_or_a_gpu_says_what_is_missing(bundle, monkeypatch):
    manifest = load_manifest(bundle)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(EngineUnavailable, match=r"needs tensorrt.*pip install distilshot\[gpu\]"):
        open_engine(bundle, manifest, "tensorrt")
    monkeypatch.setattr(trt_engine, "import_tensorrt", lambda: (FakeTensorRT(), FakeCudaRuntime(devices=0)))
    with pytest.raises(EngineUnavailable, match="needs a CUDA GPU, and none is visible"):
        open_engine(bundle, manifest, "tensorrt")


# -- ONNX Runtime GPU providers ----------------------------------------------------------------------


def test_gpu_providers_are_requested_with_options_and_reported_in_use(bundle, monkeypatch, engine_cache):
    fake = FakeOrt(GPU)
    monkeypatch.setitem(sys.modules, "onnxruntime", fake)
    engine = open_engine(bundle, load_manifest(bundle), "onnxruntime", providers=GPU)
    names = [name for name, _ in fake.requested]
    assert names == GPU and engine.providers_in_use == GPU  # TensorRT started on a fresh machine
    options = dict(fake.requested)
    assert options[CUDA] == {} and options[CPU] == {}
    cache = engine_cache / "onnxruntime-tensorrt"
    assert options[TENSORRT] == {
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache),
        "trt_profile_min_shapes": f"image:1x3x{SIZE}x{SIZE}",
        "trt_profile_opt_shapes": f"image:64x3x{SIZE}x{SIZE}",
        "trt_profile_max_shapes": f"image:64x3x{SIZE}x{SIZE}",
    }
    assert fake.caches == {"engine": cache, "timing": cache} and cache.is_dir()  # not the working dir
    assert engine.embed(batch(3))["global"].shape == (3, 4)


def test_a_tensorrt_provider_that_does_not_start_is_refused_not_replaced_by_cuda(
    bundle, monkeypatch, tmp_path
):
    manifest = load_manifest(bundle)
    monkeypatch.setitem(sys.modules, "onnxruntime", FakeOrt(GPU, starts={CUDA, CPU}))  # no libnvinfer
    with pytest.raises(EngineUnavailable, match=r"fell back to \['CUDAExecutionProvider', 'CPUEx.*"
                       r"\['TensorrtExecutionProvider'\] did not load"):  # fmt: skip
        open_engine(bundle, manifest, "onnxruntime", providers=GPU)
    # a cache the provider cannot create: ONNX Runtime's own fall-back would retry with CUDA
    monkeypatch.setitem(sys.modules, "onnxruntime", FakeOrt(GPU))
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("DISTILSHOT_CACHE", str(tmp_path / "a-file"))
    with pytest.raises(EngineFailed, match=r"cannot create the TensorRT engine cache .*a-file/engines"):
        open_engine(bundle, manifest, "onnxruntime", providers=GPU)


def test_cuda_libraries_from_nvidia_wheels_are_preloaded_and_their_absence_explained(bundle, monkeypatch):
    """Serving runs without torch, which would load CUDA and cuDNN: on a host with only the driver and
    onnxruntime-gpu[cuda,cudnn], ONNX Runtime finds them only when preloaded."""
    manifest = load_manifest(bundle)
    monkeypatch.setattr(trt_engine, "is_available", lambda: False)
    wheels = FakeOrt([CUDA, CPU], cuda_libraries="wheels")
    monkeypatch.setitem(sys.modules, "onnxruntime", wheels)
    engine = open_engine(bundle, manifest, "cuda")
    assert wheels.preloaded and engine.providers_in_use == [CUDA, CPU]
    monkeypatch.setitem(sys.modules, "onnxruntime", FakeOrt([CUDA, CPU], cuda_libraries=None))
    with pytest.raises(
        EngineUnavailable, match=r"onnxruntime-gpu\[cuda,cudnn\].*preloading reported: Failed"
    ):
        open_engine(bundle, manifest, "cuda")


def test_a_silent_fall_back_to_the_cpu_is_caught(bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", FakeOrt(GPU, starts={CPU}))
    monkeypatch.setattr(trt_engine, "is_available", lambda: False)  # the tensorrt backend: not installed
    manifest = load_manifest(bundle)
    with pytest.raises(EngineUnavailable, match=r"asked for \['TensorrtExecutionProvider', 'CUDAExecution"):
        open_engine(bundle, manifest, "onnxruntime", providers=GPU)
    with pytest.raises(EngineUnavailable, match="fell back to \\['CPUExecutionProvider'\\]"):
        open_engine(bundle, manifest, "cuda")
    # auto skips the GPU backends that do not really run, warns, and says what it runs instead
    with pytest.warns(RuntimeWarning, match="backend cuda cannot run"):
        engine = open_engine(bundle, manifest)
    assert engine.name == "onnxruntime" and engine.providers_in_use == [CPU]


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


UNLOADABLE_TENSORRT = "raise ImportError('libnvinfer.so.11: cannot open shared object file')\n"
GPU_FAILURES = {  # how a GPU backend fails on real hardware -> what its error says
    "parse": ("tensorrt", "TensorRT cannot parse the graph: In node 0"),
    "build": ("tensorrt", "TensorRT could not build a plan"),
    "deserialize": ("tensorrt", "TensorRT cannot load the cached plan"),
    "unwritable cache": ("tensorrt", "cannot write the TensorRT plan to .*set DISTILSHOT_CACHE"),
    "device memory": ("tensorrt", "CUDA call failed: 2"),
    "tensorrt cannot load": ("tensorrt", "tensorrt is installed but cannot load: libnvinfer.so.11"),
    "onnxruntime session": ("cuda", r"could not start \['CUDAExecutionProvider'\].*CUDA failure 100"),
}


def fail_like(failure: str, monkeypatch, tmp_path) -> None:
    """Makes the GPU backend of GPU_FAILURES[failure] fail that way; the other GPU backend is absent."""
    if failure == "onnxruntime session":
        monkeypatch.setattr(trt_engine, "is_available", lambda: False)
        monkeypatch.setitem(sys.modules, "onnxruntime", FakeOrt([CUDA, CPU], fails={CUDA}))
        return
    monkeypatch.setattr(cuda_engine, "is_available", lambda: False)
    if failure == "tensorrt cannot load":  # the packages are there; importing tensorrt fails
        for package, text in (("tensorrt", UNLOADABLE_TENSORRT), ("cuda/bindings", ""), ("cuda", "")):
            (tmp_path / "site" / package).mkdir(parents=True, exist_ok=True)
            (tmp_path / "site" / package / "__init__.py").write_text(text)
        (tmp_path / "site" / "cuda" / "bindings" / "runtime.py").write_text("")
        monkeypatch.syspath_prepend(tmp_path / "site")
        for module in ("tensorrt", "cuda", "cuda.bindings", "cuda.bindings.runtime"):
            monkeypatch.delitem(sys.modules, module, raising=False)
        return
    flags = {"parse": {"parse_ok": False}, "build": {"build_ok": False}}
    flags["deserialize"] = {"deserialize_ok": False}
    memory = 100 if failure == "device memory" else 1 << 30
    use_gpu(monkeypatch, FakeTensorRT(**flags.get(failure, {})), FakeCudaRuntime(memory=memory))
    if failure == "unwritable cache":
        (tmp_path / "a-file").write_text("")
        monkeypatch.setenv("DISTILSHOT_CACHE", str(tmp_path / "a-file"))


@pytest.mark.parametrize("failure", list(GPU_FAILURES))
def test_auto_warns_and_moves_on_past_a_gpu_backend_that_fails(bundle, failure, monkeypatch, tmp_path):
    backend, message = GPU_FAILURES[failure]
    fail_like(failure, monkeypatch, tmp_path)
    manifest = load_manifest(bundle)
    with pytest.warns(RuntimeWarning, match=f"backend {backend} cannot run .*{message}"):
        engine = open_engine(bundle, manifest)
    assert engine.name == "onnxruntime" and engine.providers_in_use == [CPU]
    expected = EngineUnavailable if failure == "tensorrt cannot load" else EngineFailed
    with pytest.raises(expected, match=message):  # asked for by name: the error itself
        open_engine(bundle, manifest, backend)


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
