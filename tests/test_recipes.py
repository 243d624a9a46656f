"""Multi-stage methods: how a request becomes stage configs, and how stages hand over weights and teachers."""

from pathlib import Path

import pytest
import torch

from distilshot.errors import ConfigError
from distilshot.train import pipeline
from distilshot.train.checkpoint import ModelSpec
from distilshot.train.methods import METHODS
from distilshot.train.recipes import RECIPES, Stage, TrainRequest

TWO_STAGES = (Stage("first", "pretrain"), Stage("second", "protonet", teacher="first", init="first"))


def test_every_recipe_names_methods_and_earlier_stages() -> None:
    for method, stages in RECIPES.items():
        seen: set[str] = set()
        for stage in stages:
            assert stage.method in METHODS, (method, stage)
            assert {stage.teacher, stage.init} <= seen | {None}, (method, stage)
            seen.add(stage.name)


def test_requests_route_overrides_params_and_teacher_backbone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(RECIPES, "two", TWO_STAGES)
    request = TrainRequest(
        "two", overrides={"epochs": 3}, params={"first.rotation_augment": True}, teacher_backbone="resnet12"
    )
    first, second = (request.stage_config(s) for s in TWO_STAGES)
    assert (first.method, first.backbone, first.epochs, first.method_params) == (
        "pretrain",
        "resnet12",
        3,
        {"rotation_augment": True},
    )
    assert (second.method, second.backbone, second.epochs, second.method_params) == (
        "protonet",
        "convnet4",
        3,
        {},
    )
    assert TrainRequest("two", params={"rotation_augment": False}).stage_params(TWO_STAGES[0]) == {
        "rotation_augment": False
    }
    with pytest.raises(ConfigError, match="no stage 'third'"):
        TrainRequest("two", params={"third.alpha": 1})
    with pytest.raises(ConfigError, match="takes 'alpha'"):
        TrainRequest("two", params={"alpha": 1})
    with pytest.raises(ConfigError, match="unknown training options"):
        TrainRequest("two", overrides={"backbone": "resnet12"})
    with pytest.raises(ConfigError, match="unknown method"):
        TrainRequest("maml")


def test_start_from_copies_the_backbone_and_keeps_new_heads() -> None:
    spec = ModelSpec("pretrain", "convnet4", 4, 1, 28, (0.5,), (0.5,), "omniglot", {})
    source = spec.build(seed=1)
    student = ModelSpec("protonet", "convnet4", 4, 1, 28, (0.5,), (0.5,), "omniglot", {}).build(seed=2)
    pipeline.start_from(student, source, "source.pt")
    for key, value in student.backbone.state_dict().items():
        assert torch.equal(value, source.backbone.state_dict()[key]), key
    other = ModelSpec("protonet", "resnet12", 4, 1, 28, (0.5,), (0.5,), "omniglot", {}).build()
    with pytest.raises(ConfigError, match="backbone differs"):
        pipeline.start_from(other, source, "source.pt")


def test_stages_run_in_order_with_teacher_and_init(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(RECIPES, "two", TWO_STAGES)
    seen = {}

    class Spy(pipeline.Trainer):
        def __init__(self, model, spec, cfg, *args, **kwargs):
            seen[cfg.method] = (model.teacher, {k: v.clone() for k, v in model.backbone.state_dict().items()})
            super().__init__(model, spec, cfg, *args, **kwargs)

    monkeypatch.setattr(pipeline, "Trainer", Spy)
    request = TrainRequest(
        "two", overrides={"epochs": 1, "steps_per_epoch": 2, "batch_size": 16, "n_way": 5, "val_episodes": 10}
    )
    outcome = pipeline.train(request, tmp_path / "run")
    assert [s.name for s in outcome.stages] == ["first", "second"]
    assert (tmp_path / "run" / "first" / "checkpoints" / "best.pt").is_file()
    assert (tmp_path / "run" / "checkpoints" / "best.pt").read_bytes() == outcome.stages[
        1
    ].checkpoint.read_bytes()
    teacher, start = seen["protonet"]
    assert seen["pretrain"][0] is None and teacher is not None and not teacher.training
    first_best = torch.load(outcome.stages[0].checkpoint, weights_only=True)["model"]
    for key, value in start.items():
        assert torch.equal(value, first_best["backbone." + key]), key
    assert outcome.model.teacher is None  # the exported student carries no teacher
    with pytest.raises(ConfigError, match="already holds a run"):
        pipeline.train(request, tmp_path / "run")
    resumed = pipeline.train(request, tmp_path / "run", resume=True)  # both stages complete: nothing retrains
    assert resumed.stages[1].checkpoint == outcome.stages[1].checkpoint


def test_a_given_teacher_replaces_the_teaching_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(RECIPES, "two", TWO_STAGES)
    overrides = {"epochs": 1, "steps_per_epoch": 2, "batch_size": 16, "n_way": 5, "val_episodes": 10}
    first = pipeline.train(TrainRequest("pretrain", overrides=overrides), tmp_path / "teacher")
    outcome = pipeline.train(
        TrainRequest("two", overrides=overrides, teacher=str(first.run.best)), tmp_path / "run"
    )
    assert [s.name for s in outcome.stages] == ["second"]
    assert not (tmp_path / "run" / "first").exists()
