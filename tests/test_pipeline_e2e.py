"""The whole pipeline from the command line, on real Omniglot: train -> evaluate -> export -> register
-> classify, with the served predictions checked against the PyTorch model, and bad input refused."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from evaluation_characters import CHARACTERS, drawings
from method_runs import cli

from distilshot.train.augment import normalize, to_float
from distilshot.train.checkpoint import load_model
from distilshot.train.data.decode import decode_image
from distilshot.train.methods.base import prototype_logits


@pytest.fixture(scope="module")
def trained(trained_run):
    """The session's `distilshot train-export` run (trained_fixture.py) and the summary it printed."""
    return trained_run.run, trained_run.summary


def test_train_export_reports_accuracy_and_writes_the_run_folder(trained) -> None:
    run, summary = trained
    results = {r["n_way"] * 100 + r["k_shot"]: r for r in summary["results"] if r["sampling"] == "random"}
    within = {r["n_way"] * 100 + r["k_shot"]: r for r in summary["results"] if r["sampling"] != "random"}
    assert sorted(results) == sorted(within) == [501, 505, 2001]
    assert all("within one alphabet" in r["protocol"] for r in within.values())
    assert all(r["split"] == "omniglot/test" and "episodes" in r["protocol"] for r in results.values())
    assert results[501]["mean"] > 70  # chance is 20%
    assert results[2001]["mean"] > 40  # chance is 5%
    assert results[505]["mean"] > results[501]["mean"]
    assert summary["parity"]["faithful"] and max(summary["parity"]["max_abs_diff"].values()) < 1e-4
    for name in (
        "config.json",
        "eval.json",
        "curves.png",
        "plots/embedding.png",
        "plots/confusion.png",
        "checkpoints/best.pt",
        "checkpoints/last.pt",
        "bundle/embedder.onnx",
    ):
        assert (run / name).is_file(), name
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    manifest = json.loads((run / "bundle" / "manifest.json").read_text())
    assert manifest["method"] == "protonet" and manifest["preprocessing"]["height"] == 28
    assert manifest["metrics"]["20-way 1-shot prototype/euclidean"]["mean"] == results[2001]["mean"]


def episode_files() -> tuple[dict[str, list[Path]], list[tuple[Path, str]]]:
    support, queries = {}, []
    for character in CHARACTERS:
        files = drawings(character)
        support[character.replace("/", " ")] = files[:1]
        queries += [(f, character.replace("/", " ")) for f in files[1:6]]
    return support, queries


def test_served_predictions_match_pytorch_on_an_episode(trained, tmp_path: Path) -> None:
    run, _ = trained
    support, queries = episode_files()
    store = tmp_path / "classes.db"
    for label, files in support.items():
        cli("register", "--bundle", run / "bundle", "--store", store, label, *files)
    out = cli("classify", "--bundle", run / "bundle", "--store", store, "--json", *[q for q, _ in queries])
    served = [json.loads(line)["top_k"][0]["label"] for line in out.stdout.splitlines()]

    model, spec, _ = load_model(run / "checkpoints" / "best.pt")
    labels = list(support)

    def embed(files: list[Path]) -> dict[str, torch.Tensor]:
        pixels = np.stack([decode_image(f, spec.image_size, spec.channels) for f in files])
        with torch.no_grad():
            return model.embed(normalize(to_float(pixels), spec.mean, spec.std))

    logits = prototype_logits(
        embed([files[0] for files in support.values()]),
        embed([q for q, _ in queries]),
        len(labels),
        1,
        model.head(),
    )
    assert served == [labels[i] for i in logits.argmax(1).tolist()]
    assert np.mean([s == truth for s, (_, truth) in zip(served, queries, strict=True)]) >= 0.6


def test_bad_input_is_refused_and_changes_nothing(trained, tmp_path: Path) -> None:
    run, _ = trained
    bundle, store = run / "bundle", tmp_path / "classes.db"
    good = episode_files()[1][0][0]
    cli("register", "--bundle", bundle, "--store", store, "first", good)
    before = cli("classes", "--store", store, "--json").stdout

    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:60])
    assert (
        "truncated.png"
        in cli("register", "--bundle", bundle, "--store", store, "second", good, truncated, ok=False).stderr
    )
    assert (
        "truncated.png" in cli("classify", "--bundle", bundle, "--store", store, truncated, ok=False).stderr
    )
    assert "no class 'no-such-class'" in cli("remove", "--store", store, "no-such-class", ok=False).stderr
    assert cli("classes", "--store", store, "--json").stdout == before

    tampered = tmp_path / "bundle"
    shutil.copytree(bundle, tampered)
    graph = tampered / "embedder.onnx"
    data = bytearray(graph.read_bytes())
    data[-10] ^= 0xFF
    graph.write_bytes(bytes(data))
    assert "sha256" in cli("classify", "--bundle", tampered, "--store", store, good, ok=False).stderr


def test_missing_dataset_files_name_what_to_put_where(tmp_path: Path) -> None:
    env = {
        "DISTILSHOT_DATA": str(tmp_path / "empty"),
        "DISTILSHOT_CACHE": str(tmp_path / "cache"),
        "DISTILSHOT_OFFLINE": "1",
    }
    (tmp_path / "empty").mkdir()
    message = cli("train", "--dataset", "omniglot", "--run-dir", tmp_path / "run", env=env, ok=False).stderr
    assert "images_background" in message and "https://" in message


def test_eval_and_export_commands_on_the_checkpoint(trained, tmp_path: Path) -> None:
    run, _ = trained
    checkpoint = run / "checkpoints" / "best.pt"
    results = json.loads(cli("eval", checkpoint, "--way", 5, "--shot", 1, "--episodes", 100, "--json").stdout)
    assert results[0]["n_way"] == 5 and results[0]["episodes"] == 100 and results[0]["mean"] > 70
    exported = json.loads(cli("export", checkpoint, "--out", tmp_path / "b2", "--json").stdout)
    assert exported["parity"]["faithful"]
    assert "already exists" in cli("export", checkpoint, "--out", tmp_path / "b2", ok=False).stderr
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    assert "not a distilshot checkpoint" in cli("export", foreign, ok=False).stderr
