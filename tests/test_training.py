"""Training on real data: every method's loss falls on a real mini-batch, and a run interrupted after an
epoch and resumed ends with exactly the weights of the uninterrupted run."""

from pathlib import Path

import numpy as np
import pytest
import torch
from method_runs import assert_exports_faithfully, train_steps

from distilshot.train.checkpoint import read_checkpoint
from distilshot.train.data.imageset import ImageSet
from distilshot.train.data.registry import load_split
from distilshot.train.methods import METHODS
from distilshot.train.pipeline import model_spec
from distilshot.train.presets import preset_config
from distilshot.train.samplers import EpisodeSampler
from distilshot.train.trainer import BatchMaker, RunFolder, Trainer

# methods that learn from a teacher are tested with one in their own test files
STANDALONE = sorted(name for name, cls in METHODS.items() if not cls.needs_teacher)


@pytest.mark.parametrize("method", STANDALONE)
def test_loss_decreases_on_a_real_mini_batch(method: str, omniglot_train) -> None:
    torch.manual_seed(0)
    cfg = preset_config(method, "omniglot", "quick")
    spec = model_spec(cfg, omniglot_train.num_classes)
    model = spec.build().train()
    episode = next(iter(EpisodeSampler(omniglot_train.labels, 10, 3, 2, 1, seed=0)))
    batch = BatchMaker(omniglot_train, spec, "none", torch.device("cpu"))(
        episode, torch.Generator().manual_seed(0)
    )
    losses = train_steps(model, batch, 15)
    assert losses[-1] < 0.7 * losses[0], losses


def small_trainer(run_dir: Path, method: str, dataset: str, backbone: str) -> Trainer:
    cfg = preset_config(
        method,
        dataset,
        "quick",
        backbone=backbone,
        epochs=2,
        steps_per_epoch=3,
        batch_size=16,
        n_way=5,
        k_shot=2,
        n_query=2,
        val_episodes=20,
        device="cpu",  # "auto" is CUDA + bf16 on a GPU machine, whose kernels promise no bit-identical reruns
    )
    train_set = load_split(dataset, "train").subset(range(8))
    val = load_split(dataset, "val").subset(range(5))
    keep = np.concatenate([rows[:20] for rows in val.class_rows()])
    val_set = ImageSet(val.name, val.images[keep], val.labels[keep], val.class_names)
    spec = model_spec(cfg, train_set.num_classes)
    return Trainer(spec.build(cfg.seed), spec, cfg, train_set, val_set, RunFolder(run_dir))


@pytest.mark.parametrize(
    ("method", "dataset", "backbone"),
    [("pretrain", "cifar-fs", "resnet12"), ("protonet", "omniglot", "convnet4")],
)
def test_resumed_run_is_identical_to_uninterrupted(
    tmp_path: Path, method: str, dataset: str, backbone: str
) -> None:
    straight = small_trainer(tmp_path / "straight", method, dataset, backbone)
    straight.fit()

    interrupted = small_trainer(tmp_path / "resumed", method, dataset, backbone)
    original = interrupted._train_epoch

    def crash_in_second_epoch(epoch, progress):
        if epoch == 1:
            raise KeyboardInterrupt
        return original(epoch, progress)

    interrupted._train_epoch = crash_in_second_epoch
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    assert read_checkpoint(interrupted.run.last)["epoch"] == 0

    resumed = small_trainer(tmp_path / "resumed", method, dataset, backbone)
    assert resumed.resume() and resumed.start_epoch == 1
    resumed.fit()

    a = read_checkpoint(straight.run.last)
    b = read_checkpoint(resumed.run.last)
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    lines = (resumed.run.metrics).read_text().splitlines()
    assert len(lines) == 2


def test_training_writes_metrics_plots_and_best_checkpoint(tmp_path: Path) -> None:
    trainer = small_trainer(tmp_path / "run", "protonet", "omniglot", "convnet4")
    model = trainer.fit()
    run = trainer.run.path
    assert (run / "curves.png").stat().st_size > 1000
    assert (run / "train.log").read_text().count("epoch") >= 2
    history = read_checkpoint(trainer.run.last)["history"]
    best = read_checkpoint(trainer.run.best)
    assert best["best_val"] == max(h["val_acc"] for h in history)
    assert not model.training
    assert np.isfinite([h["train_loss"] for h in history]).all()


@pytest.mark.parametrize("method", STANDALONE)
def test_export_parity_per_method(method: str, omniglot_train, tmp_path: Path) -> None:
    cfg = preset_config(method, "omniglot", "quick")
    spec = model_spec(cfg, omniglot_train.num_classes)
    model = spec.build(seed=0).train()
    episode = next(iter(EpisodeSampler(omniglot_train.labels, 10, 3, 2, 1, seed=0)))
    batch = BatchMaker(omniglot_train, spec, "none", torch.device("cpu"))(
        episode, torch.Generator().manual_seed(0)
    )
    train_steps(model, batch, 5)  # moves the BatchNorm statistics away from their initial values
    _, report = assert_exports_faithfully(model, spec, tmp_path, load_split("omniglot", "test"))
    # BML's sqrt(ReLU) outputs magnify float rounding near zero (d sqrt(x) = dx / 2 sqrt(x))
    assert max(report.max_abs_diff.values()) < (5e-4 if method == "bml" else 1e-4), report


def test_evaluation_can_restrict_a_model_to_some_outputs(omniglot_train) -> None:
    from distilshot.errors import ConfigError
    from distilshot.train.pipeline import evaluate

    cfg = preset_config("protonet", "omniglot", "quick")
    spec = model_spec(cfg, omniglot_train.num_classes)
    model = spec.build(seed=0)
    one = {"settings": ((5, 1),), "episodes": 20, "protocols": ("random",)}
    (full,) = evaluate(model, spec, **one)
    (same,) = evaluate(model, spec, **one, outputs=("embedding",))
    assert same.mean == full.mean and same.classifier.endswith("[embedding]")
    with pytest.raises(ConfigError, match="no outputs"):
        evaluate(model, spec, settings=((5, 1),), episodes=20, outputs=("local",))
