"""The rejection threshold rule (export/rejection.py) on data whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from serve_fixtures import make_bundle

from distilshot.core.head import PrototypeHead
from distilshot.core.manifest import Head, load_manifest
from distilshot.errors import DistilshotError
from distilshot.export.embeddings import bundle_features
from distilshot.export.rejection import calibrate, record_rejection

HEAD = PrototypeHead(Head("euclidean", {"e": 1.0}))


def clusters(classes: int, per_class: int, spread: float, seed: int = 0) -> tuple[dict, np.ndarray]:
    """Gaussian classes in 16-d: centres ~ N(0, 1), images = centre + N(0, spread)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, 16))
    labels = np.repeat(np.arange(classes), per_class)
    x = centres[labels] + spread * rng.normal(size=(len(labels), 16))
    return {"e": x.astype(np.float32)}, labels


def test_separated_classes_accept_the_target_and_reject_unknowns():
    features, labels = clusters(80, 10, spread=0.05)
    rejection = calibrate(HEAD, features, labels, split="synthetic", episodes=200)
    assert 0.92 <= rejection.known_accepted <= 0.98  # measured on classes the threshold never saw
    assert rejection.unknown_rejected > 0.95
    assert rejection.target == 0.95 and "5-way 1-shot" in rejection.protocol


def test_indistinguishable_classes_reject_unknowns_only_by_chance():
    # Every "class" has the same distribution: the threshold cannot tell known from unknown queries.
    features, labels = clusters(80, 10, spread=1.0)
    features = {"e": np.random.default_rng(1).normal(size=features["e"].shape).astype(np.float32)}
    rejection = calibrate(HEAD, features, labels, split="noise", episodes=200)
    assert 0.91 <= rejection.known_accepted <= 0.99
    assert rejection.unknown_rejected < 0.15


def test_a_higher_target_lowers_the_threshold():
    features, labels = clusters(80, 10, spread=0.5)
    low = calibrate(HEAD, features, labels, split="s", target=0.8, episodes=100)
    high = calibrate(HEAD, features, labels, split="s", target=0.99, episodes=100)
    assert high.threshold < low.threshold
    assert high.known_accepted > low.known_accepted


def test_too_few_classes_are_refused():
    features, labels = clusters(19, 10, spread=0.1)
    with pytest.raises(DistilshotError, match="needs 20 classes"):
        calibrate(HEAD, features, labels, split="small")


def test_record_rejection_records_the_threshold_and_keeps_the_fingerprint(tmp_path):
    bundle = make_bundle(tmp_path / "b")
    before = load_manifest(bundle)
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, size=(40, 3))
    labels = np.repeat(np.arange(40), 8)
    images = np.clip(colours[labels][:, None, None, :] + rng.normal(0, 3, (len(labels), 16, 16, 3)), 0, 255)
    features = bundle_features(bundle, images.astype(np.uint8))
    rejection = record_rejection(bundle, features, labels, "colours/test")
    after = load_manifest(bundle)
    assert after.rejection == rejection
    assert after.fingerprint() == before.fingerprint()
    assert rejection.known_accepted > 0.9 and rejection.unknown_rejected > 0.8
    with pytest.raises(DistilshotError, match="calibration images are"):
        bundle_features(bundle, np.zeros((4, 8, 8, 3), np.uint8))
