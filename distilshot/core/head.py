"""The prototype head in numpy, as `Head` in manifest.py defines it:
logits[c] = sum_o weights[o] * s_o(query, prototype_c) / temperature, with s_o the negative squared
Euclidean distance or the cosine similarity, and prototype_c the mean of class c's support embeddings.

Written for many classes: prototypes are prepared once (norms, unit vectors) and every similarity is a
float32 matrix product, so 100 000 classes x 640-d cost one GEMM per output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from distilshot.core.manifest import Head

# Below this norm a vector counts as zero for cosine similarity (as torch's F.normalize).
EPS = 1e-12


def class_mean(shots: np.ndarray) -> np.ndarray:
    """The prototype of one class from its support embeddings [S, D], summed in float64."""
    return shots.mean(axis=0, dtype=np.float64).astype(np.float32)


@dataclass(frozen=True)
class Prototypes:
    """Class prototypes ready for the head: per output, [K, D] float32 rows in `labels` order (unit rows
    for cosine) and, for Euclidean, their squared norms [K]."""

    labels: tuple[str, ...]
    vectors: dict[str, np.ndarray]
    sq_norms: dict[str, np.ndarray]


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, EPS)).astype(np.float32)


class PrototypeHead:
    def __init__(self, head: Head) -> None:
        self.head = head

    def prepare(self, labels: Sequence[str], means: Mapping[str, np.ndarray]) -> Prototypes:
        """Precomputes what `logits` needs from the per-class means ([K, D] per weighted output)."""
        vectors: dict[str, np.ndarray] = {}
        sq_norms: dict[str, np.ndarray] = {}
        for output in self.head.weights:
            p = np.ascontiguousarray(means[output], dtype=np.float32)
            if p.ndim != 2 or len(p) != len(labels):
                raise ValueError(f"prototypes for {output!r} must be [{len(labels)}, D], not {list(p.shape)}")
            if self.head.metric == "cosine":
                vectors[output] = _unit(p)
            else:
                vectors[output] = p
                sq_norms[output] = np.einsum("kd,kd->k", p, p)
        return Prototypes(tuple(labels), vectors, sq_norms)

    def logits(self, queries: Mapping[str, np.ndarray], prototypes: Prototypes) -> np.ndarray:
        """Logits [N, K] float32 for query embeddings (per output, [N, D])."""
        total: np.ndarray | None = None
        for output, weight in self.head.weights.items():
            q = np.asarray(queries[output], dtype=np.float32)
            p = prototypes.vectors[output]
            if self.head.metric == "cosine":
                s = _unit(q) @ p.T
            else:
                # ||q - p||^2 = ||q||^2 - 2 q.p + ||p||^2; clipped at 0 against rounding below zero
                d = q @ p.T
                d *= -2
                d += np.einsum("nd,nd->n", q, q)[:, None]
                d += prototypes.sq_norms[output][None, :]
                s = -np.maximum(d, 0, out=d)
            s *= np.float32(weight)
            total = s if total is None else total + s
        assert total is not None  # Manifest.validate guarantees at least one weighted output
        return total / np.float32(self.head.temperature)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (probabilities of thousands of classes are tiny)."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def top_k_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices [N, k] of the k highest scores per row, best first. Partitions first so that many classes
    do not need a full sort."""
    k = min(k, scores.shape[1])
    if k < scores.shape[1]:
        candidates = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        candidates = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    rows = np.arange(len(scores))[:, None]
    order = np.lexsort((candidates, -scores[rows, candidates]), axis=1)
    return np.take_along_axis(candidates, order, axis=1)
