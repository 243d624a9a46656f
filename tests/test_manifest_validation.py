"""Manifest validation refuses non-finite numbers: a NaN temperature or head weight would make every
answer the first class with NaN scores, and NaN is not JSON for whoever reads the CLI's output."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from serve_fixtures import make_bundle

from distilshot.core.manifest import MANIFEST_FILE, Rejection, load_manifest
from distilshot.errors import BundleError, DistilshotError
from distilshot.serve.classifier import FewShotClassifier
from distilshot.serve.cli import _json

DISTILSHOT = Path(sys.executable).parent / "distilshot"


def set_temperature(data: dict[str, Any], value: float) -> None:
    data["head"]["temperature"] = value


def set_weight(data: dict[str, Any], value: float) -> None:
    data["head"]["weights"]["embedding"] = value


def set_std(data: dict[str, Any], value: float) -> None:
    data["preprocessing"]["std"][1] = value


def set_metric(data: dict[str, Any], value: float) -> None:
    data["metrics"]["5way-1shot"]["accuracy"] = value


def set_threshold(data: dict[str, Any], value: float) -> None:
    data["rejection"] = {
        "threshold": value,
        "target": 0.95,
        "protocol": "p",
        "known_accepted": 0.9,
        "unknown_rejected": 0.8,
    }


EDITS = [set_temperature, set_weight, set_std, set_metric, set_threshold]


def edited_bundle(folder: Path, edit: Callable[[dict[str, Any], float], None], value: float) -> Path:
    """A bundle whose manifest.json was rewritten with `edit(value)`; Python's json writes NaN/Infinity."""
    bundle = make_bundle(folder)
    path = bundle / MANIFEST_FILE
    data = json.loads(path.read_text())
    edit(data, value)
    path.write_text(json.dumps(data))
    return bundle


@pytest.mark.parametrize("edit", EDITS, ids=lambda e: e.__name__)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_in_manifest_json_are_refused(tmp_path, edit, value):
    bundle = edited_bundle(tmp_path / "b", edit, value)
    assert any(word in (bundle / MANIFEST_FILE).read_text() for word in ("NaN", "Infinity"))
    with pytest.raises(BundleError, match="not finite"):
        load_manifest(bundle)
    with pytest.raises(BundleError, match="not finite"):
        FewShotClassifier(bundle)


def test_a_number_too_large_for_a_float_is_refused(tmp_path):
    bundle = make_bundle(tmp_path / "b")
    path = bundle / MANIFEST_FILE
    path.write_text(path.read_text().replace('"temperature": 1.0', '"temperature": 1e999'))
    assert "1e999" in path.read_text()
    with pytest.raises(BundleError, match="1e999 is not finite"):
        load_manifest(bundle)


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda m: {"head": dataclasses.replace(m.head, temperature=math.nan)}, "manifest.head.temperature"),
        (lambda m: {"head": dataclasses.replace(m.head, weights={"embedding": math.nan})}, "weights"),
        (lambda m: {"rejection": Rejection(math.inf, 0.9, "p", 0.9, 0.8)}, "rejection.threshold"),
        (lambda m: {"training": {"losses": [1.0, math.nan]}}, "manifest.training.losses[1]"),
    ],
)
def test_validation_names_the_non_finite_field_and_save_writes_nothing(tmp_path, change, where):
    bundle = make_bundle(tmp_path / "b")
    before = (bundle / MANIFEST_FILE).read_bytes()
    manifest = load_manifest(bundle)
    bad = dataclasses.replace(manifest, **change(manifest))
    with pytest.raises(BundleError, match=re.escape(where) + ".*not finite"):
        bad.validate()
    with pytest.raises(BundleError, match="not finite"):
        bad.save(bundle)
    with pytest.raises(BundleError, match="not finite"):
        type(manifest).from_dict(bad.to_dict())
    assert (bundle / MANIFEST_FILE).read_bytes() == before


def test_cli_json_output_is_never_nan(tmp_path):
    bundle = edited_bundle(tmp_path / "b", set_weight, math.nan)
    result = subprocess.run(
        [str(DISTILSHOT), "info", "--bundle", str(bundle), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "NaN" not in result.stdout
    assert result.returncode == 2 and result.stderr.startswith("error: "), (result.stdout, result.stderr)
    assert "not finite" in result.stderr and "Traceback" not in result.stderr


def test_cli_json_refuses_non_finite_numbers_instead_of_printing_nan():
    assert json.loads(_json({"score": 0.5})) == {"score": 0.5}
    for value in (math.nan, math.inf):
        with pytest.raises(DistilshotError, match="not finite"):
            _json([{"label": "a", "score": value}])
