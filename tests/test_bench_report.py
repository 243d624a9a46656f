"""bench/run.py: `--only` re-measures the chosen sections and keeps the others with their own machine line."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def bench_run(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_run_under_test", BENCH / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("bench_run_under_test", None)


def test_only_keeps_the_other_sections_and_their_machines(bench_run, tmp_path: Path, monkeypatch) -> None:
    old_machine = {"cpu": "Old CPU", "cores_usable": 2, "os": "os", "python": "3.11", "versions": {}}
    old = {
        "date": "2026-11-27 21:54 UTC",
        "command": "python bench/run.py",
        "quick": False,
        "machine": old_machine,
        "sections": {
            "engines": {"title": "Engines", "markdown": "| old engines |", "data": {}, "seconds": 9},
            "head": {"title": "Head", "markdown": "| old head |", "data": {}, "seconds": 3},
        },
    }
    (tmp_path / "results.json").write_text(json.dumps(old))
    fresh = SimpleNamespace(run=lambda quick: {"title": "Head", "markdown": "| new head |", "data": {}})
    monkeypatch.setattr(bench_run, "load_section", lambda name: fresh)
    monkeypatch.setattr(bench_run, "section_names", lambda: ["engines", "head", "training"])

    assert bench_run.main(["--only", "head", "--out", str(tmp_path)]) == 0

    sections = json.loads((tmp_path / "results.json").read_text())["sections"]
    assert list(sections) == ["engines", "head"]
    assert sections["engines"]["markdown"] == "| old engines |"
    assert sections["engines"]["measured"]["machine"]["cpu"] == "Old CPU"
    assert sections["head"]["markdown"] == "| new head |"
    assert sections["head"]["measured"]["machine"]["cpu"] != "Old CPU"
    text = (tmp_path / "results.md").read_text()
    assert text.index("| old engines |") < text.index("| new head |")
    assert "on Old CPU (ISA not recorded)" in text and "| old head |" not in text
