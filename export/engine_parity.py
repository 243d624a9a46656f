"""Does a new graph or engine give the embeddings of the one it replaces? Both embed the same real
evaluation images; we compare the embeddings (max absolute and relative difference), the predictions on
the same N-way K-shot episodes under serve's prototype head (agreement), and each one's accuracy on those
episodes (the accuracy drop of a lower precision)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from distilshot.core.head import PrototypeHead
from distilshot.core.manifest import Manifest
from distilshot.export.embeddings import embed_images
from distilshot.export.episodes import episode_logits
from distilshot.serve.engines.base import Engine
from distilshot.train.data.imageset import ImageSet
from distilshot.train.samplers import EpisodeSampler


@dataclass(frozen=True)
class Comparison:
    """A candidate engine/graph against a reference on the same images and episodes."""

    reference: str  # "<backend> <role>"
    candidate: str
    split: str
    images: int
    max_abs_diff: float  # over all outputs
    max_rel_diff: float  # max abs diff / max abs reference value
    n_way: int
    k_shot: int
    episodes: int
    agreement: float  # fraction of queries both classify alike
    reference_accuracy: float  # percent
    candidate_accuracy: float
    ci95: float  # of the candidate's accuracy

    @property
    def drop(self) -> float:
        """Accuracy points lost by the candidate (negative: gained)."""
        return self.reference_accuracy - self.candidate_accuracy

    @property
    def key(self) -> str:
        """Its key in the manifest's metrics."""
        return f"{self.candidate} vs {self.reference} {self.n_way}-way {self.k_shot}-shot"

    @property
    def protocol(self) -> str:
        return (
            f"{self.candidate} vs {self.reference}: {self.images} {self.split} images; {self.n_way}-way "
            f"{self.k_shot}-shot, 15 queries/class, {self.episodes} episodes, prototype head"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drop": self.drop, "protocol": self.protocol}


def compare_engines(
    reference: Engine,
    candidate: Engine,
    manifest: Manifest,
    data: ImageSet,
    settings: Sequence[tuple[int, int]] = ((5, 1), (5, 5)),
    episodes: int = 1000,
    seed: int = 0,
) -> list[Comparison]:
    """One Comparison per (N-way, K-shot) setting; every image any episode uses is embedded once."""
    samplers = [EpisodeSampler(data.labels, n, k, 15, episodes, seed) for n, k in settings]
    used = np.unique(np.concatenate([e.indices for sampler in samplers for e in sampler]))
    ours = embed_images(reference, data.images[used], manifest)
    theirs = embed_images(candidate, data.images[used], manifest)
    diff = max(float(np.abs(ours[k] - theirs[k]).max()) for k in ours)
    scale = max(float(np.abs(v).max()) for v in ours.values())
    position = np.full(len(data.labels), -1)
    position[used] = np.arange(len(used))
    head = PrototypeHead(manifest.head)
    comparisons = []
    for sampler in samplers:
        n_way, k_shot = sampler.n_way, sampler.k_shot
        truth = np.repeat(np.arange(n_way), 15)
        agree, right_ref, right_cand = [], [], []
        for episode in sampler:
            s, q = position[episode.support], position[episode.query.ravel()]
            predictions = [episode_logits(head, e, s, q).argmax(1) for e in (ours, theirs)]
            agree.append(np.mean(predictions[0] == predictions[1]))
            right_ref.append(np.mean(predictions[0] == truth))
            right_cand.append(np.mean(predictions[1] == truth))
        accuracy = 100 * np.asarray(right_cand)
        comparisons.append(
            Comparison(
                reference=f"{reference.name} {reference.role}",
                candidate=f"{candidate.name} {candidate.role}",
                split=data.name,
                images=len(used),
                max_abs_diff=diff,
                max_rel_diff=diff / scale if scale > 0 else diff,
                n_way=n_way,
                k_shot=k_shot,
                episodes=episodes,
                agreement=float(np.mean(agree)),
                reference_accuracy=float(100 * np.mean(right_ref)),
                candidate_accuracy=float(accuracy.mean()),
                ci95=float(1.96 * accuracy.std(ddof=1) / math.sqrt(episodes)) if episodes > 1 else 0.0,
            )
        )
    return comparisons
