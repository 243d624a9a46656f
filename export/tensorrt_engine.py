"""TensorRT: what a bundle needs to run as TensorRT plans, and the checks that can run without a GPU.

- An fp16 graph (fp16 weights and activations behind fp32 inputs and outputs): TensorRT 11 builds strongly
  typed networks only, so fp16 comes from the graph's own types, not from a builder flag. Checked against
  the fp32 graph on the evaluation episodes (ONNX Runtime runs it on the CPU).
- Offline checks on every ONNX graph of the bundle: each operator and the type it is fed are in TensorRT's
  supported ONNX operator list (export/data/tensorrt_onnx_ops.json, with its source), the restrictions
  that apply to our graphs hold (zero-point-free Q/DQ, constant reduction axes, 2-D pooling), and every
  shape is static but the batch.
- Where tensorrt and a CUDA GPU are present, the plans are built into the engine cache and each is
  compared with ONNX Runtime on the evaluation episodes; elsewhere the serving GPU builds them on first use.
  A TensorRT that is there but fails on a graph (EngineFailed: parse, build, plan load, cache, CUDA) fails
  the export with its message; only a missing one (EngineUnavailable) is a note.
"""

from __future__ import annotations

import json
from contextlib import closing
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from distilshot.core.manifest import Graph, Manifest
from distilshot.errors import DistilshotError
from distilshot.export.engine_parity import compare_engines
from distilshot.export.format_table import Checked, FormatJob, Staged, export_format
from distilshot.serve.engines.base import EngineUnavailable
from distilshot.serve.engines.onnxruntime_engine import OnnxRuntimeEngine

ROLE = "embedder-fp16"
FILE = "embedder-fp16.onnx"
FP16_MIN_AGREEMENT = 0.99
# least share of evaluation queries a plan must classify as ONNX Runtime does on the same graph: kernels
# differ in rounding only, most for int8 (a value may land on the neighbouring quantization step)
PLAN_MIN_AGREEMENT = {"fp32": 0.999, "fp16": 0.99, "int8": 0.98}
TYPE_NAMES = {
    onnx.TensorProto.FLOAT: "FP32",
    onnx.TensorProto.FLOAT16: "FP16",
    onnx.TensorProto.BFLOAT16: "BF16",
    onnx.TensorProto.INT32: "INT32",
    onnx.TensorProto.INT64: "INT64",
    onnx.TensorProto.INT8: "INT8",
    onnx.TensorProto.UINT8: "UINT8",
    onnx.TensorProto.BOOL: "BOOL",
    onnx.TensorProto.DOUBLE: "DOUBLE",
}
POOLS = ("MaxPool", "AveragePool", "LpPool")


def supported_ops() -> dict[str, Any]:
    """TensorRT's ONNX operator support matrix, as kept in export/data (see its "source")."""
    text = resources.files("distilshot.export").joinpath("data/tensorrt_onnx_ops.json").read_text()
    return json.loads(text)


@dataclass(frozen=True)
class OfflineCheck:
    graph: str
    operators: dict[str, int]  # op type -> count
    problems: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": "tensorrt-offline",
            "graph": self.graph,
            "operators": self.operators,
            "problems": self.problems,
        }


def check_graph(model: onnx.ModelProto, name: str = "graph") -> OfflineCheck:
    """Everything about an ONNX graph that decides, without a GPU, whether TensorRT can take it."""
    table = supported_ops()
    low, high = table["opset"]
    problems = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not low <= opset <= high:
        problems.append(f"opset {opset} is outside TensorRT's {low}..{high}")
    try:
        graph = _infer_shapes(model).graph
    except Exception as error:  # the symbolic inference asserts on graphs it cannot follow
        problems.append(f"shapes cannot be inferred ({type(error).__name__} {error}); TensorRT needs them")
        graph = onnx.shape_inference.infer_shapes(model).graph
    types = {v.name: v.type.tensor_type for v in [*graph.input, *graph.value_info, *graph.output]}
    constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    constants.update(
        {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node if n.op_type == "Constant"}
    )
    counts: dict[str, int] = {}
    for node in graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
        where = f"{node.op_type} node {node.name or node.output[0]!r}"
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"{where} is in domain {node.domain!r}, which TensorRT does not parse")
            continue
        allowed = table["operators"].get(node.op_type)
        if allowed is None:
            problems.append(f"{where}: TensorRT {table['tensorrt']} does not support {node.op_type}")
            continue
        data = types.get(node.input[0]) if node.input else None
        if data is not None and data.elem_type and node.op_type != "Constant":
            kind = TYPE_NAMES.get(data.elem_type, str(data.elem_type))
            if kind not in allowed:
                problems.append(f"{where} takes {kind}; TensorRT supports {node.op_type} on {allowed} only")
        problems += _restrictions(node, where, constants)
    problems += _static_but_batch(graph)
    return OfflineCheck(name, dict(sorted(counts.items())), problems)


def _restrictions(node: onnx.NodeProto, where: str, constants: dict[str, np.ndarray]) -> list[str]:
    """The restrictions of TensorRT's matrix that apply to operators our graphs use."""
    problems = []
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
        zero = node.input[2] if len(node.input) > 2 else ""
        if zero and (zero not in constants or np.any(constants[zero] != 0)):
            problems.append(f"{where} needs a zero point of 0 (symmetric quantization)")
        quantized = constants.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if quantized is not None and quantized.dtype != np.int8:
            problems.append(f"{where} dequantizes {quantized.dtype}; TensorRT takes int8")
    reduce_axes = node.input[1] if node.op_type.startswith("Reduce") and len(node.input) > 1 else ""
    if reduce_axes and reduce_axes not in constants:
        problems.append(f"{where} must take its axes from an initializer")
    if node.op_type in POOLS or node.op_type == "Conv":
        kernel = attributes.get("kernel_shape")
        if kernel is not None and len(kernel) not in (2, 3):
            problems.append(f"{where} is {len(kernel)}-D; TensorRT takes 2-D or 3-D only")
        if node.op_type in POOLS and any(d != 1 for d in attributes.get("dilations", [])):
            problems.append(f"{where} has dilations; TensorRT pools without")
    if node.op_type == "MaxPool" and len([o for o in node.output if o]) > 1:
        problems.append(f"{where} returns indices, which TensorRT does not support")
    if node.op_type in ("Squeeze", "Unsqueeze") and len(node.input) > 1 and node.input[1] not in constants:
        problems.append(f"{where} must take constant axes")
    return problems


def _infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Types and shapes of every tensor, inferred afresh by ONNX Runtime's symbolic shape inference (the
    one its TensorRT provider relies on), which carries the batch symbol through Reshape and Q/DQ."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    model = onnx.ModelProto.FromString(model.SerializeToString())
    del model.graph.value_info[:]  # stale annotations from exporters and quantizers
    return SymbolicShapeInference.infer_shapes(model, auto_merge=False)


def _static_but_batch(graph: onnx.GraphProto) -> list[str]:
    """Every tensor is [batch or static, static...]: the one dynamic axis is the batch the optimisation
    profile covers, and the graph's input and outputs lead with it."""
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    batch = {d.dim_param for i in inputs for d in i.type.tensor_type.shape.dim[:1] if d.dim_param}
    if len(inputs) != 1 or len(batch) != 1:
        return [f"the graph must have one input with a named batch axis, not {[i.name for i in inputs]}"]
    problems = []
    boundary = {v.name for v in [*inputs, *graph.output]}
    for value in [*inputs, *graph.output, *graph.value_info]:
        dims = list(value.type.tensor_type.shape.dim) if value.type.HasField("tensor_type") else []
        if not dims:
            continue
        leads = dims[0].dim_param in batch
        if value.name in boundary and not leads:
            problems.append(f"{value.name!r} does not lead with the batch axis")
        dynamic = [d.dim_param or "?" for d in dims[1 if leads else 0 :] if not d.HasField("dim_value")]
        if dynamic:
            problems.append(f"tensor {value.name!r} has dynamic dims {dynamic} besides the batch")
    return problems


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """fp16 weights and activations with fp32 inputs and outputs (Casts at both ends)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    converted = convert_float_to_float16(model, keep_io_types=True)
    _topological_sort(converted.graph)  # the converter appends its input Casts at the end
    onnx.checker.check_model(converted, full_check=True)
    return converted


def _topological_sort(graph: onnx.GraphProto) -> None:
    known = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in known for i in n.input)]
        if not ready:
            raise DistilshotError("the fp16 graph has a cycle or an undefined input")
        for node in ready:
            ordered.append(node)
            known.update(node.output)
        pending = [n for n in pending if n not in ready]
    del graph.node[:]
    graph.node.extend(ordered)


def onnx_graphs(manifest: Manifest) -> dict[str, Graph]:
    return {role: g for role, g in manifest.graphs.items() if g.format == "onnx"}


SERVED_BY = ("tensorrt", "cuda", "onnxruntime", "openvino")  # serve backends that run what it adds


def build(job: FormatJob) -> Staged:
    """The fp16 graph of the bundle's fp32 one."""
    embedder = job.edit.manifest.embedder
    onnx.save(to_fp16(onnx.load(job.edit.dir / embedder.file)), job.edit.staging / FILE)
    return Staged(
        graphs={ROLE: Graph(FILE, embedder.input, embedder.outputs, precision="fp16")},
        notes=[f"ONNX operators checked against TensorRT {supported_ops()['tensorrt']}'s list"],
    )


@export_format("tensorrt", adds=ROLE, precisions=("fp16",), extra="gpu", backends=SERVED_BY, build=build)
def check(job: FormatJob, preview: Manifest, staged: Staged) -> Checked:
    """The offline checks on every ONNX graph, the fp16 graph against fp32 on the evaluation episodes,
    and, where TensorRT runs, each plan against ONNX Runtime on the same graph."""
    from distilshot.serve.engines import tensorrt_engine

    bundle = job.edit.dir
    offline = [check_graph(onnx.load(bundle / g.file), role) for role, g in onnx_graphs(preview).items()]
    problems = [f"{c.graph}: {p}" for c in offline for p in c.problems]
    if problems:
        raise DistilshotError("TensorRT could not take the bundle's graphs: " + "; ".join(problems))
    data = job.evaluation()
    fp32 = OnnxRuntimeEngine(bundle, preview)
    fp16 = OnnxRuntimeEngine(bundle, preview, precision="fp16")
    checks = compare_engines(fp32, fp16, preview, data, episodes=job.options.episodes)
    if checks[0].agreement < FP16_MIN_AGREEMENT:
        raise DistilshotError(f"the fp16 graph disagrees with fp32 ({checks[0].protocol}); bundle unchanged")
    notes = []
    try:
        for precision in sorted({g.precision for g in onnx_graphs(preview).values()}):
            with closing(tensorrt_engine.TensorRTEngine(bundle, preview, precision)) as engine:
                reference = OnnxRuntimeEngine(bundle, preview, precision=precision)
                for check in compare_engines(reference, engine, preview, data, episodes=job.options.episodes):
                    if check.agreement < PLAN_MIN_AGREEMENT[precision]:
                        raise DistilshotError(
                            f"the TensorRT plan of {engine.role} disagrees with ONNX Runtime on "
                            f"{100 * (1 - check.agreement):.2f}% of the queries ({check.protocol}); "
                            "the bundle is unchanged"
                        )
                    checks.append(check)
            notes.append(f"built {engine.role} into {engine.plan_path}")
    except EngineUnavailable as why:
        notes.append(f"TensorRT plans not built here ({why}); the tensorrt backend builds them on first use")
    return Checked(comparisons=checks, offline=[c.to_dict() for c in offline], notes=notes)
