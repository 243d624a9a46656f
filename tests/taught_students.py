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
from distilshot.train.samplers import Episode
from distilshot.train.trainer import BatchMaker


def taught_student(
    omniglot_train: ImageSet, student: str, teacher: str, item: Episode | np.ndarray
) -> tuple[Method, ModelSpec, Batch]:
    """Method `student`'s quick-preset Omniglot model (seed 0, training mode) with a fresh `teacher`
    model (seed 1) attached, its spec, and the batch of `item` (an episode or image indices) as training
    builds it, without augmentation."""
    spec = model_spec(preset_config(student, "omniglot", "quick"), omniglot_train.num_classes)
    model = spec.build(seed=0).train()
    teacher_spec = model_spec(preset_config(teacher, "omniglot", "quick"), omniglot_train.num_classes)
    model.set_teacher(teacher_spec.build(seed=1))
    batch = BatchMaker(omniglot_train, spec, "none", torch.device("cpu"))(
        item, torch.Generator().manual_seed(0)
    )
    return model, spec, batch


def assert_trained_student_exports_faithfully(model: Method, spec: ModelSpec, batch: Batch, tmp_path) -> None:
    """A few steps on `batch`, then the export parity check on Omniglot's test split: a cosine head whose
    embeddings differ from PyTorch's by less than 1e-4."""
    train_steps(model, batch, 5)  # moves the BatchNorm statistics away from their initial values
    manifest, report = assert_exports_faithfully(model, spec, tmp_path, load_split("omniglot", "test"))
    assert manifest.head.metric == "cosine" and max(report.max_abs_diff.values()) < 1e-4, report
