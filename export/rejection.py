"""Calibrating the "unknown" answer: the rejection threshold on the best logit of a query.

The rule, run on a labelled held-out split (the bundle's evaluation classes, at export time):
1. Split the classes in two halves at random (seeded): one to fit the threshold, one to measure it.
2. On the fitting half, sample open-set episodes: `ways` registered classes with `shots` support images
   each and `queries` queries each ("known" queries), plus `ways` other classes whose `queries` queries
   each are "unknown". Each query's score is its best logit under the bundle's head (at its calibrated
   temperature, so export fits the temperature first) against the registered prototypes.
3. threshold = the (1 - target) quantile of the known scores, so that a share `target` of queries of
   registered classes is accepted. Unknown queries only enter the measurement, never the fit.
4. Repeat step 2 on the other half and report the share of known queries accepted and of unknown queries
   rejected at that threshold.

The best logit of a query of a registered class hardly depends on how many classes are registered, so
the accepted share holds for any number of classes; the rejected share of unknown queries falls as more
classes are registered (each is one more chance to lie close), which is why it is reported with its
protocol.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np

from distilshot.core.head import PrototypeHead
from distilshot.core.manifest import Rejection, load_manifest
from distilshot.errors import DistilshotError
from distilshot.export.episodes import episode_logits

TARGET = 0.95
WAYS = 5
SHOTS = 1
QUERIES = 5
EPISODES = 500


def open_set_scores(
    head: PrototypeHead,
    features: Mapping[str, np.ndarray],
    labels: np.ndarray,
    classes: np.ndarray,
    *,
    ways: int,
    shots: int,
    queries: int,
    episodes: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Best logits of known and of unknown queries over `episodes` open-set episodes drawn from `classes`."""
    rows = {int(c): np.flatnonzero(labels == c) for c in classes}
    known, unknown = [], []
    for _ in range(episodes):
        picked = rng.choice(classes, size=2 * ways, replace=False)
        draws = [rng.choice(rows[int(c)], size=shots + queries, replace=False) for c in picked[:ways]]
        support = np.stack([d[:shots] for d in draws])
        known_q = np.concatenate([d[shots:] for d in draws])
        unknown_q = np.concatenate(
            [rng.choice(rows[int(c)], size=queries, replace=False) for c in picked[ways:]]
        )
        scores = episode_logits(head, features, support, np.concatenate([known_q, unknown_q])).max(axis=1)
        known.append(scores[: len(known_q)])
        unknown.append(scores[len(known_q) :])
    return np.concatenate(known), np.concatenate(unknown)


def calibrate(
    head: PrototypeHead,
    features: Mapping[str, np.ndarray],
    labels: np.ndarray,
    *,
    split: str,
    target: float = TARGET,
    ways: int = WAYS,
    shots: int = SHOTS,
    queries: int = QUERIES,
    episodes: int = EPISODES,
    seed: int = 0,
) -> Rejection:
    """Fits and measures the threshold by the rule in this module's docstring. `features` holds the
    embeddings (per output, [N, dim]) of a held-out split whose class of each row is `labels[row]`."""
    labels = np.asarray(labels)
    counts = np.bincount(labels)
    usable = np.flatnonzero(counts >= shots + queries)
    if len(usable) < 4 * ways:
        raise DistilshotError(
            f"calibrating the rejection threshold needs {4 * ways} classes with at least {shots + queries} "
            f"images each in {split}; it has {len(usable)}"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(usable)
    fit, held_out = order[: len(order) // 2], order[len(order) // 2 :]
    options = {"ways": ways, "shots": shots, "queries": queries, "episodes": episodes}
    known, _ = open_set_scores(head, features, labels, fit, rng=rng, **options)
    threshold = float(np.quantile(known, 1 - target))
    known, unknown = open_set_scores(head, features, labels, held_out, rng=rng, **options)
    return Rejection(
        threshold=threshold,
        target=target,
        protocol=(
            f"{split}: {ways}-way {shots}-shot, {queries} queries per class, {ways} unknown classes, "
            f"{episodes} episodes on each half of the classes"
        ),
        known_accepted=float((known >= threshold).mean()),
        unknown_rejected=float((unknown < threshold).mean()),
    )


def record_rejection(
    folder: Path | str, features: Mapping[str, np.ndarray], labels: np.ndarray, split: str
) -> Rejection:
    """Calibrates the threshold on a held-out split's embeddings (export.embeddings.bundle_features)
    under the folder's current head (its temperature scales the logits) and records it in the folder's
    manifest. Export runs it on the staged folder (export/pipeline.py), before the bundle is published."""
    manifest = load_manifest(folder)
    rejection = calibrate(PrototypeHead(manifest.head), features, labels, split=split)
    replace(manifest, rejection=rejection).save(Path(folder))
    return rejection
