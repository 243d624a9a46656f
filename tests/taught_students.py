"""Helpers of the distillation method tests (GRDD's meta-learner, SKD's generation 1): a quick-preset
student with a teacher of other initial weights and one real Omniglot batch, and the export parity of
such a student after a few optimiser steps."""

import numpy as np
import torch
from method_runs import assert_exports_faithfully, train_steps

from distilshot.train.checkpoint import ModelSpec
from distilshot.train.data.imageset import ImageSet
from distilshot.train.data.registry import load_split
from distilshot.train.methods.base import Batch, Method
from distilshot.train.pipeline import model_spec
from distilshot.train.presets import preset_config
from distilshot.train.samplers import Episode, EpisodeSampler, RandomBatchSampler
from distilshot.train.trainer import BatchMaker

# the teacher each student learns from, and the real batch it is tested on: GRDD's meta-learner a 5-way
# 2-shot 4-query episode, SKD's generation 1 a batch of 32 images
TEACHERS = {"grdd-meta": "grdd-global", "skd-gen1": "skd-gen0"}


def _item(student: str, labels: np.ndarray) -> Episode | np.ndarray:
    if student == "grdd-meta":
        return next(iter(EpisodeSampler(labels, 5, 2, 4, 1, seed=0)))
    return next(iter(RandomBatchSampler(len(labels), 32, seed=0, batches=1)))


def taught_student(omniglot_train: ImageSet, student: str) -> tuple[Method, ModelSpec, Batch]:
    """Method `student`'s quick-preset Omniglot model (seed 0, training mode) with a fresh model of its
    teacher (seed 1) attached, its spec, and its real batch as training builds it, without augmentation;
    torch's global seed is 0 after."""
    torch.manual_seed(0)
    spec = model_spec(preset_config(student, "omniglot", "quick"), omniglot_train.num_classes)
    model = spec.build(seed=0).train()
    teacher_spec = model_spec(
        preset_config(TEACHERS[student], "omniglot", "quick"), omniglot_train.num_classes
    )
    model.set_teacher(teacher_spec.build(seed=1))
    batch = BatchMaker(omniglot_train, spec, "none", torch.device("cpu"))(
        _item(student, omniglot_train.labels), torch.Generator().manual_seed(0)
    )
    return model, spec, batch


def assert_trained_student_exports_faithfully(model: Method, spec: ModelSpec, batch: Batch, tmp_path) -> None:
    """A few steps on `batch`, then the export parity check on Omniglot's test split: a cosine head whose
    embeddings differ from PyTorch's by less than 1e-4."""
    train_steps(model, batch, 5)  # moves the BatchNorm statistics away from their initial values
    manifest, report = assert_exports_faithfully(model, spec, tmp_path, load_split("omniglot", "test"))
    assert manifest.head.metric == "cosine" and max(report.max_abs_diff.values()) < 1e-4, report
