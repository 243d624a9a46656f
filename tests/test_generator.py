"""The progressive-distillation feature generator: Eq. 1 by hand, the schedules, and training on real
features."""

import math

import numpy as np
import pytest
import torch

from distilshot.train.checkpoint import ModelSpec
from distilshot.train.data.registry import load_split
from distilshot.train.evaluation import extract_features
from distilshot.train.generator import (
    FeatureGenerator,
    GeneratorConfig,
    GeneratorMember,
    augment_class,
    distillation_loss,
    evaluate_generators,
    generated_count,
    log_schedule,
    train_generators,
)


def test_distillation_loss_by_hand() -> None:
    student, teacher = torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 1.0]])
    loss = distillation_loss(student, teacher, torch.tensor([0]), torch.tensor(2.0), gamma=1.0)
    # CE(softmax(2, 0), 0) = log(1 + e^-2); soft targets (1/2, 1/2) against softmax(1, 0): log(1 + e) - 1/2
    expected = math.log1p(math.exp(-2)) + 1.0 * 2.0**2 * (math.log1p(math.e) - 0.5)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_schedules() -> None:
    assert [log_schedule(s, 7, 128, 1) for s in (0, 3, 6, 9)] == [128, 11, 1, 1]
    assert log_schedule(0, 5, 5, 128) == 5 and log_schedule(4, 5, 5, 128) == 128
    assert generated_count(128, 1) == 127 and generated_count(16, 20) == 0
    with pytest.raises(Exception, match="schedule must be"):
        GeneratorConfig(schedule="faster")


def test_an_untrained_generator_copies_real_features() -> None:
    generator = FeatureGenerator(dim=3, noise_dim=2, hidden=8)
    real = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    out = augment_class(generator, real, 5)
    assert torch.equal(out, real[[0, 1, 0, 1, 0]])


@pytest.fixture(scope="module")
def features():
    data = load_split("omniglot", "train").subset(range(120))
    spec = ModelSpec("protonet", "convnet4", 5, 1, 28, (0.92,), (0.21,), "omniglot", {})
    model = spec.build(seed=0)
    feats = extract_features(model, data.images, spec.mean, spec.std)["embedding"]
    return feats, data.labels


def test_training_lowers_the_loss_on_real_features(features) -> None:
    feats, labels = features
    cfg = GeneratorConfig(schedule="plain", iterations=150, k_max=10, n_way=10, queries=5, seed=0)
    _, (losses,) = train_generators(feats, labels, cfg)
    assert np.mean(losses[-30:]) < 0.8 * np.mean(losses[:30])


def test_augmentation_with_an_untrained_generator_changes_nothing_at_one_shot(features) -> None:
    feats, labels = features
    member = GeneratorMember(FeatureGenerator(feats.shape[1], 4, 16), scale=10.0, temperature=1.0)
    plain, augmented = evaluate_generators(
        [member], feats, labels, split="x", n_way=5, k_shot=1, k_max=10, n_query=5, episodes=40
    )
    assert plain.mean == augmented.mean and plain.episodes == 40
