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
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

from distilshot.errors import BundleError

CONFIG_FILE = "required_operators_and_types.config"  # the name onnxruntime's converter gives it


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
