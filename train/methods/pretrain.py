"""Supervised pre-training (the RFS/"Baseline" recipe): cross-entropy over all base classes with a linear
classifier on the embedding; optionally every batch is extended with its 90/180/270-degree rotations,
which keep their class label."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from distilshot.core.manifest import Head
from distilshot.train.augment import with_rotations
from distilshot.train.backbones import Backbone
from distilshot.train.methods.base import Batch, LossOutput, Method, accuracy, cosine_head


class Pretrain(Method):
    name = "pretrain"
    sampling = "batches"

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

    def head(self) -> Head:
        # globally trained features compare best by angle (Chen et al. 2019; RFS normalises them too)
        return cosine_head()
