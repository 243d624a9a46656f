"""SKD: each loss against a value worked out by hand, generation 1's loss against the authors' code, the
teacher checks, generation 1's loss falling on a real mini-batch, export parity of the exported generation,
and the two-generation recipe from the CLI."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from method_runs import assert_loss_falls, cli, omniglot_folder, pixel_backbone, set_linear
from taught_students import assert_trained_student_exports_faithfully, taught_student
from torch import nn

from distilshot.errors import ConfigError
from distilshot.train.backbones.base import Backbone
from distilshot.train.checkpoint import load_model, save_checkpoint
from distilshot.train.methods.base import Batch
from distilshot.train.methods.pretrain import Pretrain
from distilshot.train.methods.protonet import ProtoNet
from distilshot.train.methods.skd import SKDGen0, SKDGen1, distillation_kl, rotation_bce, twin_distance
from distilshot.train.pipeline import model_spec
from distilshot.train.presets import preset_config


def test_rotation_bce_by_hand() -> None:
    # one image at rotation 0 with rotation logits (2, 0, 0, 0): -log sigmoid(2) once, -log(1/2) three times
    value = rotation_bce(torch.tensor([[2.0, 0.0, 0.0, 0.0]]), torch.tensor([0]))
    assert value.item() == pytest.approx((math.log1p(math.exp(-2.0)) + 3 * math.log(2.0)) / 4, rel=1e-6)


def test_distillation_kl_at_temperature_two_by_hand() -> None:
    # teacher logits (2, 0) / T = (1, 0): p_t = (e, 1) / (e + 1); student (0, 0): p_s = (1/2, 1/2)
    p = math.e / (math.e + 1)
    kl = p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p))
    value = distillation_kl(torch.tensor([[0.0, 0.0]]), torch.tensor([[2.0, 0.0]]), temperature=2.0)
    assert value.item() == pytest.approx(4 * kl, rel=1e-6)  # times T^2 = 4


def test_twin_distance_is_the_mean_euclidean_distance() -> None:
    logits = torch.tensor([[3.0, 4.0], [1.0, 1.0]])
    twins = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    assert twin_distance(logits, twins).item() == pytest.approx((5.0 + 0.0) / 2)


def test_generation_zero_loss_by_hand() -> None:
    method = SKDGen0(pixel_backbone(1, 2), num_classes=2, alpha=2.0)
    set_linear(method.classifier, [[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
    rotation_weight = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    set_linear(method.rotation_head, rotation_weight)
    image = np.array([[2.0, 0.0], [0.0, 0.0]])
    out = method.loss(Batch(torch.tensor(image).float().view(1, 1, 2, 2), torch.tensor([0])))
    ce, bce = [], []
    for k in range(4):  # np.rot90 turns the same way as the method's rotations
        logits = np.rot90(image, k).ravel()[:2]
        ce.append(np.log(np.exp(logits).sum()) - logits[0])
        r = rotation_weight @ logits
        target = np.eye(4)[k]
        bce.append(np.mean(np.log1p(np.exp(-r)) * target + np.log1p(np.exp(r)) * (1 - target)))
    assert out.loss.item() == pytest.approx(np.mean(ce) + 2.0 * np.mean(bce), rel=1e-6)
    assert out.metrics["ce"] == pytest.approx(np.mean(ce), rel=1e-6)


@pytest.mark.parametrize(("variant", "weight"), [("code", 0.5 / 3), ("paper-text", 0.5)])
def test_generation_one_loss_by_hand(variant: str, weight: float) -> None:
    student = SKDGen1(pixel_backbone(1, 2), num_classes=2, beta=0.5, temperature=2.0, variant=variant)
    set_linear(student.classifier, [[1.0, 0, 0, 0], [0, 1.0, 0, 0]])  # logits = the top row
    teacher = SKDGen0(pixel_backbone(1, 2), num_classes=2)
    set_linear(teacher.classifier, [[0, 0, 1.0, 0], [0, 0, 0, 1.0]])  # logits = the bottom row
    student.set_teacher(teacher)
    image = torch.tensor([[[[1.0, 2.0], [3.0, 5.0]]]])
    out = student.loss(Batch(image, torch.tensor([1])))
    # student (1, 2); its 180-degree twin [[5, 3], [2, 1]] gives (5, 3); teacher (3, 5)
    s, t = np.array([1.0, 2.0]) / 2, np.array([3.0, 5.0]) / 2
    p_s, p_t = np.exp(s) / np.exp(s).sum(), np.exp(t) / np.exp(t).sum()
    kl = 4 * np.sum(p_t * np.log(p_t / p_s))
    twin = math.hypot(5.0 - 1.0, 3.0 - 2.0)
    assert out.loss.item() == pytest.approx(kl + weight * twin, rel=1e-6)
    assert (out.metrics["kd"], out.metrics["twin"]) == pytest.approx((kl, twin), rel=1e-5)


@pytest.mark.parametrize(("beta", "expected"), [(0.1, 1.6354132831449064), (0.2, 1.7602452991196997)])
def test_generation_one_matches_the_authors_code(beta: float, expected: float) -> None:
    """Expected values: `train()` of brjathu/SKD@0a28dc54b1ed648a82270cbdc22cd15887cdd3e2,
    train_distillation.py (its loss `loss_div + gamma * loss_a / 3`, DistillKL of distill/criterion.py),
    run with --gamma beta on this batch in float64: a student of BatchNorm2d(1) in training mode, flatten
    and a linear classifier, an identity-and-linear teacher. The BatchNorm makes the value depend on the
    forward pass holding the images and all three rotations (4B images)."""
    torch.set_default_dtype(torch.float64)
    try:
        backbone = Backbone([nn.BatchNorm2d(1)], pooling="flatten", in_channels=1, image_size=2)
        student = SKDGen1(backbone, num_classes=5, beta=beta, temperature=2.0)
        teacher = Pretrain(pixel_backbone(1, 2), num_classes=5)
        weight = [[1.0, 0.0, 0.5, 0.0], [0.0, 1.0, 0.0, -0.5], [0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]]
        set_linear(student.classifier, [*weight, [-1.0, 0.0, 0.0, 0.5]])
        weight = [[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.5, 0.0, 0.0, 1.0]]
        set_linear(teacher.classifier, [*weight, [0.0, 0.0, -1.0, 0.0]])
        student.set_teacher(teacher)
        images = torch.tensor([[[[1.0, 2.0], [3.0, 5.0]]], [[[-1.0, 0.5], [2.0, 0.0]]]])
        out = student.train().loss(Batch(images, torch.tensor([1, 3])))
    finally:
        torch.set_default_dtype(torch.float32)
    assert out.loss.item() == pytest.approx(expected, rel=1e-9)
    # the code's loss_div and loss_a (its twin distance)
    assert (out.metrics["kd"], out.metrics["twin"]) == pytest.approx(
        (1.5105812671701129, 3.7449604792438036), rel=1e-9
    )


def test_generation_one_variant_is_checked() -> None:
    with pytest.raises(ConfigError, match="variant"):
        SKDGen1(pixel_backbone(1, 2), num_classes=2, variant="paper")


def test_generation_one_needs_class_logits_over_its_classes() -> None:
    student = SKDGen1(pixel_backbone(1, 2), num_classes=2)
    with pytest.raises(ConfigError, match="teacher has no linear classifier"):
        student.set_teacher(ProtoNet(pixel_backbone(1, 2), num_classes=2))
    with pytest.raises(ConfigError, match="over 3 classes"):
        student.set_teacher(Pretrain(pixel_backbone(1, 2), num_classes=3))
    with pytest.raises(ConfigError, match="3-channel 2 px"):
        student.set_teacher(Pretrain(pixel_backbone(3, 2), num_classes=2))
    assert student.teacher is None
    teacher = Pretrain(pixel_backbone(1, 2), num_classes=2).train()
    student.set_teacher(teacher)
    assert student.teacher is teacher and not teacher.training
    assert "teacher" not in "".join(student.state_dict())


def test_generation_one_loss_decreases_on_a_real_mini_batch(omniglot_train) -> None:
    student, _, batch = taught_student(omniglot_train, "skd-gen1")
    assert_loss_falls(student, batch)


def test_generation_one_export_parity(omniglot_train, tmp_path: Path) -> None:
    assert_trained_student_exports_faithfully(*taught_student(omniglot_train, "skd-gen1"), tmp_path)


def test_skd_recipe_end_to_end(tmp_path: Path) -> None:
    data = omniglot_folder(tmp_path / "glyphs")
    run = tmp_path / "run"
    args = f"--dataset folder:{data} --image-size 16 --epochs 1 --steps-per-epoch 2 --device cpu"
    result = cli("train", "--method", "skd", *args.split(), "--run-dir", run, "--json")
    summary = json.loads(result.stdout.splitlines()[-1])
    assert list(summary["stages"]) == ["gen0", "gen1"]
    gen0, gen1 = (Path(summary["stages"][s]) for s in ("gen0", "gen1"))
    assert gen0 == run / "gen0" / "checkpoints" / "best.pt" and gen0.is_file()
    assert (run / "checkpoints" / "best.pt").read_bytes() == gen1.read_bytes()
    model, spec, _ = load_model(run / "checkpoints" / "best.pt")
    assert spec.method == "skd-gen1" and model.teacher is None

    # a checkpoint without class logits cannot teach generation 1: a one-line error before any training
    proto = model_spec(preset_config("protonet", f"folder:{data}", "quick", image_size=16), 6)
    save_checkpoint(tmp_path / "protonet.pt", proto, proto.build(seed=0))
    refused = tmp_path / "refused"
    given = f"--method skd --teacher {tmp_path / 'protonet.pt'} --run-dir {refused}"
    result = cli("train", *given.split(), *args.split(), ok=False)
    assert "linear classifier" in result.stderr
    assert not list(refused.glob("*/checkpoints/*.pt"))
