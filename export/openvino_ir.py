"""OpenVINO IR: the bundle's fp32 graph and, if present, its int8 Q/DQ graph converted to OpenVINO's own
format (.xml + .bin, weights kept in fp32), so the OpenVINO backend skips the ONNX import at start-up.
Each IR computes what its ONNX source computes and shares its fingerprint; the check runs both on the
same evaluation episodes (OpenVINO vs ONNX Runtime) and refuses an IR whose predictions disagree."""

from __future__ import annotations

from distilshot.core.manifest import Graph, Manifest
from distilshot.errors import DistilshotError
from distilshot.export.engine_parity import compare_engines
from distilshot.export.format_table import Checked, FormatJob, Staged, export_format
from distilshot.serve.engines.onnxruntime_engine import OnnxRuntimeEngine
from distilshot.serve.engines.openvino_engine import INSTALL_HINT, OpenVinoEngine

ROLES = {"fp32": "embedder-openvino", "int8": "embedder-int8-openvino"}
# least fraction of evaluation queries OpenVINO must classify as ONNX Runtime does, per precision: fp32
# differs by float rounding only; int8 kernels may round a value to the neighbouring quantization step
MIN_AGREEMENT = {"fp32": 0.999, "int8": 0.98}


SERVED_BY = ("openvino",)  # serve backends that run what it adds


def build(job: FormatJob) -> Staged:
    """The IR of each ONNX graph it converts (fp32, and int8 where the bundle has it)."""
    try:
        import openvino as ov
    except ImportError:
        raise DistilshotError(f"openvino is not installed: {INSTALL_HINT}") from None
    manifest = job.edit.manifest
    graphs = {}
    for precision, role in ROLES.items():
        source_role = manifest.role_for(precision, "onnx")
        if source_role is None:
            continue
        source = manifest.graphs[source_role]
        model = ov.convert_model(str(job.edit.dir / source.file))
        # save_model halves weights to fp16 by default; the IR must compute what its source computes
        ov.save_model(model, str(job.edit.staging / f"{role}.xml"), compress_to_fp16=False)
        graphs[role] = Graph(
            f"{role}.xml",
            source.input,
            source.outputs,
            precision=precision,
            format="openvino",
            source=source_role,
            weights=f"{role}.bin",
        )
    notes = [f"OpenVINO {ov.__version__}; weights kept fp32; the CPU plugin runs at f32 inference precision"]
    return Staged(graphs=graphs, notes=notes)


@export_format(
    "openvino",
    adds=", ".join(ROLES.values()),
    precisions=tuple(ROLES),
    extra="openvino",
    backends=SERVED_BY,
    build=build,
)
def check(job: FormatJob, preview: Manifest, staged: Staged) -> Checked:
    """Refuses an IR whose predictions disagree with ONNX Runtime's on its source graph."""
    checks = []
    for role, graph in staged.graphs.items():
        reference = OnnxRuntimeEngine(job.edit.dir, preview, precision=graph.precision)
        candidate = OpenVinoEngine(job.edit.dir, preview, precision=graph.precision)
        for check in compare_engines(
            reference, candidate, preview, job.evaluation(), episodes=job.options.episodes
        ):
            if check.agreement < MIN_AGREEMENT[graph.precision]:
                raise DistilshotError(
                    f"OpenVINO's {role} agrees with ONNX Runtime on only {100 * check.agreement:.2f}% of "
                    f"the evaluation queries ({check.protocol}); the bundle is unchanged"
                )
            checks.append(check)
    return Checked(comparisons=checks)
