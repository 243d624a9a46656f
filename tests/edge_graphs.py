"""Real images and a small real embedder for the edge-graph tests (pixels, head and ORT-format graphs).

`conv_embedder` is a three-layer ReLU ConvNet with seeded He-initialised weights, written with onnx.helper
so that these tests need no torch: like a trained backbone it responds to local pixel detail, which is
what preprocessing parity has to preserve. The images are Omniglot drawings (105 px, mode "1") and
CIFAR-100 photos (32 px RGB) from the shared data folder."""

from __future__ import annotations

import itertools
import os
import pickle
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from distilshot.core.manifest import Head, Preprocessing

DATA = Path(os.environ["DISTILSHOT_DATA"])
OMNIGLOT_PREP = Preprocessing(height=28, width=28, channels=1, mean=(0.92388,), std=(0.213133,))
CIFAR_PREP = Preprocessing(
    height=32, width=32, channels=3, mean=(0.507, 0.487, 0.441), std=(0.267, 0.256, 0.276)
)
EMBEDDING = "embedding"


def omniglot_drawings(count: int) -> list[Image.Image]:
    """`count` evaluation-set drawings spread over the alphabets, as stored (105x105, mode "1")."""
    paths = sorted((DATA / "omniglot" / "images_evaluation").glob("*/*/*.png"))
    step = len(paths) // count
    return [Image.open(p) for p in paths[::step][:count]]


def cifar_photos(count: int) -> list[Image.Image]:
    """`count` CIFAR-100 test photos (32x32 RGB), spread over the file."""
    with open(DATA / "cifar-100-python" / "test", "rb") as f:
        data = pickle.load(f, encoding="latin1")["data"]
    chosen = data[:: len(data) // count][:count].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return [Image.fromarray(np.ascontiguousarray(image)) for image in chosen]


def conv_embedder(channels: int, size: int, seed: int = 0) -> onnx.ModelProto:
    """ "image" float32 [N, channels, size, size] -> "embedding" [N, 64 * (size // 8)^2], the flattened last
    feature map as ConvNet-4's; opset 18 like the exporter's."""
    rng = np.random.default_rng(seed)
    widths = [channels, 16, 32, 64]
    nodes, initializers, x = [], [], "image"
    for i, (cin, cout) in enumerate(itertools.pairwise(widths)):
        w = rng.normal(0, np.sqrt(2 / (cin * 9)), (cout, cin, 3, 3)).astype(np.float32)
        initializers += [
            numpy_helper.from_array(w, f"w{i}"),
            numpy_helper.from_array(np.zeros(cout, np.float32), f"b{i}"),
        ]
        nodes.append(helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"conv{i}"], pads=[1, 1, 1, 1]))
        x = f"conv{i}"
        if i < len(widths) - 2:  # no ReLU last, so that embeddings take both signs as a trained model's do
            nodes.append(helper.make_node("Relu", [x], [f"relu{i}"]))
            x = f"relu{i}"
        nodes.append(helper.make_node("MaxPool", [x], [f"pool{i}"], kernel_shape=[2, 2], strides=[2, 2]))
        x = f"pool{i}"
    nodes.append(helper.make_node("Flatten", [x], [EMBEDDING]))
    dim = widths[-1] * (size // 8) ** 2
    graph = helper.make_graph(
        nodes,
        "embedder",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", channels, size, size])],
        [helper.make_tensor_value_info(EMBEDDING, TensorProto.FLOAT, ["batch", dim])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.checker.check_model(model, full_check=True)
    return model


def session(model: onnx.ModelProto | Path | str) -> ort.InferenceSession:
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"])


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity, in float64."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


EPS32 = float(np.finfo(np.float32).eps)


def logit_tolerance(head: Head, queries: dict[str, np.ndarray], means: dict[str, np.ndarray]) -> np.ndarray:
    """The per-logit bound of the head graph against PrototypeHead, [N, K] (tests/test_head_graph.py's
    docstring argues it): sum_o |w_o| * (D_o + 4) * eps32 * scale_o / temperature."""
    bound = 0.0
    for output, weight in head.weights.items():
        q, p = queries[output].astype(np.float64), means[output].astype(np.float64)
        if head.metric == "cosine":
            scale = np.ones((len(q), len(p)))
        else:
            scale = (np.linalg.norm(q, axis=1)[:, None] + np.linalg.norm(p, axis=1)[None, :]) ** 2
        bound = bound + abs(weight) * (q.shape[1] + 4) * EPS32 * scale
    return bound / head.temperature
