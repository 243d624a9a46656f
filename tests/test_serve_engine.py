"""Opening bundles with an inference engine: selection, signature checks, chunking, input checks."""

from __future__ import annotations

import importlib
import json
import sys

import numpy as np
import pytest
from device_fixtures import GPU_BACKENDS, cuda_devices
from serve_fixtures import SIZE, expected_embedding, make_bundle

from distilshot.core.files import sha256_file
from distilshot.core.manifest import load_manifest
from distilshot.errors import BundleError, DistilshotError
from distilshot.serve.engines import BACKENDS, open_engine
from distilshot.serve.engines.onnxruntime_engine import OnnxRuntimeEngine


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("single"))


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("two"), "two")


def solid_batch(*colours: tuple[int, int, int]) -> np.ndarray:
    pixels = np.array(colours, dtype=np.float32)[:, :, None, None] / 255
    return np.ascontiguousarray(np.broadcast_to((pixels - 0.5) / 0.25, (len(colours), 3, SIZE, SIZE)))


def test_auto_picks_onnxruntime_on_a_cpu_only_install(bundle, cpu_only):
    engine = open_engine(bundle, load_manifest(bundle))
    assert engine.name == "onnxruntime" and "onnxruntime" in BACKENDS
    assert engine.providers_in_use == ["CPUExecutionProvider"]
    out = engine.embed(solid_batch((255, 0, 0), (51, 102, 204)))
    assert set(out) == {"embedding"} and out["embedding"].dtype == np.float32
    assert np.allclose(
        out["embedding"], [expected_embedding((255, 0, 0)), expected_embedding((51, 102, 204))]
    )


def test_auto_opens_what_this_machine_really_runs(bundle):
    """Unpinned: a GPU backend where its packages are installed and a CUDA device is visible, else ONNX
    Runtime on the CPU (auto skips GPU backends that do not really run)."""
    installed = [name for name in GPU_BACKENDS if importlib.import_module(BACKENDS[name]).is_available()]
    engine = open_engine(bundle, load_manifest(bundle))
    if installed and cuda_devices():
        assert engine.name in installed and engine.providers_in_use != ["CPUExecutionProvider"]
    else:
        assert engine.name == "onnxruntime" and engine.providers_in_use == ["CPUExecutionProvider"]


def test_two_outputs(two):
    out = open_engine(two, load_manifest(two), "onnxruntime").embed(solid_batch((255, 0, 51)))
    assert out["global"].shape == (1, 4) and out["local"].shape == (1, 3)
    assert np.allclose(out["local"], [[2.0, -2.0, -1.2]], atol=1e-6)
    assert np.allclose(out["global"], [[2.0, -2.0, -1.2, -0.6]], atol=1e-6)


def test_chunks_give_the_same_result(bundle):
    engine = OnnxRuntimeEngine(bundle, load_manifest(bundle), chunk_size=4)
    batch = np.random.default_rng(0).normal(size=(10, 3, SIZE, SIZE)).astype(np.float32)
    whole = engine.embed(batch)["embedding"]
    assert whole.shape == (10, 4)
    singles = np.concatenate([engine.embed(batch[i : i + 1])["embedding"] for i in range(10)])
    assert np.allclose(whole, singles, atol=1e-6)
    assert engine.embed(batch[:0])["embedding"].shape == (0, 4)


@pytest.mark.parametrize(
    ("batch", "match"),
    [
        (np.zeros((1, 3, SIZE, SIZE), np.float64), "float32"),
        (np.zeros((3, SIZE, SIZE), np.float32), r"shape \[N, 3, 16, 16\]"),
        (np.zeros((1, 1, SIZE, SIZE), np.float32), r"not \[1, 1, 16, 16\]"),
        ([[0.0]], "not list"),
    ],
)
def test_bad_input_is_refused(bundle, batch, match):
    with pytest.raises(DistilshotError, match=match):
        open_engine(bundle, load_manifest(bundle)).embed(batch)


def test_unknown_backend_and_provider(bundle):
    manifest = load_manifest(bundle)
    with pytest.raises(DistilshotError, match="unknown backend 'tpu'"):
        open_engine(bundle, manifest, "tpu")
    with pytest.raises(DistilshotError, match="not available here"):
        open_engine(bundle, manifest, "onnxruntime", providers=["NoSuchExecutionProvider"])


def test_missing_onnxruntime_says_what_to_install(bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with pytest.raises(DistilshotError, match=r"pip install distilshot\[cpu\].*distilshot\[gpu\]"):
        open_engine(bundle, load_manifest(bundle), "onnxruntime")
    for module in BACKENDS.values():
        monkeypatch.setattr(importlib.import_module(module), "is_available", lambda: False)
    with pytest.raises(DistilshotError, match=r"no inference backend.*distilshot\[cpu\]"):
        open_engine(bundle, load_manifest(bundle))


def copy_bundle(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_tampered_graph_is_refused_at_open(bundle, tmp_path):
    from distilshot.serve.classifier import FewShotClassifier

    bad = copy_bundle(bundle, tmp_path / "bad")
    graph = bad / "embedder.onnx"
    graph.write_bytes(graph.read_bytes().replace(b"embedding", b"embeddinG"))
    with pytest.raises(BundleError, match="changed or corrupted"):
        FewShotClassifier(bad)


def edit_manifest(folder, change) -> None:
    data = json.loads((folder / "manifest.json").read_text())
    change(data)
    data["files"]["embedder.onnx"] = sha256_file(folder / "embedder.onnx")
    (folder / "manifest.json").write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda d: d["graphs"]["embedder"]["outputs"][0].update(dim=5), "has dim 4; the manifest says 5"),
        (lambda d: d["graphs"]["embedder"]["outputs"][0].update(name="emb"), "no output 'emb'"),
        (lambda d: d["graphs"]["embedder"].update(input="pixels"), "no input 'pixels'"),
        (lambda d: d["preprocessing"].update(height=32, width=32), "does not match the manifest"),
    ],
)
def test_graph_must_match_manifest(bundle, tmp_path, change, match):
    folder = copy_bundle(bundle, tmp_path / "b")
    edit_manifest(folder, lambda d: _apply(d, change))
    with pytest.raises(BundleError, match=match):
        open_engine(folder, load_manifest(folder))


def _apply(data, change):
    change(data)
    # keep the head naming the (possibly renamed) outputs so only the graph check can object
    if data["head"]["weights"].keys() != {o["name"] for o in data["graphs"]["embedder"]["outputs"]}:
        data["head"]["weights"] = {o["name"]: 1.0 for o in data["graphs"]["embedder"]["outputs"]}


def test_graph_that_onnxruntime_cannot_load(bundle, tmp_path):
    folder = copy_bundle(bundle, tmp_path / "b")
    (folder / "embedder.onnx").write_bytes(b"not a protobuf at all")
    edit_manifest(folder, lambda d: None)
    with pytest.raises(BundleError, match="onnxruntime cannot load"):
        open_engine(folder, load_manifest(folder))
