"""Triton Inference Server: a model repository in the bundle's `triton/` folder, one model per ONNX graph
(onnxruntime backend) and one per TensorRT plan where this machine built them (tensorrt backend), each with
a config.pbtxt that enables dynamic batching.

Every config is validated offline against Triton's own schema: `inference.ModelConfig` of
model_config.proto (triton-inference-server/common), kept as a compiled descriptor in
export/data/triton_model_config.desc (see export/data/README.md for its source and licence), parsed with
protobuf's strict text format (an unknown field or enum value fails), plus the rules Triton applies when
it loads a model that the schema cannot express. Triton serves the embedder; the prototype head stays
with the client (distilshot.core.head), as in serve/.
"""

from __future__ import annotations

import re
import shutil
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
    config.input.add(name=graph.input, data_type="TYPE_FP32", dims=[prep.channels, prep.height, prep.width])
    for output in graph.outputs:
        config.output.add(name=output.name, data_type="TYPE_FP32", dims=[output.dim])
    config.dynamic_batching.preferred_batch_size.append(CHUNK_SIZE)
    config.dynamic_batching.max_queue_delay_microseconds = MAX_QUEUE_DELAY_US
    config.instance_group.add(count=1, kind="KIND_GPU" if kind == "plan" else "KIND_AUTO")
    return text_format.MessageToString(config)


def validate_config(text: str, folder: str) -> Any:
    """Parses a config.pbtxt with Triton's schema and checks what Triton checks on load; returns the
    message or raises DistilshotError naming the problem."""
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
    if config.platform not in {p for p, _ in PLATFORMS.values()}:
        problems.append(f"platform {config.platform!r} is not one distilshot writes")
    if config.HasField("dynamic_batching") and config.max_batch_size < 1:
        problems.append("dynamic batching needs max_batch_size >= 1")
    if any(b > config.max_batch_size for b in config.dynamic_batching.preferred_batch_size):
        problems.append("a preferred batch size exceeds max_batch_size")
    for tensor in [*config.input, *config.output]:
        if tensor.data_type == 0 or not tensor.dims or any(d == 0 or d < -1 for d in tensor.dims):
            problems.append(f"tensor {tensor.name!r} needs a data type and dims > 0 (or -1)")
    if not config.input or not config.output:
        problems.append("a model needs inputs and outputs")
    if problems:
        raise DistilshotError(f"{folder}/config.pbtxt: {'; '.join(problems)}")
    return config


SERVED_BY = ()  # serve backends that run what it adds


def build(job: FormatJob) -> Staged:
    """The repository: one model per ONNX graph and per TensorRT plan this machine built."""
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
    for name, (kind, source) in models.items():
        folder = job.edit.staging / REPOSITORY / name
        (folder / "1").mkdir(parents=True)
        shutil.copyfile(source, folder / "1" / PLATFORMS[kind][1])
        (folder / "config.pbtxt").write_text(model_config(manifest, name, kind))
    return Staged(remove=[f for f in manifest.files if _in_repository(f)], notes=notes)


@export_format(
    "triton",
    adds=f"{REPOSITORY}/, a Triton Inference Server model repository",
    precisions=PRECISIONS,
    extra="gpu",
    backends=SERVED_BY,
    build=build,
)
def check(job: FormatJob, preview: Manifest, staged: Staged) -> Checked:
    """Every staged config.pbtxt against Triton's schema and load rules."""
    models = sorted(p.name for p in (job.edit.staging / REPOSITORY).iterdir())
    for name in models:
        validate_config((job.edit.staging / REPOSITORY / name / "config.pbtxt").read_text(), name)
    return Checked(offline=[{"check": "triton-config", "models": models, "valid": True}])


def _in_repository(name: str) -> bool:
    """Whether a bundle file belongs to a Triton repository: triton/... or, after a repeated export,
    triton-2/... (see BundleEdit's naming)."""
    return re.fullmatch(rf"{REPOSITORY}(-\d+)?", name.split("/", 1)[0]) is not None
