"""Calibrated probabilities: the temperature fit and the ECE on hand-checkable numbers, and the bundle of a
tiny model trained on real Omniglot: a fitted temperature that lowers the ECE on held-out episodes, the
rejection threshold calibrated at that temperature, and unsaturated scores from the CLI and HTTP."""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from method_runs import cli, train_steps
from serve_http import files, served

from distilshot.core.head import PrototypeHead
from distilshot.core.manifest import Manifest, load_manifest
from distilshot.errors import BundleError
from distilshot.export.calibration import (
    expected_calibration_error,
    fit_temperature,
    mean_nll,
    reliability_bins,
)
from distilshot.export.embeddings import bundle_features
from distilshot.export.rejection import calibrate
from distilshot.serve.api import create_app
from distilshot.serve.classifier import FewShotClassifier

DATA = Path(os.environ["DISTILSHOT_DATA"]) / "omniglot" / "images_evaluation"


def test_mean_nll_by_hand() -> None:
    # softmax([0, ln 3]) = (1/4, 3/4); at scale 2 the logits are [0, ln 3 / 2]: p = sqrt 3 / (1 + sqrt 3)
    logits = np.array([[0.0, math.log(3)], [0.0, math.log(3)]])
    assert mean_nll(logits, np.array([1, 0])) == pytest.approx((math.log(4 / 3) + math.log(4)) / 2)
    p = math.sqrt(3) / (1 + math.sqrt(3))
    assert mean_nll(logits, np.array([1, 1]), 2.0) == pytest.approx(-math.log(p))


def test_fit_recovers_a_known_temperature() -> None:
    # Classes drawn from softmax(z); the logits shown are 4 z, so the NLL is least at scale 4.
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, size=(20000, 5))
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    targets = (p.cumsum(axis=1) > rng.random((len(z), 1))).argmax(axis=1)
    scale = fit_temperature(4 * z, targets)
    assert scale == pytest.approx(4, rel=0.03)
    assert mean_nll(4 * z, targets, scale) <= min(mean_nll(4 * z, targets, s) for s in (3.8, 4.2, 1.0))


def test_ece_by_hand() -> None:
    # 15 bins: 0.9 falls in (13/15, 14/15], 0.3 in (4/15, 5/15]; 1/15 in the first bin, 1.0 in the last
    confidence = np.array([0.9, 0.9, 0.9, 0.9, 0.3, 0.3])
    correct = np.array([1, 1, 1, 0, 0, 1], dtype=bool)
    # 4/6 * |0.75 - 0.9| + 2/6 * |0.5 - 0.3|
    assert expected_calibration_error(confidence, correct) == pytest.approx(4 / 6 * 0.15 + 2 / 6 * 0.2)
    counts, mean_confidence, accuracy = reliability_bins(np.array([1 / 15, 1.0, 0.9]), np.array([1, 0, 1]))
    assert counts[0] == counts[14] == counts[13] == 1 and counts.sum() == 3
    assert mean_confidence[13] == 0.9 and accuracy[14] == 0.0
    assert expected_calibration_error(np.full(10, 0.7), np.arange(10) < 7) == pytest.approx(0)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A ProtoNet trained for 60 episodes on the Omniglot background alphabets, exported (parity,
    temperature, rejection) like train-export does."""
    from distilshot.export.pipeline import export_model
    from distilshot.train.data.registry import load_split
    from distilshot.train.pipeline import model_spec
    from distilshot.train.presets import preset_config
    from distilshot.train.samplers import EpisodeSampler
    from distilshot.train.trainer import BatchMaker

    torch.manual_seed(0)
    train = load_split("omniglot", "train")
    spec = model_spec(preset_config("protonet", "omniglot", "quick"), train.num_classes)
    model = spec.build(seed=0).train()
    make = BatchMaker(train, spec, "none", torch.device("cpu"))
    for i, episode in enumerate(EpisodeSampler(train.labels, 20, 1, 5, 60, seed=0)):
        train_steps(model, make(episode, torch.Generator().manual_seed(i)), 1, lr=1e-2)
    out = tmp_path_factory.mktemp("calibrated") / "bundle"
    test = load_split("omniglot", "test")
    return export_model(model.eval(), spec, out, [], {}, test, parity_episodes=10)


def test_export_fits_a_temperature_that_lowers_the_ece(exported) -> None:
    manifest = load_manifest(exported.bundle)
    c = manifest.calibration
    assert c == exported.calibration and c.temperature == manifest.head.temperature
    assert math.isfinite(c.temperature) and c.temperature != c.fitted_from == 1.0
    assert c.fit_split == "omniglot/val" and c.eval_split == "omniglot/test" and c.bins == 15
    assert c.protocol.startswith("20-way 1-shot within one alphabet, support and query by disjoint drawers")
    assert c.ece < c.ece_uncalibrated and c.nll < c.nll_uncalibrated
    assert c.ece <= 0.05  # the goal, on held-out test episodes (fitted on val)
    assert 0.05 < c.accuracy < 1  # 20-way: chance is 5%
    assert (exported.bundle.parent / "bundle.reliability.png").stat().st_size > 10_000


def test_rejection_is_calibrated_at_the_fitted_temperature(exported) -> None:
    from distilshot.train.data.registry import load_split

    manifest = load_manifest(exported.bundle)
    test = load_split("omniglot", "test")
    features = bundle_features(exported.bundle, test.images)
    again = calibrate(PrototypeHead(manifest.head), features, test.labels, split=test.name)
    assert manifest.rejection == exported.rejection == again
    assert exported.rejection.known_accepted == pytest.approx(0.95, abs=0.02)


def test_cli_and_http_scores_are_probabilities_not_saturated(exported, tmp_path: Path) -> None:
    # Angelic characters 1-5 by drawer 1, and character 1 again by drawer 3 under another name: a query of
    # character 1 by drawer 2 is ambiguous by construction, between "c1" and "c1 again".
    bundle, store = exported.bundle, tmp_path / "classes.db"
    support = {f"c{c}": DATA / f"Angelic/character{c:02d}/{964 + c:04d}_01.png" for c in range(1, 6)}
    support["c1 again"] = DATA / "Angelic/character01/0965_03.png"
    for name, image in support.items():
        cli("register", "--bundle", bundle, "--store", store, name, image)
    query = DATA / "Angelic/character01/0965_02.png"
    out = cli("classify", "--bundle", bundle, "--store", store, "--top-k", "6", "--json", query)
    (prediction,) = [json.loads(line) for line in out.stdout.splitlines()]
    scores = [r["score"] for r in prediction["top_k"]]
    assert {r["label"] for r in prediction["top_k"][:2]} == {"c1", "c1 again"}
    assert 0.1 < scores[1] <= scores[0] < 0.9 and sum(scores) == pytest.approx(1)
    with (
        FewShotClassifier(bundle, store) as classifier,
        served(create_app(classifier)) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        answer = client.post(
            "/v1/classify", params={"top_k": 6}, files=files(("query.png", query.read_bytes()))
        ).json()
        card = client.get("/v1/model").json()
    assert [r["score"] for r in answer["predictions"][0]["top_k"]] == pytest.approx(scores)
    assert (
        card["calibration"]["temperature"] == card["head"]["temperature"] == exported.calibration.temperature
    )
    # The same query at the model's own temperature is more confident: the fit is what unsaturates it.
    manifest = load_manifest(bundle)
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in manifest.files:
        (raw / name).write_bytes((bundle / name).read_bytes())
    head = replace(manifest.head, temperature=exported.calibration.fitted_from)
    replace(manifest, head=head, calibration=None, rejection=None).save(raw)
    with FewShotClassifier(raw, store) as classifier:
        (uncalibrated,) = classifier.classify([query])
    assert uncalibrated.top_k[0][0] == prediction["top_k"][0]["label"]
    assert uncalibrated.top_k[0][1] > scores[0]


def test_the_manifest_refuses_an_inconsistent_calibration(exported, tmp_path: Path) -> None:
    manifest = load_manifest(exported.bundle)
    c = manifest.calibration
    for bad, message in (
        (replace(c, temperature=2 * c.temperature), "the head's temperature"),
        (replace(c, ece=1.5), "must lie between 0 and 1"),
        (replace(c, nll=-0.1), "must not be negative"),
        (replace(c, bins=0), "at least 1"),
        (replace(c, ece=math.nan), "calibration.ece"),
    ):
        with pytest.raises(BundleError, match=message):
            replace(manifest, calibration=bad).save(tmp_path)
    text = json.loads((exported.bundle / "manifest.json").read_text())
    assert Manifest.from_dict(text).calibration == c  # read back field by field
