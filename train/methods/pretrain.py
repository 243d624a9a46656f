"""Supervised pre-training (the RFS/"Baseline" recipe): cross-entropy over all base classes with a linear
classifier on the embedding; optionally every batch is extended with its 90/180/270-degree rotations,
which keep their class label."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from distilshot.core.enums import Metric, Sampling
from distilshot.train.augment import with_rotations
from distilshot.train.backbones import Backbone
from distilshot.train.methods import Stage, register_method, register_recipe
from distilshot.train.methods.base import Batch, LossOutput, Method, accuracy

# The RFS optimiser (Tian et al. 2020), which the distillation methods' presets reuse
SGD_RFS = {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4}
# The quick budget of the teachers trained on plain batches (SKD generation 0, GRDD's global learner):
# 8 x 80 batches of 64 on CIFAR-FS; Omniglot's 815 characters at 28 px are cheaper images, so more steps
# in the same few minutes
QUICK_BATCHES = {
    **SGD_RFS,
    "lr": 0.05,
    "batch_size": 64,
    "epochs": 8,
    "steps_per_epoch": 80,
    "rotated_classes": False,
}
QUICK_BATCHES_OMNIGLOT = {"steps_per_epoch": 100}


@register_method(
    "pretrain",
    presets={
        # RFS: SGD 0.05, momentum 0.9, wd 5e-4, batch 64, 100 epochs, x0.1 at 60 and 80
        "paper": {
            **SGD_RFS,
            "lr": 0.05,
            "batch_size": 64,
            "schedule": "step",
            "epochs": 100,
            "steps_per_epoch": 0,
            "milestones": [60, 80],
        },
        "quick": {
            **SGD_RFS,
            "lr": 0.05,
            "batch_size": 64,
            "schedule": "cosine",
            "epochs": 8,
            "steps_per_epoch": 150,
        },
    },
    datasets={
        # 3,260 rotated classes need the larger batch and learning rate to get far in ~6.5 CPU minutes
        ("quick", "omniglot"): {"lr": 0.1, "batch_size": 128, "epochs": 12, "steps_per_epoch": 300},
    },
)
class Pretrain(Method):
    sampling = Sampling.BATCHES
    # globally trained features compare best by angle (Chen et al. 2019; RFS normalises them too)
    head_metric = Metric.COSINE

    def __init__(self, backbone: Backbone, num_classes: int, rotation_augment: bool = False) -> None:
        super().__init__(backbone, num_classes)
        self.rotation_augment = rotation_augment
        self.classifier = nn.Linear(backbone.embedding_dim, num_classes)

    def loss(self, batch: Batch) -> LossOutput:
        images, labels = batch.images, batch.labels
        if self.rotation_augment:
            images, _ = with_rotations(images)
            labels = labels.repeat(4)
        logits = self.classifier(self.backbone(images))
        loss = F.cross_entropy(logits, labels)
        return LossOutput(loss, {"acc": accuracy(logits, labels)})


register_recipe(
    "pretrain",
    "cross-entropy over all base classes, optionally rotation-augmented",
    Stage("pretrain", "pretrain"),
)
