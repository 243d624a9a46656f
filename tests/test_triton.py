"""export/triton_repo.py's ensemble: `export --to triton` writes model `head` (head.onnx) and, per embedder
model, an ensemble embedder -> head; it validates offline as Triton would load it, each ensemble load rule
refuses a config broken for it, and the ensemble's data flow, run step by step with onnxruntime as its
config wires the models, gives serve/'s logits for the same images and registered classes.

The bundles are built without torch: a seeded ConvNet on Omniglot drawings (euclidean head, one output)
and serve_fixtures' two-output embedder on CIFAR-100 photos (cosine head weighting both outputs).

Logit tolerance as tests/test_head_graph.py argues it: both sides compute in float32 but sum each dot
product in their own order (numpy's BLAS, onnxruntime's MLAS), so a logit may differ by about
sum_o |w_o| * (D_o + 4) * eps32 * scale_o / temperature, scale_o 1 for cosine and (||q|| + ||p||)^2 for
the squared distance. The embeddings themselves come from the same graph on the same inputs."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from edge_graphs import DATA, OMNIGLOT_PREP, cifar_photos, conv_embedder, logit_tolerance, session
from google.protobuf import text_format
from PIL import Image
from serve_fixtures import make_bundle

from distilshot.core.files import sha256_file
from distilshot.core.manifest import Graph, Head, HeadGraph, Manifest, Output, load_manifest
from distilshot.core.preprocess import preprocess
from distilshot.errors import DistilshotError
from distilshot.export.app_graphs import stage_app_graphs
from distilshot.export.formats import add_formats
from distilshot.export.triton_repo import (
    ensemble_config,
    head_config,
    model_config,
    validate_config,
    validate_ensemble,
    validate_onnx_model,
    validate_repository,
)
from distilshot.serve.classifier import FewShotClassifier

SHOTS, QUERIES = 4, 3  # per class


def convnet_bundle(folder: Path) -> Path:
    """A ConvNet-4-like embedder of 28 px grey drawings, ProtoNet's euclidean head at a calibrated-looking
    temperature."""
    folder.mkdir(parents=True)
    onnx.save(conv_embedder(1, 28), folder / "embedder.onnx")
    Manifest(
        name="convnet",
        method="protonet",
        backbone="convnet4",
        dataset="omniglot",
        preprocessing=OMNIGLOT_PREP,
        graphs={"embedder": Graph("embedder.onnx", "image", (Output("embedding", 576),))},
        head=Head("euclidean", {"embedding": 1.0}, temperature=3.7),
        metrics={"5way-1shot": {"accuracy": 0.5, "ci95": 0.01}},
        files={"embedder.onnx": sha256_file(folder / "embedder.onnx")},
        created="2024-01-01T00:00:00+0000",
    ).save(folder)
    return folder


def exported(folder: Path, kind: str) -> Path:
    if kind == "convnet":
        convnet_bundle(folder)
    else:
        make_bundle(folder, "two", metric="cosine", weights={"global": 0.7, "local": 1.6}, temperature=0.05)
    stage_app_graphs(folder)  # preprocess.onnx and head.onnx, as export writes them
    add_formats(folder, ["triton"])
    return folder


@pytest.fixture(scope="module", params=["convnet", "two-output"])
def bundle(request, tmp_path_factory) -> Path:
    return exported(tmp_path_factory.mktemp("triton") / "bundle", request.param)


def images_for(manifest: Manifest, classes: int) -> list[list]:
    """Real images of the bundle's kind, `SHOTS + QUERIES` per class: Omniglot drawings of one character
    each, or CIFAR-100 photos grouped in file order."""
    if manifest.preprocessing.channels == 1:
        characters = sorted((DATA / "omniglot" / "images_evaluation").glob("*/*"))[::40][:classes]
        return [[Image.open(p) for p in sorted(c.glob("*.png"))[: SHOTS + QUERIES]] for c in characters]
    photos = cifar_photos(classes * (SHOTS + QUERIES))
    return [photos[i::classes] for i in range(classes)]


def run_ensemble(repo: Path, name: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What Triton computes for one request to ensemble `name`: each step's model (its model.onnx) run
    on the ensemble tensors its input_map names, its outputs stored under the names its output_map
    gives, steps in the order their inputs become available; then the ensemble's outputs, each checked
    against its configured shape."""
    config = validate_config((repo / name / "config.pbtxt").read_text(), name)
    assert config.max_batch_size == 0  # full shapes: no batch dimension is added to what a client sends
    tensors = dict(feeds)
    waiting = list(config.ensemble_scheduling.step)
    while waiting:
        step = next(s for s in waiting if all(t in tensors for t in s.input_map.values()))
        waiting.remove(step)
        model = session(repo / step.model_name / "1" / "model.onnx")
        names = list(step.output_map)
        results = model.run(names, {i: tensors[t] for i, t in step.input_map.items()})
        tensors |= {step.output_map[n]: r for n, r in zip(names, results, strict=True)}
    for output in config.output:
        shape = tensors[output.name].shape
        assert len(shape) == len(output.dims) and all(
            d in (-1, s) for d, s in zip(output.dims, shape, strict=True)
        )
    return {output.name: tensors[output.name] for output in config.output}


def test_the_repository_holds_the_head_and_an_ensemble_that_validate(bundle):
    manifest = load_manifest(bundle)
    repo = bundle / "triton"
    assert validate_repository(repo) == ["classifier", "embedder", "head"]
    assert (repo / "head" / "1" / "model.onnx").read_bytes() == (bundle / "head.onnx").read_bytes()
    assert "triton/classifier/1/README" in manifest.files  # the version folder Triton needs is kept
    head = validate_config((repo / "head" / "config.pbtxt").read_text(), "head")
    assert head.max_batch_size == 0 and not head.HasField("dynamic_batching")
    ensemble = validate_config((repo / "classifier" / "config.pbtxt").read_text(), "classifier")
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == ["embedder", "head"]
    weighted = list(manifest.head.weights)
    assert [i.name for i in ensemble.input] == ["image", *[f"{o}_prototypes" for o in weighted]]
    assert [o.name for o in ensemble.output] == ["logits", *weighted]


def test_the_ensemble_gives_the_served_logits_on_real_images(bundle, tmp_path):
    manifest = load_manifest(bundle)
    groups = images_for(manifest, classes=6)
    labels = [f"class {i}" for i in range(len(groups))]
    queries = [image for group in groups for image in group[SHOTS:]]
    with FewShotClassifier(bundle, tmp_path / "classes.db", "onnxruntime") as classifier:
        for label, group in zip(labels, groups, strict=True):
            classifier.register(label, group[:SHOTS])
        served = classifier.classify(queries, top_k=len(labels))
        served_embeddings = classifier.embed(queries)
        # what a client sends: the store's prototypes, rows in its (sorted) class order
        order, means = classifier.store.prototypes()
    assert order == sorted(labels)
    feeds = {"image": preprocess(queries, manifest.preprocessing)}
    feeds |= {f"{o}_prototypes": np.asarray(means[o]) for o in manifest.head.weights}
    answer = run_ensemble(bundle / "triton", "classifier", feeds)

    for output in manifest.head.weights:
        np.testing.assert_array_equal(answer[output], served_embeddings[output])
    logits = answer["logits"]
    assert logits.shape == (len(queries), len(labels)) and logits.dtype == np.float32
    expected = np.array(
        [
            [dict(zip([label for label, _ in p.top_k], p.logits, strict=True))[c] for c in order]
            for p in served
        ]
    )
    tolerance = logit_tolerance(manifest.head, {o: answer[o] for o in manifest.head.weights}, means)
    assert (np.abs(logits - expected) <= tolerance).all()
    assert [order[i] for i in logits.argmax(1)] == [p.top_k[0][0] for p in served]
    assert np.abs(expected).max() > 100 * tolerance.max()  # the bound is far below the logits' scale


def test_a_bundle_without_a_head_graph_gets_no_ensemble(tmp_path):
    folder = convnet_bundle(tmp_path / "bundle")
    (report,) = add_formats(folder, ["triton"])
    assert report.checks[0]["models"] == ["embedder"]
    assert any("no head graph" in note for note in report.notes)


# -- each load rule refuses a config broken for it ------------------------------------------------------


@pytest.fixture(scope="module")
def configs(tmp_path_factory) -> dict[str, str]:
    """The configs of the convnet bundle's repository, by model name."""
    manifest = load_manifest(convnet_bundle(tmp_path_factory.mktemp("rules") / "bundle"))
    manifest = replace(manifest, head_graph=HeadGraph("head.onnx"))
    return {
        "embedder": model_config(manifest, "embedder", "onnx"),
        "head": head_config(manifest),
        "classifier": ensemble_config(manifest, "classifier", "embedder"),
    }


def refusal(configs: dict[str, str], edit) -> str:
    """The validation message for the repository with the ensemble's config edited by `edit` (a
    function changing the parsed message), or "" when it validates."""
    models = {name: validate_config(text, name) for name, text in configs.items()}
    edit(models["classifier"])
    text = text_format.MessageToString(models["classifier"])
    try:
        models["classifier"] = validate_config(text, "classifier")
        validate_ensemble(models["classifier"], models, {name: {1} for name in models})
    except DistilshotError as error:
        return str(error)
    return ""


def _step(config, index: int):
    return config.ensemble_scheduling.step[index]


def _add_input(config) -> None:
    config.input.add(name="unused", data_type="TYPE_FP32", dims=[-1, 576])


def _add_output(config) -> None:
    config.output.add(name="extra", data_type="TYPE_FP32", dims=[-1, 576])


def _rename_output(config) -> None:
    config.output[0].name = "scores"  # the head's logits then go nowhere


def _feed_from_nowhere(config) -> None:
    _step(config, 1).input_map["embedding_prototypes"] = "prototypes"


def _write_twice(config) -> None:
    _step(config, 1).output_map["logits"] = "embedding"


def _no_steps(config) -> None:
    config.ensemble_scheduling.ClearField("step")


def _no_output_map(config) -> None:
    _step(config, 0).ClearField("output_map")


def _instance_group(config) -> None:
    config.instance_group.add(count=1, kind="KIND_GPU")


def _optimization(config) -> None:
    config.optimization.SetInParent()


def _backend(config) -> None:
    config.backend = "onnxruntime"


def _not_an_ensemble(config) -> None:
    config.platform = "onnxruntime_onnx"


def _dynamic_batching_instead(config) -> None:
    config.dynamic_batching.SetInParent()  # the scheduling oneof: this clears ensemble_scheduling


def _missing_model(config) -> None:
    _step(config, 1).model_name = "head-v2"


def _missing_version(config) -> None:
    _step(config, 0).model_version = 2


def _not_a_model_input(config) -> None:
    _step(config, 1).input_map["queries"] = "embedding"


def _unmapped_input(config) -> None:
    del _step(config, 1).input_map["embedding_prototypes"]
    del config.input[1]  # the ensemble no longer takes the prototypes: its own data flow holds


def _not_a_model_output(config) -> None:
    del _step(config, 0).output_map["embedding"]
    _step(config, 0).output_map["features"] = "embedding"


def _wrong_type(config) -> None:
    types = config.input[0].DESCRIPTOR.fields_by_name["data_type"].enum_type
    config.input[0].data_type = types.values_by_name["TYPE_FP16"].number


def _wrong_shape(config) -> None:
    config.input[0].dims[1] = 3  # RGB into a grey embedder


def _batching_ensemble_with_full_shapes(config) -> None:
    config.max_batch_size = 64  # then [-1, C, H, W] gains a batch dimension: [-1, -1, C, H, W]


def _larger_batches_than_the_embedder(config) -> None:
    config.max_batch_size = 128
    for tensor in [*config.input, *config.output]:
        del tensor.dims[0]  # the batch dimension is implied now


RULES = {
    # model_config_utils.cc, ValidateEnsembleSchedulingConfig / BuildEnsembleGraph
    "input consumed": (_add_input, "ensemble input 'unused' is not consumed by any step"),
    "output produced": (_add_output, "ensemble output 'extra' is not produced by any step"),
    "output written": (_feed_from_nowhere, "ensemble output 'logits' is never written"),
    "tensor used": (_rename_output, "ensemble tensor 'logits' is unused"),
    "one writer": (_write_twice, "ensemble tensor 'embedding' is written by steps 0 and 1"),
    "steps": (_no_steps, "an ensemble needs steps"),
    "step maps": (_no_output_map, "step 0 needs model_name, input_map and output_map"),
    "no instance group": (_instance_group, "an ensemble has no instance_group"),
    "no optimization": (_optimization, "an ensemble has no optimization"),
    "no backend": (_backend, "an ensemble has no backend"),
    "ensemble platform": (_not_an_ensemble, "ensemble_scheduling needs platform 'ensemble'"),
    "ensemble scheduling": (_dynamic_batching_instead, "an ensemble needs ensemble_scheduling"),
    # model_repository_manager.cc, ConnectDependencyGraph
    "model exists": (_missing_model, "step 1 runs model 'head-v2', which the repository lacks"),
    "version exists": (_missing_version, "step 0 runs version 2 of 'embedder', which it lacks"),
    # ensemble_utils.cc, ValidateTensorMapping / ValidateTensorConsistency / ValidateEnsembleConfig
    "maps model inputs": (_not_a_model_input, "step 1 maps 'queries', which is not an input of 'head'"),
    "maps every input": (_unmapped_input, "step 1 leaves input 'embedding_prototypes' of 'head' unmapped"),
    "maps model outputs": (_not_a_model_output, "step 0 maps 'features', which is not an output of"),
    "data types agree": (
        _wrong_type,
        "ensemble tensor 'image' has data type TYPE_FP16 in ensemble 'classifier' but TYPE_FP32 in model",
    ),
    "shapes agree": (
        _wrong_shape,
        "ensemble tensor 'image' has shape [-1, 3, 28, 28] in ensemble 'classifier' but [-1, 1, 28, 28]",
    ),
    "batch dimension": (
        _batching_ensemble_with_full_shapes,
        "ensemble tensor 'image' has shape [-1, -1, 1, 28, 28] in ensemble 'classifier' but [-1, 1, 28, 28]",
    ),
    "max batch size": (
        _larger_batches_than_the_embedder,
        "model 'embedder' allows batches of 64, fewer than the ensemble's max_batch_size 128",
    ),
}


def test_the_written_configs_pass_every_rule(configs):
    assert refusal(configs, lambda config: None) == ""


@pytest.mark.parametrize("rule", RULES)
def test_each_ensemble_rule_refuses_a_config_broken_for_it(configs, rule):
    edit, message = RULES[rule]
    assert message in refusal(configs, edit)


def test_a_batching_ensemble_would_tie_the_prototypes_to_the_images(configs):
    """Why the ensemble does not batch: Triton's static rules accept it (the [-1] batch dimension makes
    [K, D] look like [N, D]), but every input of a request then shares its first dimension, so K would
    have to equal N. The written config keeps full shapes and no batch dimension instead."""

    def batching(config) -> None:
        config.max_batch_size = 64
        for tensor in [*config.input, *config.output]:
            del tensor.dims[0]

    assert refusal(configs, batching) == ""
    head = validate_config(configs["head"], "head")
    assert head.max_batch_size == 0 and [list(i.dims) for i in head.input] == [[-1, 576], [-1, 576]]


def test_scheduling_choices_are_exclusive_in_the_schema(configs):
    text = configs["classifier"] + "dynamic_batching { }\n"
    with pytest.raises(DistilshotError, match="does not follow Triton's model config"):
        validate_config(text, "classifier")


def test_a_model_without_a_version_folder_is_refused(bundle, tmp_path):
    repo = tmp_path / "triton"
    shutil.copytree(bundle / "triton", repo)
    shutil.rmtree(repo / "classifier" / "1")
    with pytest.raises(DistilshotError, match="classifier has no version folder"):
        validate_repository(repo)


def test_only_the_weighted_outputs_reach_the_head(tmp_path):
    """An embedder output the head does not weight is not mapped: Triton refuses an ensemble tensor that
    no step consumes and no ensemble output names."""
    folder = make_bundle(tmp_path / "bundle", "two", metric="cosine", weights={"global": 1.0})
    manifest = replace(load_manifest(folder), head_graph=HeadGraph("head.onnx"))
    configs = {
        "embedder": model_config(manifest, "embedder", "onnx"),
        "head": head_config(manifest),
        "classifier": ensemble_config(manifest, "classifier", "embedder"),
    }
    assert refusal(configs, lambda config: None) == ""
    ensemble = validate_config(configs["classifier"], "classifier")
    assert dict(_step(ensemble, 0).output_map) == {"global": "global"}

    def map_local(config) -> None:
        _step(config, 0).output_map["local"] = "local"

    assert "ensemble tensor 'local' is unused" in refusal(configs, map_local)


# -- the onnxruntime backend's checks of a config against its graph --------------------------------------


def _rename_head_input(config) -> None:
    config.input[0].name = "queries"


def _drop_head_input(config) -> None:
    del config.input[1]


def _fp16_head_input(config) -> None:
    types = config.input[0].DESCRIPTOR.fields_by_name["data_type"].enum_type
    config.input[0].data_type = types.values_by_name["TYPE_FP16"].number


def _batching_head(config) -> None:
    config.max_batch_size = 4  # [-1] + [-1, D]: one dimension more than the graph's [queries, D]


def _wrong_width(config) -> None:
    config.input[0].dims[1] = 575


ONNX_RULES = {
    "graph input names": (_rename_head_input, "input 'queries' is not one of the graph's"),
    "input count": (_drop_head_input, "the config has 1 inputs, the graph 2"),
    "element types": (_fp16_head_input, "is TYPE_FP16, the graph's TYPE_FP32"),
    "batch dimension": (_batching_head, "has dims [-1, -1, 576], the graph's shape [-1, 576]"),
    "dims": (_wrong_width, "input 'embedding' has dims [-1, 575], the graph's shape [-1, 576]"),
}


@pytest.fixture(scope="module")
def convnet_repo(tmp_path_factory) -> Path:
    return exported(tmp_path_factory.mktemp("onnx-rules") / "bundle", "convnet") / "triton"


@pytest.mark.parametrize("rule", ONNX_RULES)
def test_each_onnxruntime_rule_refuses_a_head_config_broken_for_it(convnet_repo, rule):
    edit, message = ONNX_RULES[rule]
    config = validate_config((convnet_repo / "head" / "config.pbtxt").read_text(), "head")
    validate_onnx_model(config, convnet_repo / "head" / "1" / "model.onnx")  # as written: valid
    edit(config)
    with pytest.raises(DistilshotError) as refused:
        validate_onnx_model(config, convnet_repo / "head" / "1" / "model.onnx")
    assert message in str(refused.value)


def test_the_embedder_graph_must_leave_its_batch_dimension_variable(convnet_repo, tmp_path):
    """A batching config ([-1] + [C, H, W]) needs the graph's first dimension variable."""
    model = onnx.load(str(convnet_repo / "embedder" / "1" / "model.onnx"))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 8  # a fixed batch of 8
    onnx.save(model, tmp_path / "model.onnx")
    config = validate_config((convnet_repo / "embedder" / "config.pbtxt").read_text(), "embedder")
    with pytest.raises(
        DistilshotError, match=r"input 'image' has dims \[-1, 1, 28, 28\], the graph's shape \[8"
    ):
        validate_onnx_model(config, tmp_path / "model.onnx")


# -- README's client ------------------------------------------------------------------------------------


def readme_client() -> str:
    """The Python block of README's "Triton Inference Server" section."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("### Triton Inference Server") :]
    return section[section.index("```python\n") + 10 : section.index("\n```", section.index("```python"))]


def test_the_readme_client_gets_the_served_answer(tmp_path, monkeypatch, capsys):
    """README's client, run against a stand-in for tritonclient.http that answers with the ensemble's
    data flow (run_ensemble), on a bundle, store and query image of its own."""
    import sys
    import types

    bundle = exported(tmp_path / "B", "convnet")
    groups = images_for(load_manifest(bundle), classes=4)
    groups[2][SHOTS].save(tmp_path / "query.jpg")
    with FewShotClassifier(bundle, tmp_path / "classes.db", "onnxruntime") as classifier:
        for i, group in enumerate(groups):
            classifier.register(f"class {i}", group[:SHOTS])
        expected = classifier.classify([tmp_path / "query.jpg"], top_k=1)[0].top_k[0][0]

    class InferInput:
        def __init__(self, name: str, shape: list[int], datatype: str) -> None:
            assert datatype == "FP32"
            self.name, self.shape = name, shape

        def set_data_from_numpy(self, array: np.ndarray) -> None:
            assert list(array.shape) == self.shape and array.dtype == np.float32
            self.array = array

    class Client:
        def __init__(self, url: str) -> None:
            pass

        def infer(self, model: str, inputs: list, outputs: list) -> types.SimpleNamespace:
            answer = run_ensemble(bundle / "triton", model, {i.name: i.array for i in inputs})
            return types.SimpleNamespace(as_numpy=lambda name: answer[name])

    http = types.SimpleNamespace(
        InferInput=InferInput, InferenceServerClient=Client, InferRequestedOutput=lambda name: name
    )
    monkeypatch.setitem(sys.modules, "tritonclient", types.SimpleNamespace(http=http))
    monkeypatch.setitem(sys.modules, "tritonclient.http", http)
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_client(), "README.md", "exec"), {})
    assert capsys.readouterr().out.strip() == repr([expected])
