"""docs/manifest.schema.json is what distilshot/core/manifest_schema.py generates from the manifest
dataclasses, and real manifests (with every optional part) satisfy it while malformed ones do not."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import jsonschema
import pytest
from serve_fixtures import make_bundle

from distilshot.core.manifest import (
    Calibration,
    FixedClassifier,
    Generators,
    HeadGraph,
    Manifest,
    PreprocessGraph,
    Rejection,
    load_manifest,
)
from distilshot.core.manifest_schema import manifest_schema

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "docs" / "manifest.schema.json"


def test_the_committed_schema_is_the_generated_one() -> None:
    assert json.loads(SCHEMA_FILE.read_text()) == manifest_schema(), (
        "regenerate it: python -m distilshot.core.manifest_schema > docs/manifest.schema.json"
    )


@pytest.fixture
def full_manifest(tmp_path: Path) -> dict:
    manifest = load_manifest(make_bundle(tmp_path / "bundle", "two"))
    full = dataclasses.replace(
        manifest,
        rejection=Rejection(-3.5, 0.95, "5-way 1-shot", 0.95, 0.6),
        calibration=Calibration(1.0, 1.0, "20-way 1-shot", "val", "test", 15, 0.02, 0.3, 0.4, 1.2, 0.9),
        generators=Generators(("generator-0.onnx",), "global", 4, 8, 16, "weaken-student"),
        classifier=FixedClassifier("classifier.onnx", "global", ("a", "b")),
        preprocess_graph=PreprocessGraph("preprocess.onnx", 3),
        head_graph=HeadGraph("head.onnx"),
        files={
            **manifest.files,
            **{f: "0" * 64 for f in ("generator-0.onnx", "classifier.onnx", "preprocess.onnx", "head.onnx")},
        },
    )
    return json.loads(json.dumps(full.to_dict()))


def test_a_full_manifest_satisfies_the_schema(full_manifest: dict) -> None:
    jsonschema.Draft202012Validator(manifest_schema()).validate(full_manifest)


def test_a_full_manifest_reads_back_as_written(full_manifest: dict) -> None:
    assert json.loads(json.dumps(Manifest.from_dict(full_manifest).to_dict())) == full_manifest


@pytest.mark.parametrize(
    "path, value",
    [
        (("head", "metric"), "manhattan"),
        (("schema_version",), 2),
        (("preprocessing", "height"), "32"),
        (("graphs", "embedder", "precision"), "int4"),
        (("calibration", "bins"), 1.5),
        (("preprocess_graph", "channels"), "3"),
    ],
)
def test_a_malformed_manifest_does_not(full_manifest: dict, path: tuple[str, ...], value: object) -> None:
    bad = copy.deepcopy(full_manifest)
    target = bad
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(manifest_schema()).validate(bad)


@pytest.mark.parametrize("field", ["files", "head", "graphs", "schema_version"])
def test_required_fields_are_required(full_manifest: dict, field: str) -> None:
    del full_manifest[field]
    with pytest.raises(jsonschema.ValidationError, match=field):
        jsonschema.Draft202012Validator(manifest_schema()).validate(full_manifest)
