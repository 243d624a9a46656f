"""Prototypical Networks (Snell et al. 2017): episodic training, Euclidean distance to class means."""

from __future__ import annotations

import torch.nn.functional as F

from distilshot.core.enums import Sampling
from distilshot.train.methods import Stage, register_method, register_recipe
from distilshot.train.methods.base import Batch, LossOutput, Method, accuracy, prototype_logits

_OMNIGLOT_QUICK = {"n_way": 60, "k_shot": 1, "n_query": 5}  # beat 30-way 5-shot at equal budget (measured)


@register_method(
    "protonet",
    presets={
        # Snell et al. 2017: Adam 1e-3 halved every 2000 episodes; 60-way training on Omniglot, 30-way else
        "paper": {
            "optimizer": "adam",
            "lr": 1e-3,
            "schedule": "step",
            "gamma": 0.5,
            "epochs": 20,
            "steps_per_epoch": 1000,
            "milestones": [2, 4, 6, 8, 10, 12, 14, 16, 18],
            "n_way": 30,
            "k_shot": 5,
            "n_query": 15,
        },
        # 8 x 100 episodes of 300 images; Omniglot's 60-way 1-shot left CIFAR-FS at chance (measured)
        "quick": {
            "optimizer": "adam",
            "lr": 1e-3,
            "schedule": "cosine",
            "epochs": 8,
            "steps_per_epoch": 100,
            "n_way": 20,
            "k_shot": 5,
            "n_query": 10,
        },
    },
    datasets={
        ("paper", "omniglot"): {"n_way": 60, "n_query": 5},
        ("paper", "omniglot-vinyals"): {"n_way": 60, "n_query": 5},
        ("quick", "omniglot"): _OMNIGLOT_QUICK,
        ("quick", "omniglot-vinyals"): _OMNIGLOT_QUICK,
    },
)
class ProtoNet(Method):
    sampling = Sampling.EPISODES

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


register_recipe("protonet", "episodic, Euclidean distance to class means", Stage("protonet", "protonet"))
