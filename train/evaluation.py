"""Few-shot protocols: N-way K-shot episodes on a held-out split, mean accuracy ± 95% CI. Episodes are
drawn under one of two protocols: "random" (the usual one: any N classes of the split, any drawings) and
"within-alphabet" (Lake et al.'s one-shot protocol: the N classes from one alphabet, support and query
by disjoint drawers; for datasets that know alphabets and drawers, i.e. Omniglot).

Features of the whole split are extracted once and episodes are drawn over them, which makes thousands
of episodes cheap. Two classifiers: the nearest prototype under the model's serving head, and the RFS
protocol (multinomial logistic regression, C=1, lbfgs, on L2-normalised features, each support image
optionally tiled through the training augmentation).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from distilshot.core.manifest import Head
from distilshot.train.augment import Augmenter, normalize, to_float
from distilshot.train.methods.base import Method, prototype_logits
from distilshot.train.samplers import EpisodeSampler, WithinGroupEpisodeSampler

CLASSIFIERS = ("prototype", "logreg")
PROTOCOLS = ("random", "within-alphabet")


@dataclass(frozen=True)
class EvalResult:
    split: str
    n_way: int
    k_shot: int
    n_query: int
    episodes: int
    classifier: str
    mean: float  # accuracy in percent
    ci95: float
    sampling: str = "random"  # one of PROTOCOLS

    @property
    def key(self) -> str:
        within = " within-alphabet" if self.sampling == "within-alphabet" else ""
        return f"{self.n_way}-way {self.k_shot}-shot{within}"

    @property
    def protocol(self) -> str:
        episodes = describe_episodes(self.sampling, self.n_way, self.k_shot, self.n_query, self.episodes)
        return f"{episodes}, {self.classifier}, {self.split}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "protocol": self.protocol}

    def __str__(self) -> str:
        return f"{self.key}: {self.mean:.2f} ± {self.ci95:.2f} % ({self.protocol})"


def describe_episodes(sampling: str, n_way: int, k_shot: int, n_query: int, episodes: int) -> str:
    """The protocol text of `episodes` N-way K-shot episodes drawn under `sampling`."""
    within = " within one alphabet, support and query by disjoint drawers" if sampling != "random" else ""
    return f"{n_way}-way {k_shot}-shot{within}, {n_query} queries/class, {episodes} episodes"


def episode_sampler(
    sampling: str,
    labels: np.ndarray,
    n_way: int,
    k_shot: int,
    n_query: int,
    episodes: int,
    seed: int,
    class_groups: Sequence[str] | None = None,
    drawers: np.ndarray | None = None,
) -> EpisodeSampler:
    """The episodes of protocol `sampling`; within-alphabet needs each class's alphabet and each image's
    drawer."""
    if sampling not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, not {sampling!r}")
    if sampling == "random":
        return EpisodeSampler(labels, n_way, k_shot, n_query, episodes, seed)
    if class_groups is None or drawers is None:
        raise ValueError("the within-alphabet protocol needs a dataset that knows alphabets and drawers")
    return WithinGroupEpisodeSampler(labels, class_groups, drawers, n_way, k_shot, n_query, episodes, seed)


@torch.no_grad()
def extract_features(
    model: Method,
    images: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device | str = "cpu",
    batch_size: int = 500,
) -> dict[str, torch.Tensor]:
    """Named embeddings (float32, on CPU) of uint8 HWC images, in eval mode."""
    model.eval()
    chunks: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(images), batch_size):
        x = normalize(to_float(images[start : start + batch_size], device), mean, std)
        for name, z in model.embed(x).items():
            chunks.setdefault(name, []).append(z.float().cpu())
    return {name: torch.cat(parts) for name, parts in chunks.items()}


@torch.no_grad()
def augmented_views(
    model: Method,
    images: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    augmenter: Augmenter,
    views: int,
    seed: int,
    device: torch.device | str = "cpu",
    batch_size: int = 500,
    outputs: Sequence[str] | None = None,
) -> torch.Tensor:
    """RFS support tiling: the concatenated embedding (of `outputs`, default all) of `views` augmented
    copies of every image, [views, N, D], from a fixed generator."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(views):
        parts = []
        for start in range(0, len(images), batch_size):
            x = augmenter(to_float(images[start : start + batch_size]), generator)
            embedded = model.embed(normalize(x.to(device), mean, std))
            names = sorted(outputs or embedded)
            parts.append(torch.cat([embedded[k].float().cpu() for k in names], dim=1))
        out.append(torch.cat(parts))
    return torch.stack(out)


def _logreg_accuracy(
    support: torch.Tensor, support_labels: np.ndarray, query: torch.Tensor, query_labels: np.ndarray
) -> float:
    from sklearn.linear_model import LogisticRegression

    classifier = LogisticRegression(C=1.0, max_iter=1000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs convergence chatter on tiny episodes
        classifier.fit(F.normalize(support, dim=1).numpy(), support_labels)
    return float((classifier.predict(F.normalize(query, dim=1).numpy()) == query_labels).mean())


def evaluate_episodes(
    features: dict[str, torch.Tensor],
    labels: np.ndarray,
    *,
    split: str,
    n_way: int,
    k_shot: int,
    n_query: int = 15,
    episodes: int = 1000,
    classifier: str = "prototype",
    head: Head | None = None,
    support_views: torch.Tensor | None = None,
    seed: int = 0,
    view: str = "",
    sampling: str = "random",
    class_groups: Sequence[str] | None = None,
    drawers: np.ndarray | None = None,
) -> EvalResult:
    """Accuracy over `episodes` seeded episodes of protocol `sampling` (see `episode_sampler`). `head` is
    needed for the prototype classifier; `support_views` (from `augmented_views`) replaces the support
    features of the logreg classifier."""
    if classifier not in CLASSIFIERS:
        raise ValueError(f"classifier must be one of {CLASSIFIERS}, not {classifier!r}")
    sampler = episode_sampler(sampling, labels, n_way, k_shot, n_query, episodes, seed, class_groups, drawers)
    concatenated = torch.cat([features[k] for k in sorted(features)], dim=1)
    support_labels = np.repeat(np.arange(n_way), k_shot)
    query_labels = np.repeat(np.arange(n_way), n_query)
    correct = np.empty(episodes)
    for i, episode in enumerate(sampler):
        s, q = episode.support.ravel(), episode.query.ravel()
        if classifier == "prototype":
            assert head is not None, "the prototype classifier needs the model's head"
            logits = prototype_logits(
                {k: v[s] for k, v in features.items()},
                {k: v[q] for k, v in features.items()},
                n_way,
                k_shot,
                head,
            )
            correct[i] = (logits.argmax(1).numpy() == query_labels).mean()
        elif support_views is None:
            correct[i] = _logreg_accuracy(concatenated[s], support_labels, concatenated[q], query_labels)
        else:
            views = support_views[:, s].reshape(-1, support_views.shape[-1])
            tiled_labels = np.tile(support_labels, support_views.shape[0])
            correct[i] = _logreg_accuracy(views, tiled_labels, concatenated[q], query_labels)
    accuracy = 100.0 * correct
    ci95 = 1.96 * accuracy.std(ddof=1) / math.sqrt(episodes) if episodes > 1 else 0.0
    name = f"prototype/{head.metric}" if classifier == "prototype" and head else classifier
    if support_views is not None and classifier == "logreg":
        name += f" (support x{support_views.shape[0]} augmented)"
    if view:
        name += f" [{view}]"
    return EvalResult(
        split, n_way, k_shot, n_query, episodes, name, float(accuracy.mean()), float(ci95), sampling
    )
