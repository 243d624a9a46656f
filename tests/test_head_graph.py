"""export/head_graph.py: the prototype head as an ONNX graph gives PrototypeHead's logits (distilshot/core/
head.py) on random and real embeddings, both metrics, two weighted outputs, in onnxruntime.

Tolerance, per logit: both sides compute in float32 but sum the D products of each dot product in their own
order (numpy's BLAS, onnxruntime's MLAS), which may differ by up to about D rounding errors of the terms'
scale: 1 for cosine (unit vectors), (||q|| + ||p||)^2 for the expanded squared distance. So
|difference| <= sum_o |w_o| * (D_o + 4) * eps32 * scale_o / temperature, eps32 = 2^-23; a wrong weight,
temperature, metric or clipping is off by orders of magnitude more."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from edge_graphs import DATA, OMNIGLOT_PREP, conv_embedder, logit_tolerance, session
from onnx import compose
from PIL import Image

from distilshot.core.head import PrototypeHead, class_mean
from distilshot.core.manifest import Head
from distilshot.core.preprocess import flatten, preprocess
from distilshot.errors import BundleError
from distilshot.export.head_graph import LOGITS, PROTOTYPES_SUFFIX, head_model
from distilshot.export.pixels_graph import PIXELS_INPUT, pixels_model

HEADS = [
    Head("cosine", {"global": 0.7, "local": 1.6}, temperature=0.05),
    Head("euclidean", {"global": 1.0, "local": 0.25}, temperature=1.3),
    Head("euclidean", {"global": 1.0}, temperature=64.0),  # one of two outputs weighted
]


def graph_logits(head: Head, queries: dict[str, np.ndarray], means: dict[str, np.ndarray]) -> np.ndarray:
    dims = {o: q.shape[1] for o, q in queries.items()}
    feeds = {o: queries[o] for o in head.weights} | {o + PROTOTYPES_SUFFIX: means[o] for o in head.weights}
    return session(head_model(head, dims)).run([LOGITS], feeds)[0]


def check(head: Head, queries: dict[str, np.ndarray], means: dict[str, np.ndarray]) -> None:
    labels = [f"class {k}" for k in range(len(next(iter(means.values()))))]
    python = PrototypeHead(head)
    expected = python.logits(queries, python.prepare(labels, means))
    got = graph_logits(head, queries, means)
    assert got.shape == expected.shape and got.dtype == np.float32
    assert (np.abs(got.astype(np.float64) - expected) <= logit_tolerance(head, queries, means)).all()


def random_embeddings(seed: int, n: int, k: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    dims = {"global": 64, "local": 640}
    centres = {o: rng.normal(0, 3, (k, d)).astype(np.float32) for o, d in dims.items()}
    queries = {
        o: (c[rng.integers(0, k, n)] + rng.normal(0, 1, (n, c.shape[1]))).astype(np.float32)
        for o, c in centres.items()
    }
    means = {
        o: np.stack(
            [class_mean(c[i] + rng.normal(0, 1, (5, c.shape[1])).astype(np.float32)) for i in range(k)]
        )
        for o, c in centres.items()
    }
    return queries, means


def omniglot_embeddings() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Real embeddings: two ConvNets' ("global", "local") of Omniglot drawings; prototypes are the class
    means of 5 drawings of each of 12 characters, queries 3 other drawings of each."""
    characters = sorted((DATA / "omniglot" / "images_evaluation").glob("*/*"))[::50][:12]
    drawings = [[Image.open(p) for p in sorted(c.glob("*.png"))[:8]] for c in characters]
    outputs = {}
    for output, seed in (("global", 0), ("local", 1)):
        run = session(conv_embedder(1, 28, seed))
        outputs[output] = [run.run(None, {"image": preprocess(d, OMNIGLOT_PREP)})[0] for d in drawings]
    queries = {o: np.concatenate([e[5:] for e in per_class]) for o, per_class in outputs.items()}
    means = {o: np.stack([class_mean(e[:5]) for e in per_class]) for o, per_class in outputs.items()}
    return queries, means


@pytest.mark.parametrize("head", HEADS, ids=lambda h: f"{h.metric}-{len(h.weights)}")
def test_the_head_graph_scores_as_the_prototype_head(head):
    for seed, (n, k) in enumerate([(1, 2), (17, 5), (64, 300)]):
        check(head, *random_embeddings(seed, n, k))
    check(head, *omniglot_embeddings())


def test_the_tolerance_tells_a_wrong_head_apart():
    queries, means = omniglot_embeddings()
    right = HEADS[0]
    for wrong in (Head("cosine", {"global": 0.7, "local": 1.5}, 0.05), Head("cosine", right.weights, 0.051)):
        difference = np.abs(graph_logits(wrong, queries, means) - graph_logits(right, queries, means))
        assert (difference > logit_tolerance(right, queries, means)).any()


def test_zero_vectors_score_zero_cosine_as_in_python():
    head = Head("cosine", {"global": 1.0}, 1.0)
    queries = {"global": np.zeros((2, 8), np.float32)}
    means = {"global": np.eye(3, 8, dtype=np.float32) * np.float32([[0], [1], [2]])}
    check(head, queries, means)
    assert not np.isnan(graph_logits(head, queries, means)).any()


def test_the_head_chains_onto_the_pixels_graph():
    """merge_models with io_map [(o, o)] gives one graph from pixels to logits: the head's scores of the
    pixels graph's embeddings."""
    head = Head("euclidean", {"embedding": 1.0}, 2.0)
    embedder = conv_embedder(1, 28)
    drawings = [
        Image.open(p) for p in sorted((DATA / "omniglot" / "images_evaluation").glob("*/*/*.png"))[:10]
    ]
    pixels = pixels_model(embedder, OMNIGLOT_PREP)
    scores = head_model(head, {"embedding": embedder.graph.output[0].type.tensor_type.shape.dim[1].dim_value})
    scores.ir_version = pixels.ir_version  # merge_models wants both the same
    chained = session(compose.merge_models(pixels, scores, io_map=[("embedding", "embedding")]))
    feeds = [{PIXELS_INPUT: np.asarray(flatten(d, "L"))[None, :, :, None]} for d in drawings]
    embeddings = np.concatenate([session(pixels).run(None, f)[0] for f in feeds])
    means = {"embedding": np.stack([class_mean(embeddings[:5]), class_mean(embeddings[5:])])}
    python = PrototypeHead(head)
    expected = python.logits({"embedding": embeddings}, python.prepare(["a", "b"], means))
    prototypes = {"embedding" + PROTOTYPES_SUFFIX: means["embedding"]}
    got = np.concatenate([chained.run([LOGITS], f | prototypes)[0] for f in feeds])
    assert (np.abs(got - expected) <= logit_tolerance(head, {"embedding": embeddings}, means)).all()


def test_a_head_naming_an_output_without_a_dim_is_refused():
    with pytest.raises(BundleError, match=r"names outputs \['local'\] that have no dim"):
        head_model(Head("cosine", {"global": 1.0, "local": 1.0}), {"global": 4})
    assert isinstance(head_model(Head("cosine", {"global": 1.0}), {"global": 4, "local": 3}), onnx.ModelProto)
