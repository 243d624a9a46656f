"""Multi-stage methods: how a request becomes stage configs, and how stages hand over weights and teachers."""

from pathlib import Path

import pytest
import torch

from distilshot.errors import ConfigError
from distilshot.train import pipeline
from distilshot.train.backbones import build_backbone
from distilshot.train.checkpoint import ModelSpec
from distilshot.train.methods import METHODS, RECIPES, Recipe, Stage, build_method
from distilshot.train.methods.base import Method
from distilshot.train.recipes import TrainRequest

TWO_STAGES = (Stage("first", "pretrain"), Stage("second", "protonet", teacher="first", init="first"))
TWO = Recipe(TWO_STAGES, help="pretrain, then protonet taught by it")


def test_every_recipe_names_methods_and_earlier_stages() -> None:
    for method, recipe in RECIPES.items():
        seen: set[str] = set()
        for stage in recipe.stages:
            assert stage.method in METHODS, (method, stage)
            assert {stage.teacher, stage.init} <= seen | {None}, (method, stage)
            seen.add(stage.name)


def test_requests_route_overrides_params_and_teacher_backbone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(RECIPES, "two", TWO)
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
    monkeypatch.setitem(RECIPES, "two", TWO)
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
    monkeypatch.setitem(RECIPES, "two", TWO)
    overrides = {"epochs": 1, "steps_per_epoch": 2, "batch_size": 16, "n_way": 5, "val_episodes": 10}
    first = pipeline.train(TrainRequest("pretrain", overrides=overrides), tmp_path / "teacher")
    outcome = pipeline.train(
        TrainRequest("two", overrides=overrides, teacher=str(first.run.best)), tmp_path / "run"
    )
    assert [s.name for s in outcome.stages] == ["second"]
    assert not (tmp_path / "run" / "first").exists()


@pytest.mark.parametrize("preset", ["paper", "quick"])
def test_presets_train_with_the_authors_code_losses_and_set_switches_to_the_paper_text(preset: str) -> None:
    """IMPLEMENTATION-NOTES, "Checked against the authors' code": SKD generation 1's twin weight gamma / 3
    (gamma 0.2 on FC100), BML's 2 : 1 : 0.5 with pooled prototypes and confident queries left alone,
    REFILLED step 1 at tau 4 with the code's x1000 mean; `--set variant=paper-text` gives the papers'."""
    backbone = build_backbone("convnet4", 3, 32)

    def built(method: str, stage: str, **params) -> Method:
        request = TrainRequest(method, dataset="fc100", preset=preset, params=params)
        cfg = request.stage_config(next(s for s in request.stages if s.name == stage))
        return build_method(cfg.method, backbone, 60, cfg.method_params)

    gen1, embed, bml = built("skd", "gen1"), built("refilled", "embed"), built("bml", "bml")
    assert (gen1.variant, gen1.beta, gen1.twin_weight) == ("code", 0.2, pytest.approx(0.2 / 3))
    assert (bml.weights, bml.prototypes, bml.skip_confident) == ((2.0, 1.0, 0.5), "pooled", True)
    assert (embed.variant, embed.tau, embed.scale) == ("code", 4.0, 1000.0)
    assert built("refilled", "classify").tau == 2.0  # step 2 keeps the supplement's

    gen1 = built("skd", "gen1", variant="paper-text")
    embed, bml = built("refilled", "embed", variant="paper-text"), built("bml", "bml", variant="paper-text")
    assert (gen1.beta, gen1.twin_weight) == (0.2, 0.2)
    assert (bml.weights, bml.prototypes, bml.skip_confident) == ((4.0, 2.0, 1.0), "position", False)
    assert (embed.tau, embed.scale) == (2.0, 1.0)
