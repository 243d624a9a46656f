"""GRDD: each loss against a value worked out by hand, the meta-learner's loss falling on a real episode,
its export parity, twins for teachers of another backbone, and the recipe from the CLI with a ResNet-12
global learner teaching a ConvNet-4 meta-learner."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from method_runs import assert_loss_falls, cli, omniglot_folder, pixel_backbone, set_linear
from taught_students import assert_trained_student_exports_faithfully, taught_student

from distilshot.errors import ConfigError
from distilshot.train.checkpoint import load_model, save_checkpoint
from distilshot.train.methods.base import Batch
from distilshot.train.methods.grdd import (
    GRDDGlobal,
    GRDDMeta,
    decoupled_kl,
    relatedness,
    relatedness_ce,
)
from distilshot.train.pipeline import model_spec, train
from distilshot.train.presets import preset_config
from distilshot.train.recipes import TrainRequest


def test_relatedness_is_support_by_query_cosine() -> None:
    support = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    query = torch.tensor([[1.0, 1.0], [3.0, 0.0], [0.0, -1.0]])
    expected = torch.tensor([[1 / math.sqrt(2), 1.0, 0.0], [1 / math.sqrt(2), 0.0, -1.0]])
    assert torch.allclose(relatedness(support, query), expected)


def test_decoupled_kl_on_a_two_by_three_relatedness_by_hand() -> None:
    t = 4.0
    teacher = t * torch.tensor([[math.log(2.0), 0.0, 0.0], [0.0, 0.0, 0.0]])
    student = t * torch.tensor([[0.0, 0.0, 0.0], [0.0, math.log(3.0), 0.0]])
    # row 1: teacher softmax (1/2, 1/4, 1/4) vs uniform; row 2: uniform vs (1/5, 3/5, 1/5)
    row1 = 0.5 * math.log(0.5 * 3) + 2 * 0.25 * math.log(0.25 * 3)
    row2 = (math.log(5 / 3) + math.log(5 / 9) + math.log(5 / 3)) / 3
    assert decoupled_kl(teacher, student, t).item() == pytest.approx(row1 + row2, rel=1e-6)
    # KL(student row || teacher row) is another number
    reverse = math.log(32 / 27) / 3 + 0.4 * math.log(0.6) + 0.6 * math.log(1.8)
    assert decoupled_kl(student, teacher, t).item() == pytest.approx(reverse, rel=1e-6)


def test_relatedness_cross_entropy_sums_each_class_supports() -> None:
    # 2-way 2-shot, 2 queries: columns are queries, rows supports (class 0, 0, 1, 1)
    related = torch.tensor([[0.5, 0.1], [0.3, -0.2], [0.1, 0.4], [-0.1, 0.6]])
    support_labels, query_labels = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1])
    # query 0 scores (0.8, 0.0), label 0; query 1 scores (-0.1, 1.0), label 1
    expected = (math.log1p(math.exp(-0.8)) + math.log1p(math.exp(-1.1))) / 2
    value = relatedness_ce(related, support_labels, query_labels, 2)
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_global_learner_loss_by_hand() -> None:
    method = GRDDGlobal(pixel_backbone(1, 2), num_classes=2)
    rotation_weight = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    set_linear(method.classifier, [[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
    set_linear(method.rotation_head, rotation_weight)
    image = np.array([[2.0, 0.0], [0.0, 0.0]])
    out = method.loss(Batch(torch.tensor(image).float().view(1, 1, 2, 2), torch.tensor([1])))
    class_ce, rotation_ce = [], []
    for k in range(4):  # np.rot90 turns the same way as the method's rotations
        p = np.rot90(image, k).ravel()[:2]
        r = rotation_weight @ p
        class_ce.append(np.log(np.exp(p).sum()) - p[1])
        rotation_ce.append(np.log(np.exp(r).sum()) - r[k])
    assert out.loss.item() == pytest.approx(np.mean(class_ce) + np.mean(rotation_ce), rel=1e-6)


def test_meta_learner_loss_by_hand() -> None:
    # 2-way 1-shot 1-query with 2-d pixels: supports a=(1,0), b=(0,1); queries (1,0) of a, (1,1) of b.
    # The teacher maps x -> [[1,1],[0,1]] x: a=(1,0), b=(1,1), queries (1,0) and (2,1).
    # T = 0.5 rather than the paper's 4, so that both terms weigh in the total
    student = GRDDMeta(pixel_backbone(2, 1), num_classes=2, temperature=0.5, gamma=0.2)
    student.set_teacher(GRDDGlobal(pixel_backbone(2, 1, mix=[[1.0, 1.0], [0.0, 1.0]]), num_classes=2))
    points = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]).view(4, 2, 1, 1)
    out = student.loss(Batch(points, torch.tensor([7, 3, 7, 3]), n_way=2, k_shot=1, n_query=1))
    r2, r5, r10 = math.sqrt(2), math.sqrt(5), math.sqrt(10)
    teacher = [[1.0, 2 / r5], [1 / r2, 3 / r10]]  # support rows x query columns
    learned = [[1.0, 1 / r2], [0.0, 1 / r2]]

    def softmax(row: list[float]) -> np.ndarray:
        e = np.exp(np.array(row) / 0.5)
        return e / e.sum()

    rows = zip(teacher, learned, strict=True)
    kl = sum(np.sum(softmax(t) * np.log(softmax(t) / softmax(s))) for t, s in rows)
    # class scores = summed relatedness: query a (1, 0), query b (1/r2, 1/r2)
    rt = (math.log1p(math.exp(-1.0)) + math.log(2.0)) / 2
    assert out.loss.item() == pytest.approx(kl + 0.2 * rt, rel=1e-5)
    assert (out.metrics["kl"], out.metrics["rt"]) == pytest.approx((kl, rt), rel=1e-5)


def test_meta_learner_refuses_a_teacher_that_cannot_see_its_images() -> None:
    student = GRDDMeta(pixel_backbone(2, 1), num_classes=2)
    with pytest.raises(ConfigError, match="1-channel 1 px"):
        student.set_teacher(GRDDGlobal(pixel_backbone(1, 1), num_classes=2))
    with pytest.raises(ConfigError, match="learns from a global learner"):
        student.loss(Batch(torch.zeros(4, 2, 1, 1), torch.tensor([0, 1, 0, 1]), n_way=2, k_shot=1, n_query=1))


def test_meta_learner_loss_decreases_on_a_real_episode(omniglot_train) -> None:
    student, _, batch = taught_student(omniglot_train, "grdd-meta")
    assert_loss_falls(student, batch)


def test_meta_learner_matches_the_teachers_relatedness_on_a_real_episode(omniglot_train) -> None:
    student, _, batch = taught_student(omniglot_train, "grdd-meta")
    student.gamma = 0.0  # distillation alone: at the start L_rt dominates the total
    assert_loss_falls(student, batch, metric="kl")


def test_meta_learner_export_parity(omniglot_train, tmp_path: Path) -> None:
    assert_trained_student_exports_faithfully(*taught_student(omniglot_train, "grdd-meta"), tmp_path)


def test_a_teacher_of_another_backbone_gets_a_twin_to_start_from(tmp_path: Path) -> None:
    def plan(request: TrainRequest) -> list[tuple[str, str | None, str | None, str]]:
        return [(s.name, s.teacher, s.init, request.stage_config(s).backbone) for s in request.stages]

    assert plan(TrainRequest("grdd")) == [
        ("global", None, None, "convnet4"),
        ("meta", "global", "global", "convnet4"),
    ]
    crossed = TrainRequest("grdd", teacher_backbone="resnet12")
    assert plan(crossed) == [
        ("global", None, None, "resnet12"),
        ("global-convnet4", None, None, "convnet4"),
        ("meta", "global", "global-convnet4", "convnet4"),
    ]
    # a given teacher checkpoint stands in for the global learner and brings its own backbone
    spec = model_spec(preset_config("pretrain", "omniglot", "quick", backbone="resnet12"), 10)
    save_checkpoint(tmp_path / "teacher.pt", spec, spec.build(seed=0))
    given = TrainRequest("grdd", teacher=str(tmp_path / "teacher.pt"))
    assert given.teacher_backbone == "resnet12" and given.skipped_stages() == {"global"}
    assert [s.name for s in given.stages] == ["global", "global-convnet4", "meta"]
    with pytest.raises(ConfigError, match="contradicts"):
        TrainRequest("grdd", teacher=str(tmp_path / "teacher.pt"), teacher_backbone="convnet4")


def test_grdd_recipe_end_to_end_with_a_resnet12_teacher(tmp_path: Path) -> None:
    data = omniglot_folder(tmp_path / "glyphs")
    run = tmp_path / "run"
    args = f"--dataset folder:{data} --image-size 16 --epochs 1 --steps-per-epoch 2 --device cpu"
    backbones = "--backbone convnet4 --teacher-backbone resnet12"
    result = cli("train", "--method", "grdd", *args.split(), *backbones.split(), "--run-dir", run, "--json")
    summary = json.loads(result.stdout.splitlines()[-1])
    assert list(summary["stages"]) == ["global", "global-convnet4", "meta"]
    specs = {name: load_model(path)[1] for name, path in summary["stages"].items()}
    assert {name: (s.method, s.backbone) for name, s in specs.items()} == {
        "global": ("grdd-global", "resnet12"),
        "global-convnet4": ("grdd-global", "convnet4"),
        "meta": ("grdd-meta", "convnet4"),
    }
    assert (run / "checkpoints" / "best.pt").read_bytes() == Path(summary["stages"]["meta"]).read_bytes()
    assert all((run / name / "checkpoints" / "best.pt").is_file() for name in summary["stages"])

    # any checkpoint with an embedding can stand in for the global learner, here a (fresh) ProtoNet
    proto = model_spec(preset_config("protonet", f"folder:{data}", "quick", image_size=16), 6)
    save_checkpoint(tmp_path / "protonet.pt", proto, proto.build(seed=0))
    short = {"epochs": 1, "steps_per_epoch": 2, "image_size": 16}
    request = TrainRequest("grdd", f"folder:{data}", teacher=str(tmp_path / "protonet.pt"), overrides=short)
    outcome = train(request, tmp_path / "given")
    assert [s.name for s in outcome.stages] == ["meta"] and outcome.spec.method == "grdd-meta"
