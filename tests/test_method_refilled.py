"""REFILLED's losses against values worked out by hand, and a falling loss on real data."""

import math

import pytest
import torch

from distilshot.train.checkpoint import ModelSpec
from distilshot.train.data.registry import load_split
from distilshot.train.methods.base import Batch
from distilshot.train.methods.refilled import local_kd, semi_hard_triplets, triplet_kl
from distilshot.train.samplers import ClassBalancedBatchSampler
from distilshot.train.trainer import BatchMaker


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_semi_hard_triplets_by_hand() -> None:
    # 1-d points 0, 1 (class 0) and 3, 0.5 (class 1); squared distances
    x = torch.tensor([[0.0], [1.0], [3.0], [0.5]])
    labels = torch.tensor([0, 0, 1, 1])
    d = (x - x.T) ** 2
    triplets = {tuple(t) for t in semi_hard_triplets(d, labels).tolist()}
    # (0,1): impostors at 9 and 0.25, only 9 > 1 -> 2; (1,0): 4 > 1 -> 2; (2,3): 9 > 6.25 -> 0;
    # (3,2): both impostors at 0.25 < 6.25 -> no triplet
    assert triplets == {(0, 1, 2), (1, 0, 2), (2, 3, 0)}


def test_triplet_kl_by_hand() -> None:
    student = torch.tensor([[0.0], [1.0], [3.0]])  # d_ij = 1, d_ik = 9
    teacher = torch.tensor([[0.0], [2.0], [2.5]])  # d_ij = 4, d_ik = 6.25
    kl = triplet_kl(student, teacher, torch.tensor([[0, 1, 2]]), tau=2.0)
    p_t, p_s = sigmoid((6.25 - 4) / 2), sigmoid(9 - 1)
    expected = p_t * math.log(p_t / p_s) + (1 - p_t) * math.log((1 - p_t) / (1 - p_s))
    assert kl.item() == pytest.approx(expected, rel=1e-5)


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
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        out = model.loss(batch)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
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
