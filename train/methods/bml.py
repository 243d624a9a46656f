"""Binocular Mutual Learning (Zhou et al., ICCV 2021): a shared trunk and two view-specific copies of the
backbone's last stage, trained together on one episode per step.

- Global view: a 1x1 convolution classifies every position of its map over all base classes (Eq. 1-2).
- Local view: every query position is matched to support prototypes by squared Euclidean distance, with the
  elastic margin of Algorithm 1 on the positive distance (Eq. 3-6).
- Mutual loss: symmetric KL between the two views' spatially pooled features, softmax over channels
  (Eq. 7-8). Total = alpha * global + beta * local + gamma * mutual (Eq. 9).
- Test time (section 3.2.4, with the ReLU and square root of the authors' evaluation): each view's map goes
  through ReLU and a square root and is flattened; the two views' negative squared Euclidean distances to
  shot-mean prototypes are summed. That is the serving head: both embeddings are exported, weighted 1 : 1.

Two variants (README.md, "Methods" and its "BML" section):
- "code" (default, every preset): what produced the published numbers. Weights 2 : 1 : 0.5 (the code's
  "2_1_0.5"; the paper's 4 : 2 : 1 doubles every gradient, i.e. twice the learning rate under SGD). Support
  maps averaged over shots and positions into one prototype per class, which every query position is
  compared with. No margin where the positive or the hardest negative already has probability above 0.5.
- "paper-text": Eq. 9's 4 : 2 : 1; Algorithm 1's position-wise prototypes C_i^(p,q) (the shot mean, each
  query position compared with the prototype at the same position); every query pushed (Fig. 2).
`global_weight`, `local_weight`, `mutual_weight`, `prototypes` and `skip_confident` override one choice of
the variant each. Both count the elastic factor e/E with epochs from 1 to E, as Algorithm 1's "current
epoch e" of E and the code do. Details the paper leaves open follow the code: the margin is computed from
detached distances and enters the softmax as an additive margin on the positive distance (Eq. 5 prints it
in the numerator only, where a constant margin would not change the gradient); the KL is taken at
temperature T with the usual T^2 factor (T = 4 in the code; T = 1 is Eq. 8 as printed); the global
classifier starts Xavier-uniform.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from distilshot.core.enums import ConfigEnum, Metric, Sampling, Variant
from distilshot.core.manifest import Head
from distilshot.errors import ConfigError
from distilshot.train.backbones import Backbone
from distilshot.train.methods import Stage, register_method, register_recipe
from distilshot.train.methods.base import Batch, LossOutput, Method, accuracy
from distilshot.train.methods.pretrain import SGD_RFS


class Prototypes(ConfigEnum):
    """What each query position of the local view is compared with (module docstring)."""

    POSITION = "position"  # the shot mean at the same position
    POOLED = "pooled"  # the shot and position mean


VARIANTS: dict[Variant, dict[str, Any]] = {
    Variant.CODE: {"weights": (2.0, 1.0, 0.5), "prototypes": Prototypes.POOLED, "skip_confident": True},
    Variant.PAPER_TEXT: {
        "weights": (4.0, 2.0, 1.0),
        "prototypes": Prototypes.POSITION,
        "skip_confident": False,
    },
}


def dense_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 1-2: cross-entropy of every position's class scores [B, C, h, w], averaged over positions and
    images."""
    h, w = logits.shape[2:]
    return F.cross_entropy(logits, labels[:, None, None].expand(-1, h, w))


def local_distances(
    support: torch.Tensor,
    query: torch.Tensor,
    n_way: int,
    k_shot: int,
    prototypes: Prototypes = Prototypes.POSITION,
) -> torch.Tensor:
    """M of Eq. 3 at every query position: squared Euclidean distances [Q, n_way, h*w] from class-major
    support maps [n_way * k_shot, C, h, w] and query maps [Q, C, h, w] (see the module docstring)."""
    q = query.flatten(2)  # [Q, C, P]
    protos = support.flatten(2).reshape(n_way, k_shot, *q.shape[1:]).mean(1)  # [N, C, P]
    if prototypes == Prototypes.POOLED:
        protos = protos.mean(2, keepdim=True).expand_as(protos)
    cross = torch.einsum("qcp,ncp->qnp", q, protos)
    return (q.pow(2).sum(1)[:, None] - 2 * cross + protos.pow(2).sum(1)[None]).clamp_min(0)


def elastic_margin(
    distances: torch.Tensor,
    labels: torch.Tensor,
    factor: float,
    alpha1: float = 5.5,
    alpha2: float = 0.1,
    skip_confident: bool = False,
) -> torch.Tensor:
    """Algorithm 1: d_EL = alpha1 * e/E * sigmoid(alpha2 * (d_pos - d_hardest_negative)) per query position
    [Q, P], from detached distances [Q, N, P] and factor = e/E: it moves the query, and the network has to
    pull it back."""
    d = distances.detach()
    positive = F.one_hot(labels, d.shape[1]).bool()[:, :, None].expand_as(d)
    index = labels[:, None, None].expand(-1, 1, d.shape[2])
    d_pos = d.gather(1, index).squeeze(1)
    d_neg = d.masked_fill(positive, float("inf")).amin(1)
    margin = alpha1 * factor * torch.sigmoid(alpha2 * (d_pos - d_neg))
    if skip_confident:
        p = torch.softmax(-d, dim=1)
        p_pos = p.gather(1, index).squeeze(1)
        p_neg = p.masked_fill(positive, 0.0).amax(1)
        margin = margin.masked_fill((p_pos > 0.5) | (p_neg > 0.5), 0.0)
    return margin


def local_loss(distances: torch.Tensor, labels: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """Eq. 5-6: cross-entropy over the episode's classes of -(distance + margin on the positive) at every
    query position, averaged over positions and queries."""
    onehot = F.one_hot(labels, distances.shape[1]).to(distances.dtype)[:, :, None]
    logits = -(distances + margin[:, None, :] * onehot)
    return F.cross_entropy(logits, labels[:, None].expand(-1, distances.shape[2]))


def symmetric_kl(a: torch.Tensor, b: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """Eq. 7-8: KL(F_a || F_b) + KL(F_b || F_a) of softmaxes over channels of pooled features [B, C] at
    temperature T, times T^2, averaged over images. Both views receive gradients."""
    log_a = F.log_softmax(a / temperature, dim=1)
    log_b = F.log_softmax(b / temperature, dim=1)
    # KL(a||b) + KL(b||a) = sum (p_a - p_b)(log p_a - log p_b)
    return ((log_a.exp() - log_b.exp()) * (log_a - log_b)).sum(1).mean() * temperature**2


def view_embedding(feature_map: torch.Tensor) -> torch.Tensor:
    """Section 3.2.4 (and the authors' evaluation): ReLU, square root, flatten."""
    return torch.relu(feature_map).sqrt().flatten(1)


def fresh_copy(stage: nn.Module) -> nn.Module:
    """An independently initialised copy of a backbone stage, drawn the way both backbones draw theirs:
    Kaiming-normal convolutions (fan-out, gain sqrt 2), BatchNorm weight 1 and bias 0."""
    twin = copy.deepcopy(stage)
    for module in twin.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            module.reset_parameters()
    return twin


@register_method(
    "bml",
    presets={
        # Zhou et al. 2021, section 4.2: SGD 0.1, momentum 0.9, wd 5e-4, 100 epochs, lr -> 6e-3 at 50 and
        # -> 1.2e-4 at 70; every step one uniformly drawn 15-way 5-shot 7-query episode, 500 per epoch (the
        # authors' sampler); the code's loss (module docstring)
        "paper": {
            **SGD_RFS,
            "method_params": {"variant": "code"},
            "lr": 0.1,
            "schedule": "step",
            "milestones": [50, 70],
            "gamma": [0.06, 0.02],
            "epochs": 100,
            "steps_per_epoch": 500,
            "n_way": 15,
            "k_shot": 5,
            "n_query": 7,
        },
        # 10 x 100 episodes of 180 images: ~4 CPU minutes on CIFAR-FS at 32 px
        "quick": {
            **SGD_RFS,
            "method_params": {"variant": "code"},
            "lr": 0.02,  # the paper's 0.1 collapses ConvNet-4's views (reproduce/PRESET-LOG.md)
            "schedule": "cosine",
            "epochs": 10,
            "steps_per_epoch": 100,
            "n_way": 15,
            "k_shot": 5,
            "n_query": 7,
        },
    },
    datasets={
        # `make train-export`'s default: 60-way 1-shot 1-query episodes over the 3,260 rotation classes,
        # 17 x 200 in ~10 CPU minutes (the trials: reproduce/PRESET-LOG.md)
        ("quick", "omniglot"): {
            "rotated_classes": True,
            "n_way": 60,
            "k_shot": 1,
            "n_query": 1,
            "lr": 0.1,
            "epochs": 17,
            "steps_per_epoch": 200,
        },
    },
)
class BML(Method):
    sampling = Sampling.EPISODES
    output_names = ("global", "local")

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        global_weight: float | None = None,
        local_weight: float | None = None,
        mutual_weight: float | None = None,
        alpha1: float = 5.5,
        alpha2: float = 0.1,
        temperature: float = 4.0,
        prototypes: str | None = None,
        skip_confident: bool | None = None,
        variant: str = Variant.CODE,
    ) -> None:
        """None: the variant's value (module docstring)."""
        super().__init__(backbone, num_classes)
        self.variant = Variant.parse(variant, "bml variant")
        chosen = VARIANTS[self.variant]
        given = (global_weight, local_weight, mutual_weight)
        if len(backbone.stages) < 2:
            raise ConfigError("bml splits the backbone's last stage off a shared trunk; it needs two stages")
        if temperature <= 0:
            raise ConfigError(f"bml temperature must be positive, not {temperature}")
        self.weights = tuple(d if w is None else w for w, d in zip(given, chosen["weights"], strict=True))
        self.alpha1, self.alpha2 = alpha1, alpha2
        self.temperature = temperature
        self.prototypes = (
            chosen["prototypes"] if prototypes is None else Prototypes.parse(prototypes, "bml prototypes")
        )
        self.skip_confident = chosen["skip_confident"] if skip_confident is None else skip_confident
        # self.backbone = shared trunk + the global view's last stage; the local view's own last stage:
        self.local_stage = fresh_copy(backbone.stages[-1])
        self.classifier = nn.Conv2d(backbone.map_shape[0], num_classes, kernel_size=1)
        nn.init.xavier_uniform_(self.classifier.weight)
        self.elastic_factor = 0.0

    def set_progress(self, epoch: int, epochs: int) -> None:
        super().set_progress(epoch, epochs)
        self.elastic_factor = (epoch + 1) / max(epochs, 1)  # Algorithm 1's e/E, e = 1..E

    def views(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The global and the local view's feature maps."""
        shared = self.backbone.feature_map(x, slice(None, -1))
        return self.backbone.stages[-1](shared), self.local_stage(shared)

    def loss(self, batch: Batch) -> LossOutput:
        global_map, local_map = self.views(batch.images)
        s = batch.n_support
        _, query_labels = batch.episode_labels()
        global_term = dense_cross_entropy(self.classifier(global_map).float(), batch.labels)
        distances = local_distances(
            local_map[:s].float(), local_map[s:].float(), batch.n_way, batch.k_shot, self.prototypes
        )
        margin = elastic_margin(
            distances, query_labels, self.elastic_factor, self.alpha1, self.alpha2, self.skip_confident
        )
        local_term = local_loss(distances, query_labels, margin)
        mutual_term = symmetric_kl(
            global_map.float().mean((2, 3)), local_map.float().mean((2, 3)), self.temperature
        )
        alpha, beta, gamma = self.weights
        total = alpha * global_term + beta * local_term + gamma * mutual_term
        metrics = {
            "acc": accuracy(-distances.detach().sum(2), query_labels),  # local view, positions summed
            "global": global_term.item(),
            "local": local_term.item(),
            "mutual": mutual_term.item(),
        }
        return LossOutput(total, metrics)

    def embed(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        global_map, local_map = self.views(x)
        return {"global": view_embedding(global_map), "local": view_embedding(local_map)}

    def head(self) -> Head:
        return Head(metric=Metric.EUCLIDEAN, weights={"global": 1.0, "local": 1.0}, temperature=1.0)


register_recipe("bml", "global + local view, mutual learning", Stage("bml", "bml"))
