"""`distilshot runs`: the run folders of a runs folder, read without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

DISTILSHOT = Path(sys.executable).parent / "distilshot"


def result(mean: float, n_way: int, k_shot: int) -> dict[str, object]:
    """An eval.json entry as train/report.py writes it."""
    protocol = f"{n_way}-way {k_shot}-shot, 15 queries/class, 600 episodes, prototype, test"
    return {
        "split": "test",
        "n_way": n_way,
        "k_shot": k_shot,
        "mean": mean,
        "ci95": 0.3,
        "protocol": protocol,
    }


def write_run(root: Path, name: str, eval_results=None, metrics=None) -> Path:
    run = root / name
    run.mkdir(parents=True)
    config = {"method": "bml", "dataset": "omniglot", "backbone": "convnet4", "preset": "quick", "seed": 0}
    (run / "config.json").write_text(json.dumps(config))
    if eval_results is not None:
        (run / "eval.json").write_text(json.dumps(eval_results))
    if metrics is not None:
        (run / "bundle").mkdir()
        (run / "bundle" / "manifest.json").write_text(json.dumps({"name": name, "metrics": metrics}))
    return run


def runs(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "250"}  # a table row on one line
    command = [str(DISTILSHOT), "runs", *map(str, args)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60, env=env)


def test_runs_lists_method_dataset_backbone_best_accuracy_and_bundle(tmp_path):
    write_run(
        tmp_path / "runs", "20260101-bml", [result(97.0, 5, 1), result(99.3, 5, 5), result(91.0, 20, 1)]
    )
    write_run(tmp_path / "runs", "20260102-bml", metrics={"5-way 1-shot prototype": result(96.5, 5, 1)})
    write_run(tmp_path / "runs", "20260103-bml")
    (tmp_path / "runs" / "not-a-run").mkdir()
    listed = json.loads(runs("--json", cwd=tmp_path).stdout)  # ./runs by default
    assert [r["name"] for r in listed] == ["20260101-bml", "20260102-bml", "20260103-bml"]
    first, second, third = listed
    assert (first["method"], first["dataset"], first["backbone"]) == ("bml", "omniglot", "convnet4")
    assert first["best"] == {
        "mean": 99.3,
        "ci95": 0.3,
        "setting": "5-way 5-shot",
        "protocol": "5-way 5-shot, 15 queries/class, 600 episodes, prototype, test",
    }
    assert first["bundle"] is None and third["best"] is None and third["bundle"] is None
    assert second["best"]["mean"] == 96.5 and second["bundle"] == str(
        Path("runs") / "20260102-bml" / "bundle"
    )
    table = runs(cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "99.30 ± 0.30% 5-way 5-shot" in table.stdout and "not evaluated" in table.stdout


def test_runs_errors_are_one_line(tmp_path):
    missing = runs(tmp_path / "absent", cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.startswith("error: there is no runs folder")
    (write_run(tmp_path, "broken") / "eval.json").write_text("{not json")
    broken = runs(tmp_path, cwd=tmp_path)
    assert broken.returncode == 2 and broken.stderr.startswith(f"error: cannot read {tmp_path / 'broken'}")
    assert "Traceback" not in broken.stderr
