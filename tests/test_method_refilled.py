"""REFILLED's losses against values worked out by hand, step 1 against the authors' code, and a falling loss
on real data."""

import math

import pytest
import torch
import torch.nn.functional as F
from method_runs import train_steps
from torch import nn

from distilshot.errors import ConfigError
from distilshot.train.backbones.base import Backbone
from distilshot.train.checkpoint import ModelSpec
from distilshot.train.data.registry import load_split
from distilshot.train.methods.base import Batch
from distilshot.train.methods.pretrain import Pretrain
from distilshot.train.methods.refilled import (
    RefilledEmbed,
    local_kd,
    nearest_impostor_triplets,
    semi_hard_triplets,
    triplet_kl,
)
from distilshot.train.samplers import ClassBalancedBatchSampler
from distilshot.train.trainer import BatchMaker


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_nearest_impostor_triplets_by_hand() -> None:
    # 1-d points 0, 1 (class 0) and 3, 0.5 (class 1); squared distances
    x = torch.tensor([[0.0], [1.0], [3.0], [0.5]])
    labels = torch.tensor([0, 0, 1, 1])
    d = (x - x.T) ** 2
    triplets = {tuple(t) for t in nearest_impostor_triplets(d, labels).tolist()}
    # (0,1): impostors at 9 and 0.25, only 9 > 1 -> 2; (1,0): 4 > 1 -> 2; (2,3): 9 > 6.25 -> 0;
    # (3,2): both impostors at 0.25 < 6.25 -> no triplet
    assert triplets == {(0, 1, 2), (1, 0, 2), (2, 3, 0)}


def test_semi_hard_triplets_take_every_impostor_in_the_margin_band() -> None:
    # 1-d points 0, 0.1 (class 0) and 0.15, 0.25, 0.45, -0.05 (class 1); plain distances
    x = torch.tensor([[0.0], [0.1], [0.15], [0.25], [0.45], [-0.05]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 1, 1])
    triplets = semi_hard_triplets((x - x.T).abs(), labels).tolist()
    # every (i, j, k) with 0 < d_ik - d_ij <= 0.2, e.g. anchor 0, neighbour 1 (d 0.1): impostors 2 (0.15)
    # and 3 (0.25), not 4 (0.45, beyond the band) nor 5 (0.05, closer); anchor 3, neighbour 2 (d 0.1):
    # 0 (0.25) and 1 (0.15); anchor 5 has no impostor in any band
    expected = [
        [0, 1, 2], [0, 1, 3], [1, 0, 3], [1, 0, 5], [2, 3, 0], [3, 2, 0], [3, 2, 1], [3, 4, 0], [4, 2, 0],
        [4, 2, 1], [4, 3, 1],
    ]  # fmt: skip
    assert triplets == expected


def test_triplet_kl_by_hand_with_two_triplets() -> None:
    student = torch.tensor([[0.0], [1.0], [3.0], [1.5]])  # triplets (0, 1, 2) and (0, 1, 3)
    teacher = torch.tensor([[0.0], [2.0], [2.5], [3.0]])
    triplets = torch.tensor([[0, 1, 2], [0, 1, 3]])

    def bernoulli_kl(p: float, q: float) -> float:
        return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))

    # the paper's text: squared distances, tau on the teacher only, summed
    pairs = [(sigmoid((6.25 - 4) / 2), sigmoid(9 - 1)), (sigmoid((9 - 4) / 2), sigmoid(2.25 - 1))]
    paper = triplet_kl(student, teacher, triplets, tau=2.0, variant="paper-text")
    assert paper.item() == pytest.approx(sum(bernoulli_kl(p, q) for p, q in pairs), rel=1e-5)
    # the code: plain distances, tau on both sides, the mean over the 2T = 4 entries
    pairs = [(sigmoid((2.5 - 2) / 2), sigmoid((3 - 1) / 2)), (sigmoid((3 - 2) / 2), sigmoid((1.5 - 1) / 2))]
    code = triplet_kl(student, teacher, triplets, tau=2.0, variant="code")
    assert code.item() == pytest.approx(sum(bernoulli_kl(p, q) for p, q in pairs) / 4, rel=1e-5)


AUTHORS_IMAGES = [
    [1.0, 0.25, 0.125], [0.875, 0.375, -0.125], [0.75, 0.125, 0.5], [0.25, 1.0, 0.25], [0.5, 0.75, 0.125],
    [0.125, 0.875, -0.25], [0.25, 0.25, 1.0], [0.625, 0.5, 0.75],
]  # fmt: skip
AUTHORS_LABELS = [0, 0, 0, 1, 1, 1, 2, 2]
AUTHORS_STUDENT = [[1.0, 0.25, 0.0], [0.25, 1.0, 0.125], [0.0, -0.25, 1.0]]
# pytorch-metric-learning 2.9.0's TripletMarginMiner(margin=0.2, type_of_triplets="semihard") on the
# student's embedding of these images, as the authors' train_stage1 calls it
AUTHORS_TRIPLETS = [
    [0, 2, 4], [0, 2, 7], [1, 0, 4], [1, 2, 7], [2, 0, 6], [2, 1, 3], [2, 1, 4], [3, 5, 1], [3, 5, 7],
    [4, 3, 1], [4, 5, 7], [5, 4, 1], [6, 7, 2], [7, 6, 0], [7, 6, 3], [7, 6, 4],
]  # fmt: skip


def authors_embed(**params) -> RefilledEmbed:
    """Student: a 1x1 convolution of 3-channel 1x1 images; teacher: the identity."""
    conv = nn.Conv2d(3, 3, kernel_size=1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(AUTHORS_STUDENT).view(3, 3, 1, 1))
    method = RefilledEmbed(Backbone([conv], pooling="flatten", in_channels=3, image_size=1), 3, **params)
    identity = Backbone([nn.Identity()], pooling="flatten", in_channels=3, image_size=1)
    method.set_teacher(Pretrain(identity, num_classes=3))
    return method


def test_semi_hard_triplets_match_pytorch_metric_learning() -> None:
    """Expected: the triplets that `train_stage1` of njulus/REFILLED@be649aa4f75867ce670196603f45cf17fe86a5ac,
    Train.py, got from pytorch-metric-learning 2.9.0's miner on this batch (float64)."""
    torch.set_default_dtype(torch.float64)
    try:
        method = authors_embed()
        student = F.normalize(method.backbone(torch.tensor(AUTHORS_IMAGES).view(8, 3, 1, 1)), dim=1)
    finally:
        torch.set_default_dtype(torch.float32)
    triplets = semi_hard_triplets(torch.cdist(student, student), torch.tensor(AUTHORS_LABELS))
    assert triplets.tolist() == AUTHORS_TRIPLETS


@pytest.mark.parametrize(("tau", "expected"), [(None, 0.09423806883485618), (2.0, 0.3758322820554619)])
def test_embedding_loss_matches_the_authors_code(tau: float | None, expected: float) -> None:
    """Expected values: `train_stage1` of njulus/REFILLED@be649aa4f75867ce670196603f45cf17fe86a5ac, Train.py
    (flag_merge off, pytorch-metric-learning 2.9.0's miner), one batch of these images in float64, with
    --tau1 4 (its default; ours too) and 2. Sixteen triplets, several per anchor and neighbour, so the
    miner, the distance, where tau applies and the reduction all count."""
    torch.set_default_dtype(torch.float64)
    try:
        method = authors_embed(tau=tau)
        images = torch.tensor(AUTHORS_IMAGES).view(8, 3, 1, 1)
        out = method.loss(Batch(images, torch.tensor(AUTHORS_LABELS)))
    finally:
        torch.set_default_dtype(torch.float32)
    assert out.metrics["triplets"] == len(AUTHORS_TRIPLETS)
    assert out.loss.item() == pytest.approx(expected, rel=1e-9)


def test_embedding_variant_is_checked() -> None:
    with pytest.raises(ConfigError, match="variant"):
        authors_embed(variant="paper")


def test_local_kd_uses_only_the_classes_in_the_batch() -> None:
    teacher = torch.tensor([[0.0], [2.0], [10.0], [12.0]])  # class means 1 and 11
    labels = torch.tensor([0, 0, 2, 2])  # class 1 is absent from the batch
    logits = torch.tensor([[2.0, 50.0, 0.0], [1.0, 50.0, 1.0], [0.0, 50.0, 3.0], [0.0, -50.0, 0.0]])
    kd = local_kd(logits, teacher, labels, tau=2.0)
    expected = 0.0
    for t, row in zip([0.0, 2.0, 10.0, 12.0], logits.tolist(), strict=True):
        p_t = torch.softmax(torch.tensor([-((t - 1) ** 2) / 2, -((t - 11) ** 2) / 2]), 0).tolist()
        p_s = torch.softmax(torch.tensor([row[0], row[2]]), 0).tolist()
        expected += sum(a * math.log(a / b) for a, b in zip(p_t, p_s, strict=True) if a > 0)
    assert kd.item() == pytest.approx(expected / 4, rel=1e-5)


def test_lkd_weight_decays_every_epoch() -> None:
    spec = ModelSpec("refilled-classify", "convnet4", 5, 1, 28, (0.5,), (0.5,), "omniglot", {"lam": 0.02})
    model = spec.build()
    model.set_progress(0, 10)
    assert model.weight == pytest.approx(0.02)
    model.set_progress(3, 10)
    assert model.weight == pytest.approx(0.02 * math.exp(-0.15))


@pytest.mark.parametrize("method", ["refilled-embed", "refilled-classify"])
def test_loss_decreases_on_a_real_batch(method: str) -> None:
    data = load_split("omniglot", "train")
    teacher_spec = ModelSpec(
        "pretrain", "convnet4", data.num_classes, 1, 28, (0.92,), (0.21,), "omniglot", {}
    )
    spec = ModelSpec(
        method,
        "convnet4",
        data.num_classes,
        1,
        28,
        (0.92,),
        (0.21,),
        "omniglot",
        {"lam": 1.0} if method == "refilled-classify" else {},
    )
    model = spec.build(seed=0)
    model.set_teacher(teacher_spec.build(seed=1))
    indices = next(iter(ClassBalancedBatchSampler(data.labels, 8, 4, 1, seed=0)))
    batch: Batch = BatchMaker(data, spec, "none", torch.device("cpu"))(
        indices, torch.Generator().manual_seed(0)
    )
    losses = train_steps(model, batch, 15)
    assert losses[-1] < 0.7 * losses[0], losses


def test_compress_recipe_runs_end_to_end(tmp_path) -> None:
    """distilshot train --method refilled: a MobileNet-0.25 student from a ConvNet-4 teacher, three stages."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    distilshot = str(Path(sys.executable).with_name("distilshot"))
    args = [
        "train",
        "--method",
        "refilled",
        "--dataset",
        "omniglot",
        "--backbone",
        "mobilenet-0.25",
        "--teacher-backbone",
        "convnet4",
        "--epochs",
        "1",
        "--steps-per-epoch",
        "2",
        "--run-dir",
        str(tmp_path / "run"),
        "--json",
    ]
    result = subprocess.run([distilshot, *args], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert list(summary["stages"]) == ["teacher", "embed", "classify"]
    teacher = torch.load(summary["stages"]["teacher"], weights_only=True)
    student = torch.load(summary["checkpoint"], weights_only=True)
    assert teacher["spec"]["backbone"] == "convnet4" and student["spec"]["backbone"] == "mobilenet-0.25"
    assert student["spec"]["method"] == "refilled-classify"
