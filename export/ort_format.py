"""`export --to ort`: a bundle's ONNX graphs in ONNX Runtime's ORT format, for onnxruntime-mobile and
other minimal builds, with the operator config file that their build takes.

The conversion is onnxruntime's own (onnxruntime.tools.convert_onnx_models_to_ort, the API of
`python -m onnxruntime.tools.convert_onnx_models_to_ort`) in its "Fixed" optimization style: the
graph optimizations are applied before saving, except the x86-only NCHWc layout, so the .ort files run
on ARM as on x86 CPUs; the "Runtime" style is for NNAPI and CoreML, which take nodes the converter cannot
foresee. All models are converted together, so one config file lists every operator any of them needs,
with the types each uses: a custom build takes it as
`build.sh --minimal_build --include_ops_by_config <config> --enable_reduced_operator_type_support`.
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

from distilshot.core.manifest import Manifest
from distilshot.core.preprocess import normalise
from distilshot.errors import BundleError, DistilshotError
from distilshot.export.format_table import Checked, FormatJob, Staged, export_format

CONFIG_FILE = "required_operators_and_types.config"  # the name onnxruntime's converter gives it
FOLDER = "ort"  # in the bundle: <graph>.ort for each ONNX graph, and CONFIG_FILE
# most an .ort model's outputs may differ from its ONNX source's, as a share of their largest magnitude:
# the same kernels after the same optimisations, so only the float rounding of a differently fused graph
MAX_DIFFERENCE = 1e-4


@dataclass(frozen=True)
class OrtModels:
    """What `convert_to_ort` wrote: the .ort file of each ONNX file (by the ONNX file's name) and the
    operator config file of them all."""

    models: dict[str, Path]
    config: Path


def convert_to_ort(onnx_files: Sequence[Path], output_dir: Path) -> OrtModels:
    """Converts `onnx_files` (single-file ONNX models with distinct names) to `output_dir`/<stem>.ort and
    writes `output_dir`/CONFIG_FILE for them all."""
    files = [Path(f) for f in onnx_files]
    if not files:
        raise BundleError("no ONNX graphs to convert to ORT format")
    for file in files:
        if not file.is_file() or file.suffix != ".onnx":
            raise BundleError(f"{file} is not an ONNX file (.onnx) to convert to ORT format")
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        raise BundleError(f"the ONNX files to convert must have distinct names, not {names}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    log = io.StringIO()
    # The converter takes one file or every .onnx file under a folder: stage exactly these in one folder.
    with tempfile.TemporaryDirectory() as staging:
        for file in files:
            shutil.copyfile(file, Path(staging) / file.name)
        try:
            with contextlib.redirect_stdout(log):  # it prints its progress
                convert_onnx_models_to_ort(
                    Path(staging),
                    output_dir=output_dir,
                    optimization_styles=[OptimizationStyle.Fixed],
                    enable_type_reduction=True,
                )
        except Exception as error:  # onnxruntime raises its own Fail / InvalidGraph types, or ValueError
            raise BundleError(
                f"onnxruntime could not convert {', '.join(names)} to ORT format: {error}"
            ) from None
    models = {f.name: output_dir / f"{f.stem}.ort" for f in files}
    config = output_dir / CONFIG_FILE
    missing = [str(p) for p in (*models.values(), config) if not p.is_file()]
    if missing:
        raise BundleError(
            f"onnxruntime's ORT conversion did not write {', '.join(missing)}: {log.getvalue()}"
        )
    return OrtModels(models, config)


def _onnx_files(manifest: Manifest) -> list[str]:
    """Every ONNX graph of the bundle: the embedder's precisions and the app graphs."""
    files = [g.file for g in manifest.graphs.values() if g.format == "onnx"]
    files += [g.file for g in (manifest.preprocess_graph, manifest.head_graph) if g is not None]
    return files


def _in_folder(name: str) -> bool:
    """Whether a bundle file is part of an ORT export: ort/... or, after a repeated one, ort-2/..."""
    return re.fullmatch(rf"{FOLDER}(-\d+)?", name.split("/", 1)[0]) is not None


def build(job: FormatJob) -> Staged:
    """The ORT model of every ONNX graph, with their operator config, in ort/ (replacing an earlier one)."""
    bundle, manifest = job.edit.dir, job.edit.manifest
    convert_to_ort([bundle / f for f in _onnx_files(manifest)], job.edit.staging / FOLDER)
    notes = [
        f"ONNX Runtime {ort.__version__}, Fixed optimizations; {FOLDER}/{CONFIG_FILE} for a reduced build"
    ]
    return Staged(remove=[f for f in manifest.files if _in_folder(f)], notes=notes)


def _session(model: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])


def _feeds(file: str, manifest: Manifest, pixels: np.ndarray, bundle: Path) -> dict[str, np.ndarray]:
    """Real inputs for the bundle graph `file`, from evaluation images (uint8 NHWC at model size): the
    pixels for the preprocessing graph, their embeddings (the first five as prototypes) for the head."""
    if manifest.preprocess_graph is not None and file == manifest.preprocess_graph.file:
        return {manifest.preprocess_graph.input: pixels}
    x = normalise(pixels, manifest.preprocessing)
    if manifest.head_graph is None or file != manifest.head_graph.file:
        return {manifest.embedder.input: x}
    embedder = _session(bundle / manifest.embedder.file)
    outputs = list(manifest.head.weights)
    embeddings = dict(zip(outputs, embedder.run(outputs, {manifest.embedder.input: x}), strict=True))
    suffix = manifest.head_graph.prototypes_suffix
    return {**embeddings, **{o + suffix: embeddings[o][:5] for o in outputs}}


@export_format(
    "ort",
    adds=f"{FOLDER}/: every ONNX graph in ORT format and {CONFIG_FILE}, for ONNX Runtime mobile builds",
    precisions=("fp32", "fp16", "int8"),
    extra="cpu",
    backends=(),  # apps load them with ONNX Runtime's mobile packages
    build=build,
)
def check(job: FormatJob, preview: Manifest, staged: Staged) -> Checked:
    """Loads every .ort model and refuses one whose outputs differ from its ONNX source's on real images
    beyond float rounding (MAX_DIFFERENCE of the outputs' scale)."""
    bundle, manifest = job.edit.dir, job.edit.manifest
    pixels = job.evaluation().images[:64]
    checked = []
    for file in _onnx_files(manifest):
        feeds = _feeds(file, manifest, pixels, bundle)
        ours = _session(bundle / file).run(None, feeds)
        theirs = _session(job.edit.staging / FOLDER / f"{Path(file).stem}.ort").run(None, feeds)
        worst = max(
            float(np.abs(a - b).max() / max(float(np.abs(a).max()), 1e-12))
            for a, b in zip(ours, theirs, strict=True)
        )
        if worst > MAX_DIFFERENCE:
            raise DistilshotError(
                f"the ORT model of {file} differs from it by {worst:.2e} of its outputs' scale on evaluation "
                f"images (at most {MAX_DIFFERENCE:.0e}); the bundle is unchanged"
            )
        checked.append({"check": "ort-vs-onnx", "graph": file, "max_relative_difference": worst})
    return Checked(offline=checked)
