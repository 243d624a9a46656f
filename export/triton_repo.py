"""Triton Inference Server: a model repository in the bundle's `triton/` folder, one model per ONNX graph
(onnxruntime backend) and one per TensorRT plan where this machine built them (tensorrt backend), each with
a config.pbtxt that enables dynamic batching. Where the bundle has its head graph (head.onnx), the
repository also holds it as model `head` and, per embedder model, an ensemble (`classifier` for
`embedder`, `classifier-int8` for `embedder-int8`, ...) that runs the embedder and then the head: a
client sends the preprocessed images and the class prototypes, and gets the logits and the embeddings.

Batching: the prototypes [K, D] are one matrix per request, not one row per image. With a batch
dimension, every input of a request shares its first dimension (K would have to equal N; Triton's
static rules do not catch it, as [-1] + [D] looks like [N, D]) and a dynamic batcher would concatenate
the prototypes of different requests. So the head and the ensemble have max_batch_size 0: every tensor
is its full shape. The embedder step keeps its own max_batch_size and dynamic batching, so the images of
concurrent ensemble requests still meet in one GPU batch; one request carries at most the embedder's
max_batch_size images. The ensemble starts from preprocessed images, not from preprocess.onnx: that
graph takes a batch of one image size, so Triton could batch it only across requests of equal size; its
Pillow parity was checked on onnxruntime's CPU uint8 resize only; a photo at its stored size is often
many times the bytes of the embedder's input; and the client still decodes, orients and converts each
image (README "Triton Inference Server").

Every config is validated offline against Triton's own schema: `inference.ModelConfig` of
model_config.proto (triton-inference-server/common), kept as a compiled descriptor in
export/data/triton_model_config.desc (see export/data/README.md for its source and licence), parsed with
protobuf's strict text format (an unknown field or enum value fails), plus the rules Triton applies when
it loads a model that the schema cannot express, and those it applies to an ensemble and the models it
names (`validate_repository`).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from contextlib import closing
from importlib import resources
from pathlib import Path
from typing import Any

from distilshot.core.manifest import PRECISIONS, Manifest
from distilshot.errors import DistilshotError
from distilshot.export.format_table import Checked, FormatJob, Staged, export_format
from distilshot.serve.engines.base import CHUNK_SIZE, EngineUnavailable

REPOSITORY = "triton"
MAX_QUEUE_DELAY_US = 1000
PLATFORMS = {"onnx": ("onnxruntime_onnx", "model.onnx"), "plan": ("tensorrt_plan", "model.plan")}
ENSEMBLE_PLATFORM = "ensemble"
HEAD_MODEL = "head"
VERSION = 1  # the one version folder each model has
LATEST = -1  # an ensemble step's model_version: the latest version of that model
# Triton needs a version folder for an ensemble too, which holds no model; an empty folder would not
# survive the bundle (its manifest lists files), so this file keeps it.
ENSEMBLE_VERSION_NOTE = "README"
FP32 = "TYPE_FP32"


def model_config_class() -> Any:
    """The ModelConfig message class, built from Triton's compiled model_config.proto descriptor."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    data = resources.files("distilshot.export").joinpath("data/triton_model_config.desc").read_bytes()
    pool = descriptor_pool.DescriptorPool()
    for file in descriptor_pb2.FileDescriptorSet.FromString(data).file:
        pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelConfig"))


def model_config(manifest: Manifest, name: str, kind: str) -> str:
    """config.pbtxt of one embedder model: `kind` is "onnx" or "plan"."""
    from google.protobuf import text_format

    platform, filename = PLATFORMS[kind]
    prep, graph = manifest.preprocessing, manifest.embedder
    config = model_config_class()(
        name=name,
        platform=platform,
        default_model_filename=filename,
        max_batch_size=CHUNK_SIZE,
    )
    config.input.add(name=graph.input, data_type=FP32, dims=[prep.channels, prep.height, prep.width])
    for output in graph.outputs:
        config.output.add(name=output.name, data_type=FP32, dims=[output.dim])
    config.dynamic_batching.preferred_batch_size.append(CHUNK_SIZE)
    config.dynamic_batching.max_queue_delay_microseconds = MAX_QUEUE_DELAY_US
    config.instance_group.add(count=1, kind="KIND_GPU" if kind == "plan" else "KIND_AUTO")
    return text_format.MessageToString(config)


def head_config(manifest: Manifest) -> str:
    """config.pbtxt of the head graph: per weighted output o, inputs o [N, D] and o + suffix [K, D],
    output logits [N, K]. No batch dimension (module docstring), so no dynamic batching either."""
    from google.protobuf import text_format

    if manifest.head_graph is None:
        raise DistilshotError("the bundle has no head graph (head.onnx); export it again to get one")
    platform, filename = PLATFORMS["onnx"]
    # Listing inputs and outputs also keeps max_batch_size 0: without them the onnxruntime backend
    # autocompletes the config (onnxruntime_backend src/onnxruntime.cc, AutoCompleteMaxBatch) and gives a
    # graph whose first dimensions are all variable, as this one's are, a batch dimension.
    config = model_config_class()(
        name=HEAD_MODEL, platform=platform, default_model_filename=filename, max_batch_size=0
    )
    for output, dim in _weighted_dims(manifest).items():
        config.input.add(name=output, data_type=FP32, dims=[-1, dim])
        config.input.add(name=output + manifest.head_graph.prototypes_suffix, data_type=FP32, dims=[-1, dim])
    config.output.add(name=manifest.head_graph.output, data_type=FP32, dims=[-1, -1])
    config.instance_group.add(count=1, kind="KIND_AUTO")
    return text_format.MessageToString(config)


def ensemble_config(manifest: Manifest, name: str, embedder: str) -> str:
    """config.pbtxt of the ensemble `name`: model `embedder`, then `head`. Inputs: the embedder's input
    [N, C, H, W] and, per weighted output o, o + suffix [K, D]; outputs: logits [N, K] and each o [N, D]."""
    from google.protobuf import text_format

    if manifest.head_graph is None:
        raise DistilshotError("the bundle has no head graph (head.onnx); export it again to get one")
    prep, graph, suffix = manifest.preprocessing, manifest.embedder, manifest.head_graph.prototypes_suffix
    dims = _weighted_dims(manifest)
    config = model_config_class()(name=name, platform=ENSEMBLE_PLATFORM, max_batch_size=0)
    config.input.add(name=graph.input, data_type=FP32, dims=[-1, prep.channels, prep.height, prep.width])
    for output, dim in dims.items():
        config.input.add(name=output + suffix, data_type=FP32, dims=[-1, dim])
    config.output.add(name=manifest.head_graph.output, data_type=FP32, dims=[-1, -1])
    for output, dim in dims.items():
        config.output.add(name=output, data_type=FP32, dims=[-1, dim])
    # ensemble tensors are named as the model tensors they connect
    embed = config.ensemble_scheduling.step.add(model_name=embedder, model_version=LATEST)
    embed.input_map[graph.input] = graph.input
    score = config.ensemble_scheduling.step.add(model_name=HEAD_MODEL, model_version=LATEST)
    for output in dims:
        embed.output_map[output] = output
        score.input_map[output] = output
        score.input_map[output + suffix] = output + suffix
    score.output_map[manifest.head_graph.output] = manifest.head_graph.output
    return text_format.MessageToString(config)


def ensemble_name(embedder: str) -> str:
    """The ensemble over embedder model `embedder`: embedder-int8 -> classifier-int8."""
    suffix = embedder.removeprefix("embedder")
    return "classifier" + (suffix if suffix != embedder else f"-{embedder}")


def _weighted_dims(manifest: Manifest) -> dict[str, int]:
    """The dims of the embedder outputs the head weights, in the head's order."""
    dims = {o.name: o.dim for o in manifest.embedder.outputs}
    return {output: dims[output] for output in manifest.head.weights}


def validate_config(text: str, folder: str) -> Any:
    """Parses a config.pbtxt with Triton's schema and checks what Triton checks on load of this one model
    (for an ensemble: its own fields and data flow, not yet the models it names, see
    `validate_ensemble`); returns the message or raises DistilshotError naming the problem."""
    from google.protobuf import text_format

    config = model_config_class()()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as error:
        raise DistilshotError(
            f"{folder}/config.pbtxt does not follow Triton's model config: {error}"
        ) from None
    problems = []
    if config.name != folder:
        problems.append(f"name {config.name!r} must match its folder {folder!r}")
    if config.platform not in {p for p, _ in PLATFORMS.values()} | {ENSEMBLE_PLATFORM}:
        problems.append(f"platform {config.platform!r} is not one distilshot writes")
    if config.HasField("dynamic_batching") and config.max_batch_size < 1:
        problems.append("dynamic batching needs max_batch_size >= 1")
    if any(b > config.max_batch_size for b in config.dynamic_batching.preferred_batch_size):
        problems.append("a preferred batch size exceeds max_batch_size")
    for tensor in [*config.input, *config.output]:
        if tensor.data_type == 0 or not tensor.dims or any(d == 0 or d < -1 for d in tensor.dims):
            problems.append(f"tensor {tensor.name!r} needs a data type and dims > 0 (or -1)")
    if not config.input or not config.output:  # and without both, the backend autocompletes (head_config)
        problems.append("a model needs inputs and outputs")
    if config.platform == ENSEMBLE_PLATFORM or config.HasField("ensemble_scheduling"):
        problems += _ensemble_problems(config)
    if problems:
        raise DistilshotError(f"{folder}/config.pbtxt: {'; '.join(problems)}")
    return config


def _ensemble_problems(config: Any) -> list[str]:
    """An ensemble's own load rules, as triton-inference-server/core's src/model_config_utils.cc
    applies them (ValidateModelConfig: platform "ensemble" with no backend and ensemble_scheduling set;
    ValidateEnsembleSchedulingConfig and BuildEnsembleGraph: no instance groups, optimization or warmup,
    steps that each name a model and map inputs and outputs, an ensemble tensor written by one step
    only, and the data flow: every ensemble input consumed, every output written by a step whose inputs
    all become available, every other tensor both available and consumed)."""
    problems = []
    if config.platform != ENSEMBLE_PLATFORM:
        return [f"ensemble_scheduling needs platform {ENSEMBLE_PLATFORM!r}"]
    if not config.HasField("ensemble_scheduling"):
        return ["an ensemble needs ensemble_scheduling"]
    if config.backend:
        problems.append("an ensemble has no backend")
    for field in ("instance_group", "model_warmup"):
        if len(getattr(config, field)):
            problems.append(f"an ensemble has no {field}")
    if config.HasField("optimization"):
        problems.append("an ensemble has no optimization")
    steps = config.ensemble_scheduling.step
    if not steps:
        problems.append("an ensemble needs steps")
    writer: dict[str, int] = {}
    for index, step in enumerate(steps):
        if not step.model_name or not step.input_map or not step.output_map:
            problems.append(f"step {index} needs model_name, input_map and output_map")
        for tensor in step.output_map.values():
            if tensor in writer:
                problems.append(
                    f"ensemble tensor {tensor!r} is written by steps {writer[tensor]} and {index}"
                )
            writer.setdefault(tensor, index)
    # data flow: a step runs once all its input tensors are available; then its outputs are
    available = {tensor.name for tensor in config.input}
    waiting = set(range(len(steps)))
    while ran := {i for i in waiting if set(steps[i].input_map.values()) <= available}:
        waiting -= ran
        for index in ran:
            available |= set(steps[index].output_map.values())
    consumed = {tensor for step in steps for tensor in step.input_map.values()}
    outputs = {tensor.name for tensor in config.output}
    for tensor in config.input:
        if tensor.name not in consumed:
            problems.append(f"ensemble input {tensor.name!r} is not consumed by any step")
    for name in sorted(outputs):
        if name not in writer:
            problems.append(f"ensemble output {name!r} is not produced by any step")
        elif name not in available:
            problems.append(f"ensemble output {name!r} is never written: a step before it lacks an input")
    for name in sorted((consumed | set(writer)) - outputs - {t.name for t in config.input}):
        if name not in available or name not in consumed:
            problems.append(f"ensemble tensor {name!r} is unused (never written or never consumed)")
    return problems


def validate_ensemble(config: Any, models: Mapping[str, Any], versions: Mapping[str, set[int]]) -> None:
    """The rules Triton applies to an ensemble once the models it names are loaded: `models` are the
    repository's configs by name, `versions` their version folders. As triton-inference-server/core
    applies them: src/model_repository_manager/model_repository_manager.cc (ConnectDependencyGraph: every
    step's model is in the repository) and src/ensemble_scheduler/ensemble_utils.cc
    (ValidateEnsembleConfig: a composing model that batches allows at least the ensemble's
    max_batch_size; ValidateTensorMapping: input_map keys are inputs of the step's model and every
    non-optional input is mapped, output_map keys are its outputs; ValidateTensorConsistency: every
    ensemble tensor has one data type and one shape wherever it appears, compared after a batching
    model's [-1] batch dimension is put in front, so [N, D] of a model without batching meets [D] of
    one with it). Raises DistilshotError naming every problem."""
    problems = []
    seen: dict[str, tuple[str, int, tuple[int, ...], tuple[int, ...]]] = {}

    def meet(tensor: str, where: str, batching: bool, io: Any) -> None:
        dims = tuple(io.reshape.shape if io.HasField("reshape") else io.dims)
        full = ((-1,) if batching else ()) + dims
        if tensor not in seen:
            seen[tensor] = (where, io.data_type, dims, full)
            return
        first, data_type, first_dims, first_full = seen[tensor]
        if data_type != io.data_type:
            problems.append(
                f"ensemble tensor {tensor!r} has data type {_type(data_type)} in {first} "
                f"but {_type(io.data_type)} in {where}"
            )
        elif not (_same_dims(first_dims, dims) or _same_dims(first_full, full)):
            problems.append(
                f"ensemble tensor {tensor!r} has shape {list(first_full)} in {first} "
                f"but {list(full)} in {where}"
            )

    batching = config.max_batch_size > 0
    for io in [*config.input, *config.output]:
        meet(io.name, f"ensemble {config.name!r}", batching, io)
    for index, step in enumerate(config.ensemble_scheduling.step):
        model = models.get(step.model_name)
        if model is None:
            problems.append(f"step {index} runs model {step.model_name!r}, which the repository lacks")
            continue
        if step.model_version != LATEST and step.model_version not in versions.get(step.model_name, set()):
            problems.append(
                f"step {index} runs version {step.model_version} of {step.model_name!r}, which it lacks"
            )
        if 0 < model.max_batch_size < config.max_batch_size:
            problems.append(
                f"model {step.model_name!r} allows batches of {model.max_batch_size}, fewer than the "
                f"ensemble's max_batch_size {config.max_batch_size}"
            )
        inputs = {io.name: io for io in model.input}
        outputs = {io.name: io for io in model.output}
        where, model_batching = f"model {step.model_name!r}", model.max_batch_size > 0
        for name in sorted(set(step.input_map) - set(inputs)):
            problems.append(f"step {index} maps {name!r}, which is not an input of {step.model_name!r}")
        for name in sorted(set(step.output_map) - set(outputs)):
            problems.append(f"step {index} maps {name!r}, which is not an output of {step.model_name!r}")
        for name, io in inputs.items():
            if name in step.input_map:
                meet(step.input_map[name], where, model_batching, io)
            elif not io.optional:
                problems.append(f"step {index} leaves input {name!r} of {step.model_name!r} unmapped")
        for name, tensor in step.output_map.items():
            if name in outputs:
                meet(tensor, where, model_batching, outputs[name])
    if problems:
        raise DistilshotError(f"ensemble {config.name!r}: {'; '.join(problems)}")


def _same_dims(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """Triton's CompareDimsWithWildcard: same rank, and each pair equal or one of them -1."""
    return len(a) == len(b) and all(x == y or -1 in (x, y) for x, y in zip(a, b, strict=True))


def _type(data_type: int) -> str:
    enum = model_config_class().DESCRIPTOR.fields_by_name["input"].message_type.fields_by_name["data_type"]
    return enum.enum_type.values_by_number[data_type].name


def validate_repository(repo: Path) -> list[str]:
    """Every model folder's config.pbtxt (`validate_config`) and every ensemble against the models it
    names (`validate_ensemble`); returns the model names, sorted."""
    repo = Path(repo)
    configs = {
        folder.name: validate_config((folder / "config.pbtxt").read_text(), folder.name)
        for folder in sorted(p for p in repo.iterdir() if p.is_dir())
    }
    versions = {
        name: {int(v.name) for v in (repo / name).iterdir() if v.is_dir() and v.name.isdigit()}
        for name in configs
    }
    for name, config in configs.items():
        if not versions[name]:
            raise DistilshotError(f"{name} has no version folder; Triton loads none of it")
        if config.platform == PLATFORMS["onnx"][0]:
            for version in versions[name]:
                validate_onnx_model(config, repo / name / str(version) / config.default_model_filename)
        if config.platform == ENSEMBLE_PLATFORM:
            validate_ensemble(config, configs, versions)
    return sorted(configs)


def validate_onnx_model(config: Any, path: Path) -> None:
    """What the onnxruntime backend checks when it loads `path` for `config`, as
    triton-inference-server/onnxruntime_backend's src/onnxruntime.cc does (ModelInstanceState::
    ValidateInputs / ValidateOutputs): the graph has as many inputs as the config, every config tensor
    is a graph tensor of the same element type, and its dims (behind a [-1] batch dimension when
    max_batch_size > 0, which the graph's first dimension must then leave variable) match the graph's
    shape, a variable graph dimension matching any. Stricter than the backend in one way: a config -1
    must meet a variable graph dimension. Raises DistilshotError naming every problem."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    problems = []

    def tensors(values: Any) -> dict[str, tuple[int, tuple[int, ...]]]:
        return {
            v.name: (
                v.type.tensor_type.elem_type,
                tuple(d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim),
            )
            for v in values
            if v.name not in initializers
        }

    graph_inputs, graph_outputs = tensors(graph.input), tensors(graph.output)
    if len(graph_inputs) != len(config.input):
        problems.append(f"the config has {len(config.input)} inputs, the graph {len(graph_inputs)}")
    batch = (-1,) if config.max_batch_size > 0 else ()
    for kind, ios, found in (("input", config.input, graph_inputs), ("output", config.output, graph_outputs)):
        for io in ios:
            if io.name not in found:
                problems.append(f"{kind} {io.name!r} is not one of the graph's {sorted(found)}")
                continue
            elem_type, shape = found[io.name]
            graph_type = f"TYPE_{_ONNX_TYPES.get(elem_type, f'of ONNX element type {elem_type}')}"
            if _type(io.data_type) != graph_type:
                problems.append(f"{kind} {io.name!r} is {_type(io.data_type)}, the graph's {graph_type}")
            dims = batch + tuple(io.reshape.shape if io.HasField("reshape") else io.dims)
            if len(dims) != len(shape) or any(g not in (-1, d) for g, d in zip(shape, dims, strict=False)):
                problems.append(f"{kind} {io.name!r} has dims {list(dims)}, the graph's shape {list(shape)}")
    if problems:
        raise DistilshotError(f"{config.name} ({path.name}): {'; '.join(problems)}")


# ONNX TensorProto element types -> the suffix of Triton's TYPE_ names (those distilshot's graphs use)
_ONNX_TYPES = {1: "FP32", 2: "UINT8", 7: "INT64", 10: "FP16"}


SERVED_BY = ()  # serve backends that run what it adds


def build(job: FormatJob) -> Staged:
    """The repository: one model per ONNX graph and per TensorRT plan this machine built, and where the
    bundle has its head graph, model `head` and one ensemble per embedder model."""
    from distilshot.serve.engines import tensorrt_engine

    bundle, manifest = job.edit.dir, job.edit.manifest
    notes = []
    models: dict[str, tuple[str, Path]] = {
        role: ("onnx", bundle / graph.file)
        for role, graph in manifest.graphs.items()
        if graph.format == "onnx"
    }
    try:
        for role, graph in list(manifest.graphs.items()):
            if graph.format == "onnx":
                with closing(tensorrt_engine.TensorRTEngine(bundle, manifest, graph.precision)) as engine:
                    models[f"{role}-plan"] = ("plan", engine.plan_path)
        notes.append(f"the plans are for {engine.gpu.name} and this TensorRT version only")
    except EngineUnavailable as why:
        notes.append(f"no TensorRT plans ({why}); the repository serves the ONNX graphs")
    repo = job.edit.staging / REPOSITORY
    for name, (kind, source) in models.items():
        _write_model(repo / name, model_config(manifest, name, kind), source, PLATFORMS[kind][1])
    if manifest.head_graph is None:
        notes.append("no head graph in this bundle (export it again to get head.onnx), so no ensembles")
    else:
        _write_model(
            repo / HEAD_MODEL, head_config(manifest), bundle / manifest.head_graph.file, "model.onnx"
        )
        for embedder in models:
            name = ensemble_name(embedder)
            _write_model(repo / name, ensemble_config(manifest, name, embedder), None, ENSEMBLE_VERSION_NOTE)
    return Staged(remove=[f for f in manifest.files if _in_repository(f)], notes=notes)


def _write_model(folder: Path, config: str, source: Path | None, filename: str) -> None:
    """A model folder: config.pbtxt and version folder 1 with the model file (for an ensemble, a note)."""
    version = folder / str(VERSION)
    version.mkdir(parents=True)
    if source is None:
        (version / filename).write_text(
            "Triton loads an ensemble from a version folder; it holds no model.\n"
        )
    else:
        shutil.copyfile(source, version / filename)
    (folder / "config.pbtxt").write_text(config)


@export_format(
    "triton",
    adds=f"{REPOSITORY}/, a Triton Inference Server model repository",
    precisions=PRECISIONS,
    extra="gpu",
    backends=SERVED_BY,
    build=build,
)
def check(job: FormatJob, preview: Manifest, staged: Staged) -> Checked:
    """Every staged config.pbtxt against Triton's schema and load rules, ensembles against their models."""
    models = validate_repository(job.edit.staging / REPOSITORY)
    return Checked(offline=[{"check": "triton-config", "models": models, "valid": True}])


def _in_repository(name: str) -> bool:
    """Whether a bundle file belongs to a Triton repository: triton/... or, after a repeated export,
    triton-2/... (see BundleEdit's naming)."""
    return re.fullmatch(rf"{REPOSITORY}(-\d+)?", name.split("/", 1)[0]) is not None
