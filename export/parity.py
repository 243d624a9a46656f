"""Does the bundle reproduce the PyTorch model? Embeddings of real images through ONNX Runtime vs
PyTorch (max absolute and relative difference), and the predictions of the same episodes made by
PyTorch's prototype head vs serve's numpy head on ONNX Runtime embeddings.

Two float32 pipelines that sum in different orders (another conv kernel, another CPU's vector width) give
slightly different embeddings, so a query whose top two classes are within rounding of each other may
flip. For every query we bound how far the embedding differences and float32 rounding can move each logit
(`logit_bounds`); a query whose PyTorch margin is inside that band is a *near tie*, counted and reported.
A different prediction outside the band is a *disagreement*: no rounding explains it, so it fails."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distilshot.core.head import PrototypeHead, class_mean
from distilshot.core.manifest import Head, load_manifest
from distilshot.export.episodes import episode_logits
from distilshot.serve.engines.registry import open_engine
from distilshot.train.augment import normalize, to_float
from distilshot.train.checkpoint import ModelSpec
from distilshot.train.data.imageset import ImageSet
from distilshot.train.methods import Method
from distilshot.train.methods.base import prototype_logits
from distilshot.train.samplers import EpisodeSampler

# float32 unit roundoff: a sum of d products is off by at most about d * U relative to sum |x_i y_i|
U = 2.0**-24
# More near ties than this says the embeddings differ by far more than rounding, even if no query flipped.
MAX_NEAR_TIE_SHARE = 0.01


@dataclass(frozen=True)
class ParityReport:
    backend: str
    images: int
    max_abs_diff: dict[str, float]
    max_rel_diff: dict[str, float]  # max abs diff / max abs PyTorch value, per output
    episodes: int
    queries: int
    agreement: float  # fraction of queries where both predict the same class
    near_ties: int  # queries whose PyTorch margin is within the rounding band (may flip, both fine)
    disagreements: int  # queries predicted differently although their margin is outside the band

    @property
    def faithful(self) -> bool:
        return self.disagreements == 0 and self.near_ties <= MAX_NEAR_TIE_SHARE * self.queries

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "faithful": self.faithful}


def logit_bounds(
    head: Head,
    queries: tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]],
    prototypes: tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]],
) -> np.ndarray:
    """[N, K] upper bounds on |logit_a - logit_b| when pipeline a and b embed the same N queries and K
    prototypes as (queries[0], prototypes[0]) and (queries[1], prototypes[1]), each in float32."""
    total = 0.0
    for name, weight in head.weights.items():
        qa, qb = (np.asarray(q[name], np.float64) for q in queries)
        pa, pb = (np.asarray(p[name], np.float64) for p in prototypes)
        gamma = (qa.shape[1] + 2) * U
        dq = np.linalg.norm(qa - qb, axis=1)[:, None]
        if head.metric == "cosine":
            unit = [x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12) for x in (qa, qb, pa, pb)]
            du = np.linalg.norm(unit[0] - unit[1], axis=1)[:, None]
            dv = np.linalg.norm(unit[2] - unit[3], axis=1)[None, :]
            # |a.b - a'.b'| <= |a - a'| + |b - b'| for unit vectors; each side's normalise and dot rounds
            bound = du + dv + 6 * gamma
        else:
            dp = np.linalg.norm(pa - pb, axis=1)[None, :]
            da = np.sqrt(np.maximum(_sq_dist(qa, pa), 0))
            db = np.sqrt(np.maximum(_sq_dist(qb, pb), 0))
            # |a^2 - b^2| = |a - b| (a + b) with |a - b| <= |dq| + |dp|; serve expands |q|^2 - 2 q.p + |p|^2
            norms = np.linalg.norm(qb, axis=1)[:, None] + np.linalg.norm(pb, axis=1)[None, :]
            bound = (dq + dp) * (da + db) + gamma * (norms**2 + da**2)
        total = total + abs(weight) * bound
    return np.asarray(total) / head.temperature


def _sq_dist(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    return ((q[:, None, :] - p[None, :, :]) ** 2).sum(-1)


def near_tie_mask(logits: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """[N] True where rounding within `bounds` could change the argmax of `logits` (both [N, K])."""
    top = logits.argmax(1)
    rows = np.arange(len(logits))
    margin = logits[rows, top][:, None] - logits
    band = bounds[rows, top][:, None] + bounds
    margin[rows, top] = np.inf
    return (margin <= band).any(1)


@torch.no_grad()
def check_parity(
    model: Method,
    spec: ModelSpec,
    bundle_dir: Path,
    data: ImageSet,
    n_way: int = 5,
    k_shot: int = 1,
    n_query: int = 15,
    episodes: int = 50,
    seed: int = 0,
    backend: str = "onnxruntime",
) -> ParityReport:
    manifest = load_manifest(bundle_dir)
    engine = open_engine(bundle_dir, manifest, backend=backend)
    head = PrototypeHead(manifest.head)
    model = model.cpu().eval()
    sampler = EpisodeSampler(data.labels, n_way, k_shot, n_query, episodes, seed)
    used = np.unique(np.concatenate([e.indices for e in sampler]))
    x = normalize(to_float(data.images[used]), spec.mean, spec.std)
    theirs = engine.embed(x.numpy())
    ours = {k: v.numpy() for k, v in model.embed(x).items()}
    diffs = {k: float(np.abs(ours[k] - theirs[k]).max()) for k in ours}
    scales = {k: float(np.abs(ours[k]).max()) for k in ours}
    position = np.full(len(data.labels), -1)
    position[used] = np.arange(len(used))
    agree = ties = disagree = total = 0
    for episode in sampler:
        rows, q = position[episode.support], position[episode.query.ravel()]
        s = rows.ravel()
        torch_protos = {k: v[s].reshape(n_way, k_shot, -1).mean(1) for k, v in ours.items()}
        torch_logits = prototype_logits(
            {k: torch.from_numpy(v[s]) for k, v in ours.items()},
            {k: torch.from_numpy(v[q]) for k, v in ours.items()},
            n_way,
            k_shot,
            model.head(),
        ).numpy()
        serve_pred = episode_logits(head, theirs, rows, q).argmax(1)
        means = {k: np.stack([class_mean(v[r]) for r in rows]) for k, v in theirs.items()}  # as serve's
        bounds = logit_bounds(
            manifest.head,
            ({k: v[q] for k, v in ours.items()}, {k: v[q] for k, v in theirs.items()}),
            (torch_protos, means),
        )
        tie = near_tie_mask(torch_logits, bounds)
        same = torch_logits.argmax(1) == serve_pred
        agree += int(same.sum())
        ties += int(tie.sum())
        disagree += int((~same & ~tie).sum())
        total += len(q)
    return ParityReport(
        backend=engine.name,
        images=len(used),
        max_abs_diff=diffs,
        max_rel_diff={k: diffs[k] / scales[k] if scales[k] > 0 else diffs[k] for k in diffs},
        episodes=episodes,
        queries=total,
        agreement=agree / total,
        near_ties=ties,
        disagreements=disagree,
    )
