"""Task-specific students (REFILLED middle-shot / adapt): they learn the task they are given."""

import numpy as np
import pytest
import torch

from distilshot.errors import ConfigError
from distilshot.train.adapt import AdaptConfig, student_logits, train_task_student
from distilshot.train.checkpoint import ModelSpec
from distilshot.train.data.registry import load_split
from distilshot.train.samplers import EpisodeSampler


@pytest.fixture(scope="module")
def task():
    data = load_split("omniglot", "test")
    episode = next(iter(EpisodeSampler(data.labels, 5, 5, 5, 1, seed=0)))
    return data, episode


@pytest.mark.parametrize("distil", [False, True])
def test_a_task_student_fits_its_support_set(task, distil: bool) -> None:
    data, episode = task
    mean, std = (0.92,), (0.21,)
    teacher = None
    if distil:
        teacher = ModelSpec("pretrain", "convnet4", 10, 1, 28, mean, std, "omniglot", {}).build(seed=1).eval()
    cfg = AdaptConfig(embed_steps=20, classify_steps=60, augment="none", seed=0)
    labels = np.repeat(np.arange(5), 5)
    student = train_task_student(data.images[episode.support.ravel()], labels, mean, std, cfg, teacher)
    logits = student_logits(student, data.images[episode.support.ravel()], mean, std)
    assert logits.shape == (25, 5)
    assert (logits.argmax(1).numpy() == labels).mean() >= 0.8
    queries = student_logits(student, data.images[episode.query.ravel()], mean, std)
    assert torch.isfinite(queries).all() and queries.shape == (25, 5)


def test_a_student_can_start_from_a_base_class_model(task) -> None:
    data, episode = task
    mean, std = (0.92,), (0.21,)
    base = ModelSpec("pretrain", "convnet4", 10, 1, 28, mean, std, "omniglot", {}).build(seed=1).eval()
    cfg = AdaptConfig(embed_steps=0, classify_steps=0, augment="none", seed=0)
    images, labels = data.images[episode.support.ravel()], np.repeat(np.arange(5), 5)
    started = train_task_student(images, labels, mean, std, cfg, teacher=base, start=base)
    fresh = train_task_student(images, labels, mean, std, cfg, teacher=base)
    expected = base.backbone.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in started.backbone.state_dict().items())
    assert not torch.equal(fresh.backbone.state_dict()["stages.0.0.weight"], expected["stages.0.0.weight"])


@pytest.mark.parametrize("start_lr", [0.0, 0.05])
def test_a_started_student_trains_at_start_lr(task, start_lr: float) -> None:
    data, episode = task
    mean, std = (0.92,), (0.21,)
    base = ModelSpec("pretrain", "convnet4", 10, 1, 28, mean, std, "omniglot", {}).build(seed=1).eval()
    cfg = AdaptConfig(embed_steps=0, classify_steps=5, lr=0.05, start_lr=start_lr, augment="none", seed=0)
    images, labels = data.images[episode.support.ravel()], np.repeat(np.arange(5), 5)
    started = train_task_student(images, labels, mean, std, cfg, start=base)
    expected = dict(base.backbone.named_parameters())
    kept = all(torch.equal(v, expected[k]) for k, v in started.backbone.named_parameters())
    assert kept == (start_lr == 0.0)


def test_a_student_cannot_start_from_another_architecture(task) -> None:
    data, episode = task
    mean, std = (0.92,), (0.21,)
    other = ModelSpec("pretrain", "resnet12", 10, 1, 28, mean, std, "omniglot", {}).build(seed=1)
    cfg = AdaptConfig(embed_steps=0, classify_steps=0, augment="none")
    images, labels = data.images[episode.support.ravel()], np.repeat(np.arange(5), 5)
    with pytest.raises(ConfigError, match="backbones differ"):
        train_task_student(images, labels, mean, std, cfg, start=other)
