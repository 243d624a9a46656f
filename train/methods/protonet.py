"""Prototypical Networks (Snell et al. 2017): episodic training, Euclidean distance to class means."""

from __future__ import annotations

import torch.nn.functional as F

from distilshot.train.methods.base import Batch, LossOutput, Method, accuracy, prototype_logits


class ProtoNet(Method):
    name = "protonet"
    sampling = "episodes"

    def loss(self, batch: Batch) -> LossOutput:
        """Eq. 2 of Snell et al.: -log softmax(-d(f(x), c_k)) with d the squared Euclidean distance."""
        z = self.backbone(batch.images)
        s = batch.n_support
        logits = prototype_logits(
            {"embedding": z[:s]}, {"embedding": z[s:]}, batch.n_way, batch.k_shot, self.head()
        )
        _, query_labels = batch.episode_labels()
        loss = F.cross_entropy(logits, query_labels)
        return LossOutput(loss, {"acc": accuracy(logits, query_labels)})
