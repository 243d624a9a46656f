"""The numpy prototype head against small examples worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from distilshot.core.head import PrototypeHead, class_mean, softmax, top_k_indices
from distilshot.core.manifest import Head


def logits(head: Head, queries: dict, means: dict, labels=("a", "b")) -> np.ndarray:
    h = PrototypeHead(head)
    f32 = {k: np.array(v, dtype=np.float32) for k, v in queries.items()}
    return h.logits(
        f32, h.prepare(list(labels), {k: np.array(v, dtype=np.float32) for k, v in means.items()})
    )


def test_class_mean_is_the_prototype():
    shots = np.array([[1, 2], [3, 6], [2, 1]], dtype=np.float32)
    assert np.array_equal(class_mean(shots), np.array([2, 3], dtype=np.float32))
    assert class_mean(shots).dtype == np.float32


def test_euclidean_by_hand():
    # q = (0, 0); prototypes (1, 0) and (0, 2): squared distances 1 and 4
    out = logits(Head("euclidean", {"e": 1.0}), {"e": [[0, 0], [1, 2]]}, {"e": [[1, 0], [0, 2]]})
    # second query (1, 2): distances 4 and 1
    assert out.dtype == np.float32
    assert np.allclose(out, [[-1, -4], [-4, -1]])


def test_euclidean_exact_match_is_zero_not_positive():
    p = np.random.default_rng(0).normal(size=(3, 64)).astype(np.float32) * 100
    out = logits(Head("euclidean", {"e": 1.0}), {"e": p}, {"e": p}, labels="abc")
    # zero up to float32 rounding of ||q||^2 + ||p||^2 - 2 q.p (summed in another order by the GEMM,
    # so the residue depends on the BLAS build), never a positive "distance"
    sq_norms = (p.astype(np.float64) ** 2).sum(axis=1)
    assert (out <= 0).all() and np.all(np.abs(np.diag(out)) <= 1e-6 * sq_norms)
    assert (out.argmax(axis=1) == np.arange(3)).all()


def test_temperature_divides_logits():
    out = logits(Head("euclidean", {"e": 1.0}, temperature=2.0), {"e": [[0, 0]]}, {"e": [[1, 0], [0, 2]]})
    assert np.allclose(out, [[-0.5, -2.0]])
    expected = [
        math.exp(-0.5) / (math.exp(-0.5) + math.exp(-2)),
        math.exp(-2) / (math.exp(-0.5) + math.exp(-2)),
    ]
    assert np.allclose(softmax(out), [expected])


def test_cosine_by_hand():
    # q = (1, 0) against (1, 1) -> 1/sqrt(2) and (0, 3) -> 0; q = (0, 5) -> 1/sqrt(2) and 1
    out = logits(Head("cosine", {"e": 1.0}), {"e": [[1, 0], [0, 5]]}, {"e": [[1, 1], [0, 3]]})
    r = 1 / math.sqrt(2)
    assert np.allclose(out, [[r, 0], [r, 1]], atol=1e-6)


def test_cosine_of_a_zero_vector_is_zero():
    out = logits(Head("cosine", {"e": 1.0}), {"e": [[0, 0]]}, {"e": [[1, 1], [0, 3]]})
    assert np.array_equal(out, [[0, 0]])


def test_two_outputs_fused_by_weights_and_temperature():
    head = Head("euclidean", {"global": 0.5, "local": 2.0}, temperature=0.5)
    queries = {"global": [[0, 0]], "local": [[1, 1, 1]]}
    means = {"global": [[2, 0], [0, 1]], "local": [[1, 1, 1], [1, 1, 3]]}
    # global distances 4, 1; local distances 0, 4
    # class a: (0.5 * -4 + 2 * -0) / 0.5 = -4;  class b: (0.5 * -1 + 2 * -4) / 0.5 = -17
    assert np.allclose(logits(head, queries, means), [[-4, -17]])


def test_fused_cosine():
    head = Head("cosine", {"global": 1.0, "local": 3.0}, temperature=0.1)
    queries = {"global": [[1, 0]], "local": [[0, 2]]}
    means = {"global": [[1, 0], [0, 1]], "local": [[0, 1], [1, 0]]}
    # a: (1 * 1 + 3 * 1) / 0.1 = 40;  b: (1 * 0 + 3 * 0) / 0.1 = 0
    assert np.allclose(logits(head, queries, means), [[40, 0]], atol=1e-5)


def test_unweighted_outputs_are_ignored():
    head = Head("euclidean", {"global": 1.0})
    queries = {"global": [[0, 0]], "local": [[9, 9]]}
    assert np.allclose(
        logits(head, queries, {"global": [[1, 0], [0, 1]], "local": [[0, 0], [1, 1]]}), [[-1, -1]]
    )


def test_many_classes_match_brute_force():
    rng = np.random.default_rng(1)
    protos = rng.normal(size=(2000, 64)).astype(np.float32)
    queries = rng.normal(size=(7, 64)).astype(np.float32)
    out = logits(
        Head("euclidean", {"e": 1.0}, 3.0),
        {"e": queries},
        {"e": protos},
        labels=[str(i) for i in range(2000)],
    )
    brute = -((queries[:, None, :].astype(np.float64) - protos[None]) ** 2).sum(-1) / 3.0
    assert out.shape == (7, 2000)
    assert np.allclose(out, brute, rtol=1e-4, atol=1e-3)
    assert np.array_equal(top_k_indices(out, 1)[:, 0], brute.argmax(1))


def test_prepare_checks_shapes():
    h = PrototypeHead(Head("euclidean", {"e": 1.0}))
    with pytest.raises(ValueError, match="must be"):
        h.prepare(["a", "b", "c"], {"e": np.zeros((2, 4), np.float32)})


def test_softmax_rows_sum_to_one_without_overflow():
    scores = softmax(np.array([[1000.0, 0.0, -1000.0], [1.0, 1.0, 1.0]], dtype=np.float32))
    assert np.allclose(scores.sum(1), 1) and scores[0, 0] == pytest.approx(1.0)
    assert np.allclose(scores[1], 1 / 3)


def test_top_k_indices_best_first_and_clipped():
    scores = np.array([[0.1, 0.5, 0.2, 0.15, 0.05], [0.3, 0.1, 0.0, 0.4, 0.2]])
    assert top_k_indices(scores, 3).tolist() == [[1, 2, 3], [3, 0, 4]]
    assert top_k_indices(scores, 10).tolist() == [[1, 2, 3, 0, 4], [3, 0, 4, 1, 2]]
    assert top_k_indices(np.array([[0.5, 0.5, 0.0]]), 3).tolist() == [[0, 1, 2]]
