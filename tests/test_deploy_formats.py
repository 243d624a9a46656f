"""Deployment formats: the session's ConvNet-4 ProtoNet, trained briefly on Omniglot, exported,
then given every format as `export --to int8,openvino,tensorrt,triton` does. Every backend that runs on this
CPU is compared with ONNX Runtime fp32 on real evaluation images; the TensorRT graphs get the offline
checks; the Triton configs are validated against Triton's schema; stores stay tied to one graph."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from serve_fixtures import write_image

from distilshot.core.manifest import load_manifest
from distilshot.errors import BundleError, DistilshotError, StoreError
from distilshot.export.bundle_edit import LOCK_FILE
from distilshot.export.embeddings import embed_images
from distilshot.export.engine_parity import compare_engines
from distilshot.export.format_table import ExportOptions
from distilshot.export.formats import add_formats, parse_formats
from distilshot.export.tensorrt_engine import check_graph, supported_ops
from distilshot.export.triton_repo import model_config, validate_config, validate_repository
from distilshot.serve.classifier import FewShotClassifier
from distilshot.serve.engines import open_engine
from distilshot.train.data.registry import load_split

EPISODES = 20  # per check: the comparisons are paired (same episodes), so few suffice


@pytest.fixture(scope="module")
def trained(trained_run):
    """The session's trained ProtoNet bundle (trained_fixture.py); copied before any change."""
    return trained_run.bundle


@pytest.fixture(scope="module")
def bundle(trained, tmp_path_factory):
    folder = tmp_path_factory.mktemp("formats") / "bundle"
    shutil.copytree(trained, folder)
    formats = parse_formats("onnx,triton,tensorrt,int8,openvino")
    reports = add_formats(
        folder, formats, ExportOptions(episodes=EPISODES, max_drop=3.0)
    )  # the tests judge the drop
    return folder, {r.format: r for r in reports}


@pytest.fixture(scope="module")
def evaluation():
    return load_split("omniglot", "test", 28)


def images(data, count=600, seed=1):
    return data.images[np.sort(np.random.default_rng(seed).choice(len(data.labels), count, replace=False))]


def test_formats_run_in_dependency_order_and_land_in_the_manifest(bundle):
    folder, reports = bundle
    assert list(reports) == ["int8", "openvino", "tensorrt", "triton"]
    manifest = load_manifest(folder)  # verifies every file against its sha256
    kinds = {role: (g.precision, g.format, g.source) for role, g in manifest.graphs.items()}
    assert kinds == {
        "embedder": ("fp32", "onnx", None),
        "embedder-int8": ("int8", "onnx", None),
        "embedder-openvino": ("fp32", "openvino", "embedder"),
        "embedder-int8-openvino": ("int8", "openvino", "embedder-int8"),
        "embedder-fp16": ("fp16", "onnx", None),
    }
    assert manifest.graphs["embedder-openvino"].weights == "embedder-openvino.bin"
    assert {f.split("/")[0] for f in manifest.files} >= {"embedder-int8.onnx", "embedder-fp16.onnx", "triton"}
    assert not list(folder.glob(".staging-*"))
    assert (
        "embedder-int8 vs onnxruntime embedder 5-way 1-shot".replace(
            "embedder-int8", "onnxruntime embedder-int8"
        )
        in manifest.metrics
    )


def test_fingerprints_follow_the_graph_not_the_format(bundle):
    manifest = load_manifest(bundle[0])
    fp = {role: manifest.fingerprint(role) for role in manifest.graphs}
    assert fp["embedder-openvino"] == fp["embedder"] and fp["embedder-int8-openvino"] == fp["embedder-int8"]
    assert len({fp["embedder"], fp["embedder-int8"], fp["embedder-fp16"]}) == 3


def test_int8_graph_is_symmetric_per_channel_qdq_calibrated_on_training_images(bundle):
    folder, reports = bundle
    model = onnx.load(folder / "embedder-int8.onnx")
    constants = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq and all(n.domain in ("", "ai.onnx") for n in qdq)
    zero_points = [constants[n.input[2]] for n in qdq]
    assert all(z.dtype == np.int8 and not z.any() for z in zero_points)  # symmetric, int8
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    # weights reach each Conv through DequantizeLinear; biases stay float (TensorRT dequantizes int8 only)
    assert len(convs) == 4 and not any(n.input[1] in constants for n in convs)
    assert all(constants[n.input[2]].dtype == np.float32 for n in convs)
    weight_scales = [constants[n.input[1]] for n in qdq if n.input[0].endswith("weight_quantized")]
    assert len(weight_scales) == 4 and all(s.shape == (64,) for s in weight_scales)  # one per channel
    assert "300 omniglot/train images" in reports["int8"].notes[0]


def test_int8_accuracy_on_the_evaluation_episodes(bundle, evaluation):
    folder, reports = bundle
    one_shot = reports["int8"].checks[0]
    assert (one_shot["n_way"], one_shot["k_shot"], one_shot["split"]) == (5, 1, "omniglot/test")
    assert one_shot["reference_accuracy"] > 50  # chance is 20%
    assert abs(one_shot["drop"]) <= 1.0 and one_shot["agreement"] > 0.9
    # measured again here, on other episodes
    manifest = load_manifest(folder)
    fp32 = open_engine(folder, manifest, "onnxruntime")
    int8 = open_engine(folder, manifest, "onnxruntime", precision="int8")
    (check,) = compare_engines(fp32, int8, manifest, evaluation, ((5, 1),), episodes=EPISODES, seed=7)
    # int8 kernels differ by CPU: without VNNI, u8s8 products can saturate int16 sums (0.204 on an
    # AVX2-only EPYC); well above that the quantization itself would be wrong
    assert check.drop <= 1.0 and check.agreement > 0.9 and 0.001 < check.max_rel_diff < 0.3


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_openvino_matches_onnxruntime_on_real_images(bundle, evaluation, precision):
    folder, _ = bundle
    manifest = load_manifest(folder)
    x = images(evaluation)
    reference = embed_images(open_engine(folder, manifest, "onnxruntime", precision=precision), x, manifest)
    engine = open_engine(folder, manifest, "openvino", precision=precision)
    assert engine.role == ("embedder-openvino" if precision == "fp32" else "embedder-int8-openvino")
    assert engine.providers_in_use == ["CPU (inference precision f32)"]
    ours = embed_images(engine, x, manifest)["embedding"]
    theirs = reference["embedding"]
    scale = np.abs(theirs).max()
    if precision == "fp32":
        assert np.abs(ours - theirs).max() < 1e-4 * scale
    else:
        # one int8 graph: the engines may only round an activation to a neighbouring step (+-1 step), which
        # propagates to a few output steps at most and to under one step on average (how many values agree
        # exactly depends on the CPU's int8 instructions, so it is not asserted)
        step, diff = scale / 127, np.abs(ours - theirs)
        assert diff.max() <= 3 * step and np.sqrt(np.mean(diff**2)) <= step


def test_openvino_runs_onnx_graphs_of_bundles_without_ir(trained, evaluation):
    manifest = load_manifest(trained)
    engine = open_engine(trained, manifest, "openvino")
    assert engine.role == "embedder"
    x = images(evaluation, 100)
    ours = embed_images(engine, x, manifest)["embedding"]
    theirs = embed_images(open_engine(trained, manifest, "onnxruntime"), x, manifest)["embedding"]
    assert np.abs(ours - theirs).max() < 1e-4 * np.abs(theirs).max()


def test_auto_runs_int8_on_openvino_and_fp32_on_onnxruntime(bundle, cpu_only):
    folder, _ = bundle
    manifest = load_manifest(folder)
    assert open_engine(folder, manifest, precision="int8").name == "openvino"
    assert open_engine(folder, manifest).name == "onnxruntime"


def test_fp16_graph_keeps_fp32_inputs_and_outputs(bundle):
    folder, reports = bundle
    model = onnx.load(folder / "embedder-fp16.onnx")
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [TensorProto.FLOAT]
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [TensorProto.FLOAT]
    weights = [i for i in model.graph.initializer if i.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)]
    assert weights and all(i.data_type == TensorProto.FLOAT16 for i in weights)
    fp16 = [c for c in reports["tensorrt"].checks if c.get("candidate") == "onnxruntime embedder-fp16"]
    assert len(fp16) == 2 and all(c["agreement"] > 0.99 for c in fp16)


def test_every_graph_passes_the_tensorrt_offline_checks(bundle):
    folder, reports = bundle
    manifest = load_manifest(folder)
    onnx_roles = [r for r, g in manifest.graphs.items() if g.format == "onnx"]
    for role in onnx_roles:
        check = check_graph(onnx.load(folder / manifest.graphs[role].file), role)
        assert check.problems == [], (role, check.problems)
        assert set(check.operators) <= set(supported_ops()["operators"])
    offline = [c for c in reports["tensorrt"].checks if c.get("check") == "tensorrt-offline"]
    assert sorted(c["graph"] for c in offline) == sorted(onnx_roles)
    assert any("plans not built here" in note for note in reports["tensorrt"].notes)


@pytest.mark.parametrize(
    ("method", "backbone"), [("protonet", "resnet12"), ("protonet", "mobilenet-0.5"), ("bml", "convnet4")]
)
def test_the_other_architectures_pass_the_tensorrt_offline_checks(method, backbone, tmp_path):
    """The graphs the other backbones and a two-output method export, in fp32, fp16 and int8."""
    from distilshot.export.int8 import quantize_graph
    from distilshot.export.onnx_graph import export_embedder
    from distilshot.export.tensorrt_engine import to_fp16
    from distilshot.train.checkpoint import ModelSpec

    spec = ModelSpec(method, backbone, 10, 3, 32, (0.5,) * 3, (0.25,) * 3, "cifar-fs", {})
    graph = export_embedder(spec.build(seed=0), spec, tmp_path / "fp32.onnx")
    calibration = np.random.default_rng(0).normal(size=(20, 3, 32, 32)).astype(np.float32)
    quantize_graph(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", calibration, graph.input)
    fp32 = onnx.load(tmp_path / "fp32.onnx")
    for name, model in (("fp32", fp32), ("fp16", to_fp16(fp32)), ("int8", onnx.load(tmp_path / "int8.onnx"))):
        assert check_graph(model, name).problems == [], (method, backbone, name)


def tiny(nodes, inputs, outputs, initializers=(), opset=18):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def image_input(h="28"):
    dims = ["batch", 1, 28, 28] if h == "28" else ["batch", 1, h, 28]
    return helper.make_tensor_value_info("image", TensorProto.FLOAT, dims)


def test_tensorrt_offline_checks_catch_what_tensorrt_refuses():
    flat = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 784])
    shape = numpy_helper.from_array(np.array([-1, 784], np.int64), "shape")
    ok = tiny([helper.make_node("Reshape", ["image", "shape"], ["y"])], [image_input()], [flat], [shape])
    assert check_graph(ok).problems == []
    unsupported = tiny(
        [
            helper.make_node("Reshape", ["image", "shape"], ["r"]),
            helper.make_node("Hardmax", ["r"], ["h"]),
            helper.make_node("Det", ["h"], ["y"]),
        ],
        [image_input()],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [shape],
    )
    assert any("does not support Det" in p for p in check_graph(unsupported).problems)
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "scale")
    zero = numpy_helper.from_array(np.array(128, np.uint8), "zero")
    asymmetric = tiny(
        [
            helper.make_node("QuantizeLinear", ["image", "scale", "zero"], ["q"]),
            helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["d"]),
            helper.make_node("Reshape", ["d", "shape"], ["y"]),
        ],
        [image_input()],
        [flat],
        [scale, zero, shape],
    )
    problems = check_graph(asymmetric).problems
    assert sum("zero point of 0" in p for p in problems) == 2
    dynamic = tiny(
        [helper.make_node("Relu", ["image"], ["y"])],
        [image_input("height")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1, "height", 28])],
    )
    assert any("dynamic dims ['height']" in p for p in check_graph(dynamic).problems)
    axes = helper.make_tensor_value_info("axes", TensorProto.INT64, [2])
    reduce = tiny(
        [helper.make_node("ReduceMean", ["image", "axes"], ["y"], keepdims=0)],
        [image_input(), axes],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
    )
    assert any("one input" in p for p in check_graph(reduce).problems)
    old = tiny(
        [helper.make_node("Relu", ["image"], ["y"])],
        [image_input()],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        opset=8,
    )
    assert any("opset 8 is outside" in p for p in check_graph(old).problems)


def test_triton_repository_configs_follow_tritons_schema(bundle):
    folder, reports = bundle
    manifest = load_manifest(folder)
    repo = folder / "triton"
    models = sorted(p.name for p in repo.iterdir())
    embedders = ["embedder", "embedder-fp16", "embedder-int8"]
    ensembles = ["classifier", "classifier-fp16", "classifier-int8"]  # each over its embedder, then head
    assert models == sorted([*embedders, *ensembles, "head"]) == reports["triton"].checks[0]["models"]
    assert validate_repository(repo) == models
    for name in embedders:
        config = validate_config((repo / name / "config.pbtxt").read_text(), name)
        assert config.platform == "onnxruntime_onnx" and config.max_batch_size == 64
        assert list(config.input[0].dims) == [1, 28, 28] and list(config.output[0].dims) == [64]
        assert list(config.dynamic_batching.preferred_batch_size) == [64]
        graph = manifest.graphs[name]
        assert (repo / name / "1" / "model.onnx").read_bytes() == (folder / graph.file).read_bytes()


def test_triton_validation_refuses_what_triton_would(bundle):
    manifest = load_manifest(bundle[0])
    good = model_config(manifest, "embedder", "onnx")
    with pytest.raises(DistilshotError, match="does not follow Triton's model config"):
        validate_config(good.replace("max_batch_size", "max_batch"), "embedder")
    with pytest.raises(DistilshotError, match="does not follow Triton's model config"):
        validate_config(good.replace("TYPE_FP32", "TYPE_FLOAT32", 1), "embedder")
    with pytest.raises(DistilshotError, match="must match its folder"):
        validate_config(good, "other")
    with pytest.raises(DistilshotError, match="dynamic batching needs max_batch_size"):
        validate_config(good.replace("max_batch_size: 64", "max_batch_size: 0"), "embedder")
    plan = validate_config(model_config(manifest, "embedder-plan", "plan"), "embedder-plan")
    assert plan.platform == "tensorrt_plan" and plan.default_model_filename == "model.plan"


def test_a_store_never_mixes_the_embeddings_of_two_graphs(bundle, evaluation, tmp_path):
    folder, _ = bundle
    pictures = [write_image(tmp_path / f"{i}.png", _picture(evaluation.images[i])) for i in range(0, 60, 20)]
    store = tmp_path / "classes.db"
    with FewShotClassifier(folder, store, "onnxruntime") as clf:
        clf.register("a", pictures[:1])
        clf.register("b", pictures[1:2])
        fp32 = clf.classify(pictures)
    # OpenVINO on the fp32 graph (its IR) shares the store: same embeddings
    with FewShotClassifier(folder, store, "openvino") as clf:
        assert clf.engine.role == "embedder-openvino"
        again = clf.classify(pictures)
    assert [p.top_k[0][0] for p in again] == [p.top_k[0][0] for p in fp32]
    assert np.allclose([p.logits for p in again], [p.logits for p in fp32], rtol=1e-4, atol=1e-4)
    # int8 embeddings are another graph's: the store refuses them, on either engine
    for backend in ("onnxruntime", "openvino"):
        with pytest.raises(
            StoreError, match="holds the embeddings of this bundle's fp32 graph, not of its int8"
        ):
            FewShotClassifier(folder, store, backend, precision="int8")


def _picture(pixels):
    from PIL import Image

    return Image.fromarray(pixels[:, :, 0])


def test_a_failed_check_leaves_the_bundle_unchanged(trained, tmp_path):
    folder = tmp_path / "bundle"
    shutil.copytree(trained, folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(DistilshotError, match="the bundle is unchanged"):
        add_formats(folder, ["int8"], ExportOptions(episodes=5, calibration_images=50, max_drop=-100.0))
    after = {p.name: p.read_bytes() for p in folder.iterdir() if p.name != LOCK_FILE}
    assert after == before  # only the (empty) lock file of the edit remains


def test_a_damaged_int8_graph_is_refused_at_the_default_limit(trained, tmp_path, monkeypatch):
    """The int8 check at its default 1-point limit: a graph whose per-channel weight scales are off by up to
    20x either way (a broken calibration) loses ~20 points here and must be refused."""
    from distilshot.export import int8

    quantize = int8.quantize_graph

    def damaged(source, target, calibration, input_name):
        quantize(source, target, calibration, input_name)
        model = onnx.load(target)
        nodes = model.graph.node
        scales = {
            n.input[1]
            for n in nodes
            if n.op_type == "DequantizeLinear" and n.input[0].endswith("weight_quantized")
        }
        assert len(scales) == 4  # one per Conv
        rng = np.random.default_rng(0)
        for tensor in model.graph.initializer:
            if tensor.name in scales:
                scale = numpy_helper.to_array(tensor)
                factor = np.exp(rng.uniform(-3, 3, scale.shape)).astype(scale.dtype)
                tensor.CopyFrom(numpy_helper.from_array(scale * factor, tensor.name))
        onnx.save(model, target)

    monkeypatch.setattr(int8, "quantize_graph", damaged)
    folder = tmp_path / "bundle"
    shutil.copytree(trained, folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(DistilshotError, match=r"loses .* more than the allowed 1.0; the bundle is unchanged"):
        add_formats(folder, ["int8"], ExportOptions(episodes=EPISODES, calibration_images=50))
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.name != LOCK_FILE} == before


def test_an_export_again_replaces_the_format_and_removes_the_old_files(bundle, tmp_path):
    folder = tmp_path / "bundle"
    shutil.copytree(bundle[0], folder)
    (report,) = add_formats(folder, ["triton"])
    # the new repository gets a fresh name while the old one is listed, and the old one goes after
    assert {f.split("/")[0] for f in report.files} == {"triton-2"} and not (folder / "triton").exists()
    manifest = load_manifest(folder)
    assert not [f for f in manifest.files if f.startswith("triton/")]
    assert validate_config((folder / "triton-2" / "embedder" / "config.pbtxt").read_text(), "embedder")


def test_export_command_errors(trained, capsys):
    from distilshot.cli import main

    for args, message in (
        (["--bundle", str(trained), "--to", "int8,tflite"], "unknown export formats ['tflite']"),
        (["--bundle", str(trained)], "already has its ONNX graph"),
        (["--to", "int8"], "give a CHECKPOINT to export, or --bundle"),
    ):
        with pytest.raises(SystemExit) as exit_:
            main(["export", *args])
        assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_manifest_refuses_inconsistent_graphs(bundle, tmp_path):
    folder = tmp_path / "b"
    shutil.copytree(bundle[0], folder)
    data = json.loads((folder / "manifest.json").read_text())
    for change, message in (
        (lambda d: d["graphs"]["embedder-int8"].update(precision="int4"), "precision 'int4'"),
        (lambda d: d["graphs"]["embedder-openvino"].update(source="embedder-int8"), "same precision"),
        (lambda d: d["graphs"]["embedder-fp16"].update(precision="int8"), "two int8 onnx graphs"),
        (lambda d: d["graphs"]["embedder-int8"].update(input="pixels"), "embedder's input and outputs"),
        (
            lambda d: d["graphs"]["embedder-openvino"].update(weights="missing.bin"),
            "'missing.bin' has no sha256",
        ),
    ):
        edited = json.loads(json.dumps(data))
        change(edited)
        (folder / "manifest.json").write_text(json.dumps(edited))
        with pytest.raises(BundleError, match=message):
            load_manifest(folder)
