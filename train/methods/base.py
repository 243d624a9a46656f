"""The interface every method implements, and the few tensor helpers they share.

A method owns a backbone and whatever heads its training needs. The trainer feeds it `Batch`es drawn the
way `sampling` asks for; `loss` returns the objective; `embed` returns the named embeddings that get
exported, and `head` says how serving turns them into class scores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from distilshot.core.enums import Metric, Sampling
from distilshot.core.manifest import Head
from distilshot.errors import ConfigError
from distilshot.train.backbones import Backbone


@dataclass
class Batch:
    """Images (normalised, augmented) with their dataset labels. An episodic batch holds the support
    images class-major, then the query images class-major; episode label i is the i-th sampled class."""

    images: torch.Tensor
    labels: torch.Tensor
    n_way: int = 0
    k_shot: int = 0
    n_query: int = 0

    @property
    def n_support(self) -> int:
        return self.n_way * self.k_shot

    def episode_labels(self) -> tuple[torch.Tensor, torch.Tensor]:
        ways = torch.arange(self.n_way, device=self.images.device)
        return ways.repeat_interleave(self.k_shot), ways.repeat_interleave(self.n_query)


@dataclass
class LossOutput:
    loss: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)


class Method(nn.Module):
    name: ClassVar[str]  # set by @register_method (train/methods/__init__.py)
    sampling: ClassVar[Sampling]
    output_names: ClassVar[tuple[str, ...]] = ("embedding",)
    needs_teacher: ClassVar[bool] = False
    # how serving compares the embedding with class prototypes; a method whose embedding is learned globally
    # or on the unit sphere says COSINE (see `head`)
    head_metric: ClassVar[Metric] = Metric.EUCLIDEAN

    def __init__(self, backbone: Backbone, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.progress = 0.0  # fraction of training done, for losses with schedules
        self.teacher: Method | None = None

    def set_teacher(self, teacher: Method) -> None:
        """Attaches a frozen teacher. It is kept out of the module tree, so it is neither saved with the
        student, nor trained, nor switched to train mode; it follows the student across devices."""
        ours, theirs = self.backbone, teacher.backbone
        if (theirs.in_channels, theirs.image_size) != (ours.in_channels, ours.image_size):
            raise ConfigError(
                f"a {teacher.name} teacher that takes {theirs.in_channels}-channel {theirs.image_size} px "
                f"images cannot see this student's {ours.in_channels}-channel {ours.image_size} px batches"
            )
        self.check_teacher(teacher)
        self.__dict__["teacher"] = teacher.eval().requires_grad_(False)

    def check_teacher(self, teacher: Method) -> None:
        """Raises ConfigError if `teacher` cannot teach this method."""

    def _apply(self, fn: Any, recurse: bool = True) -> Method:
        super()._apply(fn, recurse)
        if self.teacher is not None:
            self.teacher._apply(fn, recurse)
        return self

    def set_progress(self, epoch: int, epochs: int) -> None:
        """Called by the trainer before each epoch (0-based) of `epochs`."""
        self.progress = epoch / max(epochs, 1)

    def loss(self, batch: Batch) -> LossOutput:
        raise NotImplementedError

    def embed(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"embedding": self.backbone(x)}

    def head(self) -> Head:
        """Serving head: metric, per-output fusion weights, temperature."""
        if self.head_metric is Metric.COSINE:
            return cosine_head()
        return Head(metric=Metric.EUCLIDEAN, weights={"embedding": 1.0}, temperature=1.0)


def cosine_head() -> Head:
    """The head of a feature learned globally or on the unit sphere: cosine similarity to class
    prototypes of the one output, temperature 0.1 (before export calibrates it)."""
    return Head(metric=Metric.COSINE, weights={"embedding": 1.0}, temperature=0.1)


def squared_euclidean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise squared Euclidean distances between rows of a [n, d] and b [m, d] -> [n, m]."""
    return (a.unsqueeze(1) - b.unsqueeze(0)).pow(2).sum(-1)


def prototypes(support: torch.Tensor, n_way: int, k_shot: int) -> torch.Tensor:
    """Class means of class-major support embeddings [n_way * k_shot, d] -> [n_way, d]."""
    return support.reshape(n_way, k_shot, -1).mean(dim=1)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(dim=-1) == labels).float().mean().item()


def prototype_logits(
    support: dict[str, torch.Tensor],
    query: dict[str, torch.Tensor],
    n_way: int,
    k_shot: int,
    head: Head,
) -> torch.Tensor:
    """Logits of query embeddings against support prototypes under a serving head: the torch twin of the
    numpy head in serve/, used for evaluation and for the export parity check."""
    metric = Metric.parse(head.metric, "head metric")
    logits = 0
    for name, weight in head.weights.items():
        protos = prototypes(support[name], n_way, k_shot)
        if metric is Metric.COSINE:
            score = F.normalize(query[name], dim=-1) @ F.normalize(protos, dim=-1).T
        else:  # Metric.EUCLIDEAN
            score = -squared_euclidean(query[name], protos)
        logits = logits + weight * score
    return logits / head.temperature
