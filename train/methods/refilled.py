"""REFILLED (Ye, Lu & Zhan, CVPR 2020): distil a cross-task teacher into a (small) student in two steps.

Step 1 ("refilled-embed") matches the teacher's stochastic triplet probabilities on the student's
embedding; step 2 ("refilled-classify") trains the student's classifier with cross-entropy plus a local
knowledge-distillation term against the teacher's nearest-class-mean confidences over the classes of
the batch. The teacher needs only an embedding, so it may come from any method, backbone or class set.
Both steps sample class-balanced batches so that every anchor has same-class neighbours.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from distilshot.train.backbones import Backbone
from distilshot.train.methods.base import Batch, LossOutput, Method, accuracy, squared_euclidean


def teacher_embedding(teacher: Method, x: torch.Tensor) -> torch.Tensor:
    """All of the teacher's embedding outputs, concatenated (BML's two views become one vector)."""
    with torch.no_grad():
        outputs = teacher.embed(x)
        return torch.cat([outputs[k].float() for k in sorted(outputs)], dim=1)


def semi_hard_triplets(distances: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Supplement 1.1: every anchor i, every target neighbour j (same label), and as impostor k the
    nearest different-label instance farther from i than j. Returns [T, 3] index triplets."""
    same = labels[:, None] == labels[None, :]
    positives = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    # candidate impostors for (i, j): different label and farther from i than j is
    farther = distances[:, None, :] > distances[:, :, None]
    candidates = farther & ~same[:, None, :]
    nearest, k = torch.where(candidates, distances[:, None, :], torch.inf).min(dim=2)
    i, j = torch.nonzero(positives & torch.isfinite(nearest), as_tuple=True)
    return torch.stack([i, j, k[i, j]], dim=1)


def triplet_kl(
    student: torch.Tensor, teacher: torch.Tensor, triplets: torch.Tensor, tau: float
) -> torch.Tensor:
    """Eq. 2-3: sum over triplets of KL(Bernoulli(p_T) || Bernoulli(p_S)), p = sigmoid((d_ik - d_ij) / t),
    with squared Euclidean distances of L2-normalised embeddings and the temperature on the teacher only."""
    i, j, k = triplets.unbind(1)
    d_s = squared_euclidean(student, student)
    d_t = squared_euclidean(teacher, teacher)
    margin_s = d_s[i, k] - d_s[i, j]
    p_t = torch.sigmoid((d_t[i, k] - d_t[i, j]) / tau)
    log_p_s, log_q_s = F.logsigmoid(margin_s), F.logsigmoid(-margin_s)
    kl = p_t * (torch.log(p_t) - log_p_s) + (1 - p_t) * (torch.log1p(-p_t) - log_q_s)
    return kl.sum()


def local_kd(
    student_logits: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, tau: float
) -> torch.Tensor:
    """Eq. 6's distillation term: KL(teacher NCM confidence || student softmax), both over only the classes
    present in the batch; the teacher's class means are the batch means of its (L2-normalised) embedding,
    its confidences softmax(-distance / tau); the student's logits are not smoothed."""
    classes, local = torch.unique(labels, return_inverse=True)
    centres = torch.zeros(len(classes), teacher.shape[1], device=teacher.device).index_add_(0, local, teacher)
    centres /= torch.bincount(local, minlength=len(classes)).unsqueeze(1)
    log_p_t = F.log_softmax(-squared_euclidean(teacher, centres) / tau, dim=1)
    log_p_s = F.log_softmax(student_logits[:, classes], dim=1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(1).mean()


class RefilledEmbed(Method):
    name = "refilled-embed"
    sampling = "balanced"
    needs_teacher = True

    def __init__(self, backbone: Backbone, num_classes: int, tau: float = 2.0, scale: float = 1.0) -> None:
        """tau: teacher temperature (2 for cross-task in the supplement, 4 in the authors' code);
        scale: loss multiplier (the authors' code uses 1000 on a mean instead of the paper's sum)."""
        super().__init__(backbone, num_classes)
        self.tau, self.scale = tau, scale

    def loss(self, batch: Batch) -> LossOutput:
        assert self.teacher is not None, "refilled-embed needs a teacher"
        student = F.normalize(self.backbone(batch.images), dim=1)
        teacher = F.normalize(teacher_embedding(self.teacher, batch.images), dim=1)
        triplets = semi_hard_triplets(squared_euclidean(student, student).detach(), batch.labels)
        if len(triplets) == 0:  # every impostor already closer than its neighbour: nothing to match yet
            return LossOutput(student.sum() * 0.0, {"triplets": 0.0})
        loss = self.scale * triplet_kl(student, teacher, triplets, self.tau)
        return LossOutput(loss, {"triplets": float(len(triplets))})

    def head(self) -> dict[str, Any]:
        # the embedding is learned on the unit sphere: compare by angle
        return {"metric": "cosine", "weights": {"embedding": 1.0}, "temperature": 0.1}


class RefilledClassify(Method):
    name = "refilled-classify"
    sampling = "balanced"
    needs_teacher = True

    def __init__(
        self, backbone: Backbone, num_classes: int, lam: float = 0.01, decay: float = 0.05, tau: float = 2.0
    ) -> None:
        """lam: initial weight of the local KD term, multiplied by exp(-decay) after every epoch
        (supplement 2.1); tau: teacher temperature."""
        super().__init__(backbone, num_classes)
        self.lam, self.decay, self.tau = lam, decay, tau
        self.classifier = nn.Linear(backbone.embedding_dim, num_classes)
        self.epoch = 0

    def set_progress(self, epoch: int, epochs: int) -> None:
        super().set_progress(epoch, epochs)
        self.epoch = epoch

    @property
    def weight(self) -> float:
        return self.lam * math.exp(-self.decay * self.epoch)

    def loss(self, batch: Batch) -> LossOutput:
        """Eq. 6: CE + lambda * KL(p_T(y | x) over the batch's classes || softmax(f_S(x)) over them)."""
        assert self.teacher is not None, "refilled-classify needs a teacher"
        logits = self.classifier(self.backbone(batch.images))
        teacher = F.normalize(teacher_embedding(self.teacher, batch.images), dim=1)
        ce = F.cross_entropy(logits, batch.labels)
        kd = local_kd(logits, teacher, batch.labels, self.tau)
        return LossOutput(
            ce + self.weight * kd,
            {"acc": accuracy(logits, batch.labels), "ce": ce.item(), "lkd": kd.item(), "lambda": self.weight},
        )

    def head(self) -> dict[str, Any]:
        return {"metric": "cosine", "weights": {"embedding": 1.0}, "temperature": 0.1}
