"""The serving commands through the installed `distilshot` script, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from serve_fixtures import make_bundle, solid, write_image

DISTILSHOT = Path(sys.executable).parent / "distilshot"


def run(*args: object, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(DISTILSHOT), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert "Traceback" not in result.stderr, result.stderr
    if ok:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
        assert result.stderr.startswith("error: ") and result.stdout == "", result.stderr
    return result


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    make_bundle(root / "bundle")
    write_image(root / "support" / "Latin A" / "a1.png", solid((250, 0, 0)))
    write_image(root / "support" / "Latin A" / "a2.png", solid((240, 20, 0)))
    write_image(root / "support" / "beta" / "b1.png", solid((0, 0, 250)))
    write_image(root / "green.png", solid((0, 250, 0)))
    write_image(root / "queries" / "q1.png", solid((220, 10, 10)))
    write_image(root / "queries" / "q2.png", solid((10, 10, 220)))
    return root


def test_register_classify_classes_remove(workdir):
    common = ["--bundle", "bundle", "--store", "classes.db"]
    out = run("register", *common, "--folder", "support", cwd=workdir).stdout
    assert "Latin A" in out and "beta" in out
    out = run("register", *common, "green", "green.png", "--json", cwd=workdir).stdout
    assert json.loads(out) == [{"name": "green", "shots": 1, "created": json.loads(out)[0]["created"]}]

    out = run("classify", *common, "queries/q1.png", "queries/q2.png", "--top-k", "2", "--json", cwd=workdir)
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["image"] for r in records] == ["queries/q1.png", "queries/q2.png"]
    assert [r["top_k"][0]["label"] for r in records] == ["Latin A", "beta"]
    assert all(len(r["top_k"]) == 2 and set(r["top_k"][0]) == {"label", "score", "logit"} for r in records)

    table = run("classify", *common, "queries/q1.png", cwd=workdir).stdout
    assert "queries/q1.png" in table and "Latin A" in table
    run("register", *common, "[red]x[bold]", "green.png", cwd=workdir)
    assert "[red]x[bold]" in run("classes", "--store", "classes.db", cwd=workdir).stdout  # not rich markup
    run("remove", "[red]x[bold]", "--store", "classes.db", cwd=workdir)

    listed = json.loads(run("classes", "--store", "classes.db", "--json", cwd=workdir).stdout)
    assert [(c["name"], c["shots"]) for c in listed] == [("Latin A", 2), ("beta", 1), ("green", 1)]
    run("register", *common, "--add", "green", "green.png", cwd=workdir)
    run("remove", "beta", "--store", "classes.db", "--bundle", "bundle", cwd=workdir)
    listed = json.loads(run("classes", "--store", "classes.db", "--json", cwd=workdir).stdout)
    assert [(c["name"], c["shots"]) for c in listed] == [("Latin A", 2), ("green", 2)]


def test_info(workdir):
    info = json.loads(run("info", "--bundle", "bundle", "--json", cwd=workdir).stdout)
    assert info["method"] == "protonet" and info["engine"] == "onnxruntime"
    assert info["providers"] == ["CPUExecutionProvider"] and len(info["fingerprint"]) == 64
    assert "protonet" in run("info", "--bundle", "bundle", cwd=workdir).stdout


def test_user_errors_exit_2_without_traceback(workdir, tmp_path):
    common = ["--bundle", "bundle", "--store", tmp_path / "e.db"]
    err = run("classify", *common, "queries/q1.png", cwd=workdir, ok=False).stderr
    assert "no support store" in err
    run("register", *common, "red", "support/Latin A/a1.png", cwd=workdir)
    err = run("register", *common, "red", "support/beta/b1.png", cwd=workdir, ok=False).stderr
    assert "already registered" in err
    err = run("classify", *common, "missing.png", cwd=workdir, ok=False).stderr
    assert "missing.png: file not found" in err
    err = run(
        "register", *common, "blue", "support/beta/b1.png", "bundle/manifest.json", cwd=workdir, ok=False
    )
    assert "manifest.json: not an image" in err.stderr
    assert [
        c["name"] for c in json.loads(run("classes", "-s", tmp_path / "e.db", "--json", cwd=workdir).stdout)
    ] == ["red"]
    err = run("classes", "--store", "bundle/manifest.json", cwd=workdir, ok=False).stderr
    assert "not a distilshot support store" in err
    other = make_bundle(tmp_path / "other", "two")
    err = run(
        "classify", "--bundle", other, "--store", tmp_path / "e.db", "queries/q1.png", cwd=workdir, ok=False
    )
    assert "never mixed" in err.stderr
    err = run("info", "--bundle", tmp_path, cwd=workdir, ok=False).stderr
    assert "is not a bundle" in err
