"""The prototype head as an ONNX graph, for apps and Triton ensembles that score without numpy:
distilshot/core/head.py's `PrototypeHead.logits`, operation for operation in float32.

Inputs, per weighted output `o` of the manifest head: `o` float32 [N, D_o], the query embeddings (named
as the embedder's output, so the graph chains onto the embedder or the pixels graph with
onnx.compose.merge_models and io_map [(o, o)]), and `o + PROTOTYPES_SUFFIX` float32 [K, D_o], the class
prototypes (the means of each class's support embeddings, rows in the app's label order). Output `LOGITS`
float32 [N, K] = sum_o weights[o] * s_o / temperature, s_o the cosine similarity (vectors divided by
max(norm, 1e-12)) or the negative squared Euclidean distance ||q||^2 - 2 q.p + ||p||^2 clipped at 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from distilshot.core.head import EPS
from distilshot.core.manifest import Head, Manifest
from distilshot.errors import BundleError

LOGITS = "logits"
PROTOTYPES_SUFFIX = "_prototypes"
OPSET = 18


def head_model(head: Head, dims: Mapping[str, int]) -> onnx.ModelProto:
    """The head graph for `head`; `dims` gives the width of each embedder output it weights."""
    missing = sorted(set(head.weights) - set(dims))
    if missing:
        raise BundleError(
            f"head.weights names outputs {missing} that have no dim; the embedder has {sorted(dims)}"
        )
    nodes: list[onnx.NodeProto] = []
    # each metric's constants only: ONNX Runtime warns about an unused initializer
    values = {"temperature": np.float32(head.temperature), "axis1": np.array([1], np.int64)}
    if head.metric == "cosine":
        values |= {"eps": np.float32(EPS)}
    else:
        values |= {"minus2": np.float32(-2), "zero": np.float32(0)}
    constants = [numpy_helper.from_array(v, f"head/{k}") for k, v in values.items()]
    inputs, total = [], None

    def node(op_type: str, node_inputs: list[str], output: str, **attributes: object) -> str:
        nodes.append(helper.make_node(op_type, node_inputs, [output], name=output, **attributes))
        return output

    def unit(vectors: str, at: str) -> str:
        """Rows of `vectors` divided by max(their L2 norm, EPS), as head.py's `_unit`."""
        norms = node("ReduceL2", [vectors, "head/axis1"], at + "_norm", keepdims=1)
        return node("Div", [vectors, node("Max", [norms, "head/eps"], at + "_safe_norm")], at + "_unit")

    for output, weight in head.weights.items():
        prototypes = output + PROTOTYPES_SUFFIX
        inputs += [
            helper.make_tensor_value_info(output, TensorProto.FLOAT, ["queries", dims[output]]),
            helper.make_tensor_value_info(prototypes, TensorProto.FLOAT, ["classes", dims[output]]),
        ]
        at = f"head/{output}/"
        if head.metric == "cosine":
            unit_q = unit(output, at + "query")
            unit_p = unit(prototypes, at + "prototype")
            similarity = node(
                "MatMul", [unit_q, node("Transpose", [unit_p], at + "unit_prototypes_t")], at + "cos"
            )
        else:
            dots = node("MatMul", [output, node("Transpose", [prototypes], at + "prototypes_t")], at + "dots")
            q_sq = node("ReduceSumSquare", [output, "head/axis1"], at + "query_sq", keepdims=1)  # [N, 1]
            p_sq = node("ReduceSumSquare", [prototypes, "head/axis1"], at + "prototype_sq", keepdims=0)  # [K]
            # in PrototypeHead's order: -2 q.p, + ||q||^2, + ||p||^2, clipped at 0 against rounding below it
            d = node(
                "Add",
                [node("Add", [node("Mul", [dots, "head/minus2"], at + "d1"), q_sq], at + "d2"), p_sq],
                at + "d3",
            )
            similarity = node(
                "Neg", [node("Max", [d, "head/zero"], at + "sq_distance")], at + "neg_sq_distance"
            )
        weighted = node("Mul", [similarity, f"head/{output}/weight"], at + "weighted")
        constants.append(numpy_helper.from_array(np.float32(weight), f"head/{output}/weight"))
        total = weighted if total is None else node("Add", [total, weighted], at + "sum")
    nodes.append(helper.make_node("Div", [total, "head/temperature"], [LOGITS], name="head/logits"))
    graph = helper.make_graph(
        nodes,
        "prototype_head",
        inputs,
        [helper.make_tensor_value_info(LOGITS, TensorProto.FLOAT, ["queries", "classes"])],
        constants,
    )
    opsets = [helper.make_opsetid("", OPSET)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(model, full_check=True)
    return model


def write_head_graph(manifest: Manifest, path: Path) -> Path:
    """Writes the head graph of a bundle's manifest to `path` and returns `path`."""
    dims = {o.name: o.dim for o in manifest.embedder.outputs}
    onnx.save(head_model(manifest.head, dims), str(path))
    return Path(path)
