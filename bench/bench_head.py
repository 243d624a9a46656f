"""The prototype head against the number of registered classes: what `classify` does after embedding one
query (logits against every prototype, softmax, top 5), with serve's own PrototypeHead, for 10 to
100 000 classes of 640-d (ResNet-12) and 64-d (ConvNet-4 at 28 px) embeddings. Prototypes are prepared
once per change of the store, as serve does; that one-off cost and the memory they take are reported too.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from timing import latencies, table

from distilshot.core.head import PrototypeHead, softmax, top_k_indices
from distilshot.core.manifest import Head

CLASSES = (10, 100, 1_000, 10_000, 100_000)
DIMS = (640, 64)
TARGET_MS = 30.0  # 100 000 classes x 640-d, per query


def run(quick: bool) -> dict[str, Any]:
    classes = (10, 1_000, 100_000) if quick else CLASSES
    calls = 5 if quick else 50
    rows, data = [], []
    for dim in DIMS:
        for metric in ("euclidean", "cosine"):
            head = PrototypeHead(Head(metric, {"embedding": 1.0}))
            for k in classes:
                record = measure(head, k, dim, calls)
                data.append({"metric": metric, "dim": dim, "classes": k, **record})
                rows.append(
                    [
                        f"{dim}",
                        metric,
                        f"{k:,}",
                        f"{record['p50_ms']:.3f}",
                        f"{record['p99_ms']:.3f}",
                        f"{record['prepare_ms']:.1f}",
                        f"{record['memory_mb']:.1f}",
                    ]
                )
    largest = next(
        d for d in data if (d["dim"], d["metric"], d["classes"]) == (640, "euclidean", max(classes))
    )
    markdown = "\n".join(
        [
            table(
                ["dim", "metric", "classes", "p50 ms/query", "p99 ms/query", "prepare ms", "memory MB"], rows
            ),
            "",
            f"**{max(classes):,} classes x 640-d (euclidean): {largest['p50_ms']:.1f} ms per query at the "
            f"median, {largest['p99_ms']:.1f} ms at p99 (target < {TARGET_MS:.0f} ms).** Per query: logits "
            "against every prototype (one float32 matrix product), softmax over the classes, top 5. Memory: "
            "the prepared prototypes (float32, with squared norms for euclidean; unit vectors for cosine). "
            f"'prepare' runs once per change of the store. {calls} queries per row, one at a time.",
        ]
    )
    return {"title": "Prototype head vs number of classes", "markdown": markdown, "data": {"rows": data}}


def measure(head: PrototypeHead, classes: int, dim: int, calls: int) -> dict[str, float]:
    rng = np.random.default_rng(classes + dim)
    means = {"embedding": rng.normal(size=(classes, dim)).astype(np.float32)}
    labels = [str(i) for i in range(classes)]
    start = time.perf_counter()
    prepared = head.prepare(labels, means)
    prepare_ms = 1e3 * (time.perf_counter() - start)
    queries = rng.normal(size=(calls + 3, 1, dim)).astype(np.float32)
    it = iter(queries)

    def classify_one() -> np.ndarray:
        logits = head.logits({"embedding": next(it)}, prepared)
        return top_k_indices(softmax(logits), 5)

    seconds = latencies(classify_one, calls)
    arrays = [*prepared.vectors.values(), *prepared.sq_norms.values()]
    return {
        "p50_ms": 1e3 * float(np.percentile(seconds, 50)),
        "p99_ms": 1e3 * float(np.percentile(seconds, 99)),
        "prepare_ms": prepare_ms,
        "memory_mb": sum(a.nbytes for a in arrays) / 2**20,
    }
