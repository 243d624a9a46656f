"""Evaluation results for people (a rich table), for programs (JSON) and for the run folder (eval.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from distilshot.train.evaluation import EvalResult

EVAL_FILE = "eval.json"


def print_results(results: list[EvalResult], title: str = "", console: Console | None = None) -> None:
    table = Table(title=title)
    for column in ("setting", "accuracy (%)", "classifier", "protocol"):
        table.add_column(column)
    for r in results:
        table.add_row(
            r.key,
            f"{r.mean:.2f} ± {r.ci95:.2f}",
            r.classifier,
            f"{r.n_query} queries/class, {r.episodes} episodes, {r.split}",
        )
    (console or Console()).print(table)


def run_folder_of(checkpoint: Path) -> Path:
    """runs/<run>/checkpoints/best.pt -> runs/<run>; a loose checkpoint -> its folder."""
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent


def save_results(run_dir: Path, results: list[EvalResult]) -> tuple[Path, list[EvalResult]]:
    """Adds `results` to the run's eval.json, replacing earlier results of the same protocol. Earlier
    results measured on another number of episodes or queries are dropped, so that the file (and every
    table or bundle made from it) reports one measurement; returns the file and the dropped results."""
    measured = {(r.episodes, r.n_query) for r in results}
    earlier = load_results(run_dir) or []
    dropped = [r for r in earlier if (r.episodes, r.n_query) not in measured]
    merged = {r.protocol: r for r in earlier if r not in dropped}
    merged.update({r.protocol: r for r in results})
    path = Path(run_dir) / EVAL_FILE
    path.write_text(json.dumps([r.to_dict() for r in merged.values()], indent=2) + "\n")
    return path, dropped


def load_results(run_dir: Path) -> list[EvalResult] | None:
    path = Path(run_dir) / EVAL_FILE
    if not path.is_file():
        return None
    return [
        EvalResult(**{k: v for k, v in r.items() if k != "protocol"}) for r in json.loads(path.read_text())
    ]


def results_to_json(results: list[EvalResult]) -> list[dict[str, Any]]:
    return [r.to_dict() for r in results]
