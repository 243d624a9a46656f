"""Task-specific students (REFILLED middle-shot / adapt): they learn the task they are given."""

import numpy as np
import pytest
import torch

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
