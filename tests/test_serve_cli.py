"""The serving commands through the installed `distilshot` script, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from serve_fixtures import make_bundle, solid, write_image

DISTILSHOT = Path(sys.executable).parent / "distilshot"


def run(
    *args: object, cwd: Path, ok: bool | None = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs `distilshot ARGS`; `ok`: it succeeds, False: it fails with one error line, None: unchecked."""
    result = subprocess.run(
        [str(DISTILSHOT), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env=None if env is None else {**os.environ, **env},
    )
    assert "Traceback" not in result.stderr, result.stderr
    if ok:
        assert result.returncode == 0, result.stderr
    elif ok is False:
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
    card = run("info", "--bundle", "bundle", cwd=workdir).stdout
    lines = {line[:14].strip(): line[14:] for line in card.splitlines()}
    assert lines["model"] == "tiny: protonet, backbone tinynet, trained on colours"
    assert lines["accuracy"] == "5way-1shot: accuracy 0.5, ci95 0.01"
    assert lines["engine"] == "onnxruntime (CPUExecutionProvider), graph embedder in fp32"
    assert (
        lines["input"]
        == "16x16 RGB (shorter-side-center-crop, bilinear), mean 0.5, 0.5, 0.5, std 0.25, 0.25, 0.25"
    )
    assert (
        lines["unknown"].startswith("no calibrated threshold") and lines["fingerprint"] == info["fingerprint"]
    )
    assert "{" not in card and "store" not in lines  # no JSON in the card; no store was named


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
    assert "never mixed" in err.stderr and "distilshot reembed --bundle" in err.stderr
    err = run("info", "--bundle", tmp_path, cwd=workdir, ok=False).stderr
    assert "is not a bundle" in err


def test_classify_answers_good_images_and_reports_each_bad_one(workdir):
    common = ["--bundle", "bundle", "--store", "partial.db"]
    run("register", *common, "--folder", "support", cwd=workdir)
    (workdir / "queries" / "deeper").mkdir(exist_ok=True)
    write_image(workdir / "queries" / "deeper" / "q3.jpg", solid((230, 0, 0)), "JPEG")
    (workdir / "queries" / "notes.txt").write_text("not an image, and not picked from a folder")
    (workdir / "broken.png").write_bytes(b"not an image")
    args = ["classify", *common, "queries/q1.png", "broken.png", "missing.png", "queries", "--json"]
    result = run(*args, cwd=workdir, ok=None)
    assert result.returncode == 2
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["image"] for r in records] == [
        "queries/q1.png",
        "broken.png",
        "missing.png",
        "queries/deeper/q3.jpg",
        "queries/q1.png",
        "queries/q2.png",
    ]
    assert [r.get("label") for r in records] == ["Latin A", None, None, "Latin A", "Latin A", "beta"]
    assert records[1]["error"].startswith("broken.png: not an image") and "top_k" not in records[1]
    assert records[2] == {"image": "missing.png", "error": "missing.png: file not found"}
    assert result.stderr.splitlines() == [f"error: {records[1]['error']}", f"error: {records[2]['error']}"]

    table = run("classify", *common, "broken.png", "queries/q2.png", cwd=workdir, ok=None)
    assert table.returncode == 2 and "queries/q2.png" in table.stdout and "beta" in table.stdout
    assert table.stderr.startswith("error: broken.png: not an image") and len(table.stderr.splitlines()) == 1
    (workdir / "empty").mkdir(exist_ok=True)
    err = run("classify", *common, "empty", cwd=workdir, ok=False).stderr
    assert err.startswith("error: empty holds no image files (.bmp, .gif")


def test_reembed_is_one_command_that_every_hint_names(workdir, tmp_path):
    store = tmp_path / "s.db"
    run("register", "--bundle", "bundle", "--store", store, "red", "support/Latin A/a1.png", cwd=workdir)
    other = make_bundle(tmp_path / "other", "two")
    hint = f"`distilshot reembed --bundle {other} --store {store}`"
    for args in (
        ["classify", "queries/q1.png", "--bundle", other, "--store", store],
        ["classes", "--bundle", other, "--store", store],
        ["info", "--bundle", other, "--store", store],
        ["register", "--bundle", other, "--store", store, "blue", "support/beta/b1.png"],
    ):
        err = run(*args, cwd=workdir, ok=False).stderr
        assert hint in err and "another model" in err, (args, err)
    done = json.loads(run("reembed", "--bundle", other, "--store", store, "--json", cwd=workdir).stdout)
    assert done == {"reembedded": True, "classes": 1, "shots": 1}
    out = run("classify", "queries/q1.png", "--bundle", other, "--store", store, "--json", cwd=workdir)
    assert json.loads(out.stdout)["label"] == "red"
    again = run("reembed", "--bundle", other, "--store", store, cwd=workdir).stdout
    assert "already holds this graph's embeddings" in again


def test_export_store_refuses_to_overwrite_and_answers_json(workdir, tmp_path):
    store, copy = tmp_path / "s.db", tmp_path / "copy.db"
    run("register", "--bundle", "bundle", "--store", store, "red", "support/Latin A/a1.png", cwd=workdir)
    assert json.loads(run("export-store", copy, "--store", store, "--json", cwd=workdir).stdout) == {
        "exported": str(copy),
        "classes": 1,
    }
    copy.write_bytes(b"precious")
    err = run("export-store", copy, "--store", store, cwd=workdir, ok=False).stderr
    assert "exists; pass --overwrite" in err and copy.read_bytes() == b"precious"
    out = run("export-store", copy, "--store", store, "--overwrite", cwd=workdir).stdout
    assert out.startswith("exported 1 classes of") and copy.read_bytes() != b"precious"


def test_bundle_and_store_from_the_environment(workdir, tmp_path):
    env = {"DISTILSHOT_BUNDLE": str(workdir / "bundle"), "DISTILSHOT_STORE": str(tmp_path / "env.db")}
    run("register", "red", "support/Latin A/a1.png", cwd=workdir, env=env)
    out = run("classify", "queries/q1.png", "--json", cwd=workdir, env=env).stdout
    assert json.loads(out)["label"] == "red"
    assert [c["name"] for c in json.loads(run("classes", "--json", cwd=workdir, env=env).stdout)] == ["red"]
    err = run("classes", "--store", tmp_path / "absent.db", cwd=workdir, env=env, ok=False).stderr
    assert "no support store at" in err  # the option wins over the environment


def test_help_has_an_example_flags_bare_and_usage_errors_one_line(workdir):
    for command in (
        "register",
        "classify",
        "classes",
        "remove",
        "reembed",
        "info",
        "export-store",
        "import-store",
        "serve",
        "runs",
    ):
        text = run(command, "--help", cwd=workdir).stdout
        assert f"Example: distilshot {command}" in text, command
        assert "<bool>" not in text and "<str>" not in text and "<path>" not in text, (command, text)
    assert run("--version", cwd=workdir).stdout == "distilshot 0.1.0\n"
    err = run("classify", "--bundle", "bundle", cwd=workdir, ok=False).stderr
    assert err == "error: Missing argument 'IMAGE'; see `distilshot classify --help`\n"
    err = run(
        "classify", "q.png", "-b", "bundle", "-s", "x.db", "--top-k", "many", cwd=workdir, ok=False
    ).stderr
    assert err.startswith("error: Invalid value for '--top-k'") and len(err.splitlines()) == 1
    assert run("frobnicate", cwd=workdir, ok=False).stderr.startswith("error: No such command 'frobnicate'")
