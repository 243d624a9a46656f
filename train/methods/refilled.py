"""REFILLED (Ye, Lu & Zhan, CVPR 2020): distil a cross-task teacher into a (small) student in two steps.

Step 1 ("refilled-embed") matches the teacher's stochastic triplet probabilities on the student's
embedding; step 2 ("refilled-classify") trains the student's classifier with cross-entropy plus a local
knowledge-distillation term against the teacher's nearest-class-mean confidences over the classes of
the batch. The teacher needs only an embedding, so it may come from any method, backbone or class set.
Both steps sample class-balanced batches so that every anchor has same-class neighbours.

Step 1 has two variants (README.md, "Methods" and its "REFILLED" section):
- "code" (default, every preset): the authors' training script. Plain (not squared) Euclidean distances of the
  L2-normalised embeddings; the temperature (4) divides both the teacher's and the student's margins; the
  triplets are every (anchor, same-label neighbour, impostor) with 0 < d_ik - d_ij <= 0.2 on the student's
  embedding (pytorch-metric-learning's semi-hard TripletMarginMiner, margin 0.2); the loss is 1000 times
  the mean KL over the 2T entries (p_ijk and 1 - p_ijk of T triplets), as KLDivLoss(reduction="batchmean").
- "paper-text": the supplement (section 1.1, Eq. 2-3). Squared distances, the temperature (2) on the
  teacher's side only, for each anchor and neighbour the nearest impostor farther than the neighbour, and
  the KL summed over triplets. No constant turns this sum into the code's mean: T varies from batch to batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from distilshot.core.enums import Metric, Sampling, Variant
from distilshot.errors import ConfigError
from distilshot.train.backbones import Backbone
from distilshot.train.methods import Stage, register_method, register_recipe
from distilshot.train.methods.base import Batch, LossOutput, Method, accuracy, squared_euclidean
from distilshot.train.methods.pretrain import SGD_RFS


def teacher_embedding(teacher: Method, x: torch.Tensor) -> torch.Tensor:
    """All of the teacher's embedding outputs in the images' dtype, concatenated (BML's two views become
    one vector)."""
    with torch.no_grad():
        outputs = teacher.embed(x)
        return torch.cat([outputs[k].to(x.dtype) for k in sorted(outputs)], dim=1)


TAU = {Variant.CODE: 4.0, Variant.PAPER_TEXT: 2.0}
SCALE = {Variant.CODE: 1000.0, Variant.PAPER_TEXT: 1.0}

# Supplement 2.1, cross-task: both steps SGD momentum 0.9, batch 128, 200 epochs, lr 0.1 times 0.2 every 50
# epochs (step 2: teacher temperature 2, lambda 0.01 decaying by exp(-0.05) per epoch: the method's
# defaults; step 1: the code's loss, tau 4 on both sides). Batches are class-balanced (16 classes x 8) so
# that every anchor has triplet neighbours.
_PAPER = {
    **SGD_RFS,
    "lr": 0.1,
    "schedule": "step",
    "milestones": [50, 100, 150],
    "gamma": 0.2,
    "epochs": 200,
    "steps_per_epoch": 0,
    "n_way": 16,
    "k_shot": 8,
}
# 6 x 100 balanced batches of 128 per step: ~2-3 CPU minutes each on CIFAR-FS with a ConvNet-4 student
_QUICK = {
    **SGD_RFS,
    "lr": 0.05,
    "schedule": "cosine",
    "epochs": 6,
    "steps_per_epoch": 100,
    "n_way": 16,
    "k_shot": 8,
}
_CODE = {"method_params": {"variant": "code"}}  # step 1 trains with the code's loss


def nearest_impostor_triplets(distances: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
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


def semi_hard_triplets(distances: torch.Tensor, labels: torch.Tensor, margin: float = 0.2) -> torch.Tensor:
    """Supplement 1.1's semi-hard triplets as the authors' code mines them (pytorch-metric-learning's rule):
    every anchor i, every target neighbour j != i, and every impostor k with 0 < d_ik - d_ij <= margin.
    Returns [T, 3] index triplets, ordered by (i, j, k)."""
    same = labels[:, None] == labels[None, :]
    positives = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    gap = distances[:, None, :] - distances[:, :, None]  # [i, j, k] = d_ik - d_ij
    chosen = positives[:, :, None] & ~same[:, None, :] & (gap > 0) & (gap <= margin)
    return torch.nonzero(chosen)


def euclidean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise Euclidean distances between a [T, d] and b [T, d] -> [T]."""
    return (a - b).norm(dim=1)


def triplet_kl(
    student: torch.Tensor,
    teacher: torch.Tensor,
    triplets: torch.Tensor,
    tau: float,
    variant: Variant = Variant.CODE,
) -> torch.Tensor:
    """Eq. 2-3: KL(Bernoulli(p_T) || Bernoulli(p_S)) per triplet, p = sigmoid((d_ik - d_ij) / tau), of
    L2-normalised embeddings; reduced, and tau applied, as the variant says (module docstring)."""
    i, j, k = triplets.unbind(1)
    if variant == Variant.CODE:
        margin_s = (euclidean(student[i], student[k]) - euclidean(student[i], student[j])) / tau
        margin_t = (euclidean(teacher[i], teacher[k]) - euclidean(teacher[i], teacher[j])) / tau
    else:
        d_s, d_t = squared_euclidean(student, student), squared_euclidean(teacher, teacher)
        margin_s = d_s[i, k] - d_s[i, j]
        margin_t = (d_t[i, k] - d_t[i, j]) / tau
    p_t = torch.sigmoid(margin_t)
    log_p_s, log_q_s = F.logsigmoid(margin_s), F.logsigmoid(-margin_s)
    kl = p_t * (torch.log(p_t) - log_p_s) + (1 - p_t) * (torch.log1p(-p_t) - log_q_s)
    return kl.sum() / (2 * len(kl)) if variant == Variant.CODE else kl.sum()


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


@register_method("refilled-embed", presets={"paper": {**_PAPER, **_CODE}, "quick": {**_QUICK, **_CODE}})
class RefilledEmbed(Method):
    sampling = Sampling.BALANCED
    needs_teacher = True
    # the embedding is learned on the unit sphere: compare by angle
    head_metric = Metric.COSINE

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        tau: float | None = None,
        scale: float | None = None,
        variant: str = Variant.CODE,
    ) -> None:
        """tau: the temperature (None: 4 for the code, the supplement's cross-task 2 for the paper text);
        scale: loss multiplier (None: the code's 1000 on its mean, 1 on the paper's sum)."""
        super().__init__(backbone, num_classes)
        self.variant = Variant.parse(variant, "refilled-embed variant")
        self.tau = TAU[self.variant] if tau is None else tau
        self.scale = SCALE[self.variant] if scale is None else scale

    def loss(self, batch: Batch) -> LossOutput:
        if self.teacher is None:
            raise ConfigError("refilled-embed learns from a teacher; attach one with set_teacher")
        student = F.normalize(self.backbone(batch.images), dim=1)
        teacher = F.normalize(teacher_embedding(self.teacher, batch.images), dim=1)
        with torch.no_grad():
            if self.variant is Variant.CODE:
                triplets = semi_hard_triplets(torch.cdist(student, student), batch.labels)
            else:
                triplets = nearest_impostor_triplets(squared_euclidean(student, student), batch.labels)
        if len(triplets) == 0:  # no impostor in the semi-hard band: nothing to match yet
            return LossOutput(student.sum() * 0.0, {"triplets": 0.0})
        loss = self.scale * triplet_kl(student, teacher, triplets, self.tau, self.variant)
        return LossOutput(loss, {"triplets": float(len(triplets))})


@register_method("refilled-classify", presets={"paper": _PAPER, "quick": _QUICK})
class RefilledClassify(Method):
    sampling = Sampling.BALANCED
    needs_teacher = True
    # it fine-tunes refilled-embed's unit-sphere embedding: still compared by angle
    head_metric = Metric.COSINE

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
        if self.teacher is None:
            raise ConfigError("refilled-classify learns from a teacher; attach one with set_teacher")
        logits = self.classifier(self.backbone(batch.images))
        teacher = F.normalize(teacher_embedding(self.teacher, batch.images), dim=1)
        ce = F.cross_entropy(logits, batch.labels)
        kd = local_kd(logits, teacher, batch.labels, self.tau)
        return LossOutput(
            ce + self.weight * kd,
            {"acc": accuracy(logits, batch.labels), "ce": ce.item(), "lkd": kd.item(), "lambda": self.weight},
        )


# Compress mode: a teacher (any backbone, --teacher-backbone, or an existing --teacher checkpoint) distilled
# into the student's embedding, then into its classifier
register_recipe(
    "refilled",
    "teacher -> distilled small student",
    Stage("teacher", "pretrain"),
    Stage("embed", "refilled-embed", teacher="teacher"),
    Stage("classify", "refilled-classify", teacher="teacher", init="embed"),
)
