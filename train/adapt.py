"""Task-specific students: REFILLED's middle-shot setting (supplement 2.3) and the `adapt` command.

Given the few labelled images of one task (10-30 per class in the middle-shot setting) and a teacher
trained on other classes, a small student is trained on exactly this task in REFILLED's two steps:
embedding distillation by triplet matching, then its classifier with the local KD term. Without a
teacher, the same loop trains the student with cross-entropy alone (the baselines). The student starts
from random weights or from a base-class model of its architecture: the supplement does not say which,
but its REFILLED student beating both the teacher's 1-NN and the fine-tuned teacher at one shot (Table 3)
points to the second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from distilshot.errors import ConfigError
from distilshot.train.augment import Augmenter, normalize, to_float
from distilshot.train.backbones import build_backbone
from distilshot.train.methods.base import Batch, Method
from distilshot.train.methods.pretrain import Pretrain
from distilshot.train.methods.refilled import RefilledClassify, RefilledEmbed


@dataclass
class AdaptConfig:
    backbone: str = "convnet4"
    embed_steps: int = 150
    classify_steps: int = 150
    batch_size: int = 128
    lr: float = 0.05
    start_lr: float = 0.002  # from trained weights (--start); tuned in reproduce/tune_middle_shot.md
    weight_decay: float = 5e-4
    tau: float = 2.0
    lam: float = 0.01
    steps_per_epoch: int = 30  # the local KD weight decays once per this many steps
    augment: str = "standard"
    seed: int = 0


class _TaskBatches:
    """Batches of a small labelled set: each image appears twice under different augmentations, so every
    anchor has a same-class neighbour even at one shot."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean, std, cfg: AdaptConfig) -> None:
        self.images, self.labels = images, torch.from_numpy(labels)
        self.mean, self.std = mean, std
        self.augmenter = Augmenter(cfg.augment, images.shape[1])
        self.rng = np.random.default_rng(cfg.seed)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.size = max(1, min(cfg.batch_size // 2, len(images)))

    def __call__(self) -> Batch:
        pick = np.tile(self.rng.choice(len(self.images), self.size, replace=False), 2)
        x = self.augmenter(to_float(self.images[pick]), self.generator)
        return Batch(normalize(x, self.mean, self.std), self.labels[pick])


def _optimise(model: Method, batches: _TaskBatches, steps: int, lr: float, cfg: AdaptConfig) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1))
    model.train()
    for step in range(steps):
        model.set_progress(step // cfg.steps_per_epoch, max(steps // cfg.steps_per_epoch, 1))
        loss = model.loss(batches()).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()


def train_task_student(
    images: np.ndarray,
    labels: np.ndarray,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    cfg: AdaptConfig,
    teacher: Method | None = None,
    start: Method | None = None,
) -> Pretrain | RefilledClassify:
    """A student classifier over the task's classes (labels 0..C-1) trained on uint8 HWC images; with a
    teacher, by REFILLED's two steps, without one, by cross-entropy alone. Its backbone starts from
    random weights, or from `start`'s (same architecture), e.g. the base-class model that teaches it."""
    torch.manual_seed(cfg.seed)
    num_classes = int(labels.max()) + 1
    backbone = build_backbone(cfg.backbone, images.shape[-1], images.shape[1])
    if start is not None:
        try:
            backbone.load_state_dict(start.backbone.state_dict())
        except RuntimeError:
            raise ConfigError(
                f"the {cfg.backbone} student cannot start from a {type(start.backbone).__name__} model's "
                "weights: their backbones differ"
            ) from None
    batches = _TaskBatches(images, labels, mean, std, cfg)
    lr = cfg.lr if start is None else cfg.start_lr
    if teacher is None:
        student: Pretrain | RefilledClassify = Pretrain(backbone, num_classes)
    else:
        embed = RefilledEmbed(backbone, num_classes, tau=cfg.tau)
        embed.set_teacher(teacher)
        _optimise(embed, batches, cfg.embed_steps, lr, cfg)
        student = RefilledClassify(backbone, num_classes, lam=cfg.lam, tau=cfg.tau)
        student.set_teacher(teacher)
    _optimise(student, batches, cfg.classify_steps, lr, cfg)
    return student.eval()


@torch.no_grad()
def student_logits(student: Pretrain | RefilledClassify, images: np.ndarray, mean, std) -> torch.Tensor:
    """The student's class logits [N, C] for uint8 HWC images."""
    x = normalize(to_float(images), mean, std)
    return student.classifier(student.backbone(x))
