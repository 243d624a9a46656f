"""Global Relatedness Decoupled-Distillation (GRDD, Zhou et al. 2021), two stages.

Stage 1, the global learner: classes over all base classes on every image at four rotations, and the
rotation predicted from the class prediction (section 3.2.1). Stage 2, the meta-learner: episodic; the
frozen global learner's support x query cosine relatedness is distilled row by row (one support against
all queries) into the meta-learner's, regularised by a cross-entropy on the relatedness (section 3.2.2).
The meta-learner is what gets exported.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distilshot.core.enums import Metric, Sampling
from distilshot.errors import ConfigError
from distilshot.train.augment import with_rotations
from distilshot.train.backbones import Backbone
from distilshot.train.methods import Stage, register_method, register_recipe
from distilshot.train.methods.base import Batch, LossOutput, Method, accuracy
from distilshot.train.methods.pretrain import QUICK_BATCHES, QUICK_BATCHES_OMNIGLOT, SGD_RFS


@register_method(
    "grdd-global",
    presets={
        # Section 4.1: SGD, wd 5e-4 (momentum unstated: RFS's 0.9), batch 64, 90 epochs, 'poly' decay with
        # power 0.9. The initial rate is 5e-2 in section 3.2.1 but 1e-1 in section 4.1; we use 5e-2, the
        # rate stated with the loss (Eq. 5-7); --lr would change the meta-learner's too.
        "paper": {
            **SGD_RFS,
            "lr": 0.05,
            "batch_size": 64,
            "schedule": "poly",
            "epochs": 90,
            "steps_per_epoch": 0,
            "rotated_classes": False,
        },
        "quick": {**QUICK_BATCHES, "schedule": "poly"},
    },
    datasets={("quick", "omniglot"): QUICK_BATCHES_OMNIGLOT},
)
class GRDDGlobal(Method):
    sampling = Sampling.BATCHES
    # a globally trained feature: compared by angle, as the meta-learner it teaches is
    head_metric = Metric.COSINE

    def __init__(self, backbone: Backbone, num_classes: int) -> None:
        super().__init__(backbone, num_classes)
        self.classifier = nn.Linear(backbone.embedding_dim, num_classes)  # FC(.|theta_3), Eq. 3
        self.rotation_head = nn.Linear(num_classes, 4)  # FC(.|theta_4) on the class prediction, Eq. 4

    def loss(self, batch: Batch) -> LossOutput:
        """Eq. 5-9: L_c (Eq. 8) + L_r (Eq. 9, called L_a in Eq. 5-7), each a cross-entropy averaged over
        the N_b x 4 rotated images; p = FC(h) are the class logits and r = FC(p) the rotation logits."""
        images, rotation = with_rotations(batch.images)
        labels = batch.labels.repeat(4)
        logits = self.classifier(self.backbone(images))
        rotation_logits = self.rotation_head(logits)
        class_loss = F.cross_entropy(logits, labels)
        rotation_loss = F.cross_entropy(rotation_logits, rotation)
        return LossOutput(
            class_loss + rotation_loss,
            {
                "acc": accuracy(logits, labels),
                "ce": class_loss.item(),
                "rot": rotation_loss.item(),
                "rot_acc": accuracy(rotation_logits, rotation),
            },
        )


def relatedness(support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Eq. 10: cosine similarity of every support [N_S, d] with every query [N_Q, d] -> [N_S, N_Q]."""
    return F.normalize(support, dim=1) @ F.normalize(query, dim=1).T


def decoupled_kl(teacher: torch.Tensor, student: torch.Tensor, temperature: float) -> torch.Tensor:
    """Eq. 11-12: each support's row of relatedness becomes a softmax over the queries at temperature T;
    L_kl = sum over the N_S rows of KL(teacher row || student row)."""
    log_student = F.log_softmax(student / temperature, dim=1)
    log_teacher = F.log_softmax(teacher / temperature, dim=1)
    return (log_teacher.exp() * (log_teacher - log_student)).sum()


def relatedness_scores(related: torch.Tensor, support_labels: torch.Tensor, n_way: int) -> torch.Tensor:
    """Eq. 14: sigma_i = sum_j R^T_ij one_hot(y^S_j), each query's relatedness summed over the supports of
    each class -> [N_Q, C]."""
    return related.T @ F.one_hot(support_labels, n_way).to(related.dtype)


def relatedness_ce(
    related: torch.Tensor, support_labels: torch.Tensor, query_labels: torch.Tensor, n_way: int
) -> torch.Tensor:
    """Eq. 13: L_rt = -1/N_Q sum_i log softmax(sigma_i)[y_i]. The paper writes log(sigma_i) without the
    sign and the softmax, as it writes log(p) for the class logits p in Eq. 8: summed cosines can be
    negative, so sigma must be normalised over the classes to be a distribution; no temperature is
    applied (Eq. 14 has none)."""
    return F.cross_entropy(relatedness_scores(related, support_labels, n_way), query_labels)


def teacher_features(teacher: Method, images: torch.Tensor) -> torch.Tensor:
    """The teacher's embedding; a multi-output teacher's outputs are concatenated in name order."""
    outputs = teacher.embed(images)
    return torch.cat([outputs[name].flatten(1) for name in sorted(outputs)], dim=1)


@register_method(
    "grdd-meta",
    presets={
        # Stage 2: lr 1e-3, 15 epochs, x0.1 for the last 5. The paper gives neither the training episodes nor
        # their number: 5-way 5-shot 15-query episodes, 1000 per epoch (the MetaOptNet convention of the
        # ResNet-12 methods it compares with).
        "paper": {
            **SGD_RFS,
            "lr": 1e-3,
            "schedule": "step",
            "milestones": [10],
            "epochs": 15,
            "steps_per_epoch": 1000,
            "n_way": 5,
            "k_shot": 5,
            "n_query": 15,
            "rotated_classes": False,
        },
        # 6 x 150 episodes of 100 images (+ the teacher's forward pass): ~2.5 CPU minutes on CIFAR-FS with a
        # ConvNet-4 teacher; x0.1 for the last third as in the paper
        "quick": {
            **SGD_RFS,
            "lr": 1e-2,  # not 1e-3: over far fewer steps that rate would barely move the start
            "schedule": "step",
            "milestones": [4],
            "epochs": 6,
            "steps_per_epoch": 150,
            "n_way": 5,
            "k_shot": 5,
            "n_query": 15,
            "rotated_classes": False,
        },
    },
    datasets={
        # the meta-learner trains on the 20-way 1-shot episodes Omniglot is evaluated with
        ("quick", "omniglot"): {"n_way": 20, "k_shot": 1, "n_query": 5},
    },
)
class GRDDMeta(Method):
    sampling = Sampling.EPISODES
    needs_teacher = True
    # trained and evaluated on cosine relatedness: served as cosine similarity to class prototypes
    head_metric = Metric.COSINE

    def __init__(
        self, backbone: Backbone, num_classes: int, temperature: float = 4.0, gamma: float = 0.2
    ) -> None:
        super().__init__(backbone, num_classes)
        self.temperature = temperature
        self.gamma = gamma

    def loss(self, batch: Batch) -> LossOutput:
        """Eq. 15: L_kl (Eq. 12) + gamma * L_rt (Eq. 13) on one episode."""
        if self.teacher is None:
            raise ConfigError("grdd-meta learns from a global learner; attach one with set_teacher")
        s = batch.n_support
        z = self.backbone(batch.images)
        with torch.no_grad():
            g = teacher_features(self.teacher, batch.images)
        student = relatedness(z[:s], z[s:])
        teacher = relatedness(g[:s], g[s:])
        support_labels, query_labels = batch.episode_labels()
        kl = decoupled_kl(teacher, student, self.temperature)
        rt = relatedness_ce(student, support_labels, query_labels, batch.n_way)
        scores = relatedness_scores(student.detach(), support_labels, batch.n_way)
        return LossOutput(
            kl + self.gamma * rt, {"acc": accuracy(scores, query_labels), "kl": kl.item(), "rt": rt.item()}
        )


# The meta-learner starts from the global learner (the paper's "CL+GR": its stage-2 lr 1e-3 over 15 epochs
# fine-tunes) and distils the frozen global learner's relatedness
register_recipe(
    "grdd",
    "global learner -> relatedness-distilled meta-learner",
    Stage("global", "grdd-global"),
    Stage("meta", "grdd-meta", teacher="global", init="global"),
)
