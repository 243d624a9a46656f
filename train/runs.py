"""`distilshot runs`: the training runs in a runs folder, read from their files alone (no torch), so it
works on a runtime-only install too.

A run folder (train/pipeline.py) holds config.json (the request: method, dataset, backbone, preset),
eval.json (train/report.py: one result per protocol) once evaluated, and bundle/manifest.json once
exported, whose metrics are the same results.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from distilshot.errors import DistilshotError

CONFIG_FILE, EVAL_FILE, MANIFEST_FILE = "config.json", "eval.json", "manifest.json"
BUNDLE_FOLDER = "bundle"

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@dataclass(frozen=True)
class Accuracy:
    """One evaluation result: accuracy and its 95% interval in percent, the setting and full protocol."""

    mean: float
    ci95: float
    setting: str
    protocol: str


@dataclass(frozen=True)
class Run:
    name: str
    path: str
    method: str
    dataset: str
    backbone: str
    preset: str
    best: Accuracy | None  # the highest accuracy measured, None before evaluation
    bundle: str | None  # the exported bundle folder, None before export

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_runs(root: Path) -> list[Run]:
    """Every run folder directly under `root` (one with a config.json), oldest name first: run folders
    are named by their start time."""
    if not root.is_dir():
        raise DistilshotError(f"there is no runs folder {root}; train with `distilshot train` first")
    return [read_run(folder) for folder in sorted(root.iterdir()) if (folder / CONFIG_FILE).is_file()]


def read_run(folder: Path) -> Run:
    config = _read_json(folder / CONFIG_FILE)
    bundle = folder / BUNDLE_FOLDER
    manifest = _read_json(bundle / MANIFEST_FILE) if (bundle / MANIFEST_FILE).is_file() else {}
    return Run(
        name=folder.name,
        path=str(folder),
        method=str(config.get("method", "?")),
        dataset=str(config.get("dataset", "?")),
        backbone=str(config.get("backbone", "?")),
        preset=str(config.get("preset", "?")),
        best=best_accuracy(folder, manifest),
        bundle=str(bundle) if manifest else None,
    )


def best_accuracy(folder: Path, manifest: dict[str, Any]) -> Accuracy | None:
    """The highest accuracy of eval.json's results, or of the bundle's metrics without one."""
    eval_file = folder / EVAL_FILE
    results = _read_json(eval_file) if eval_file.is_file() else list(manifest.get("metrics", {}).values())
    measured = [
        Accuracy(float(r["mean"]), float(r.get("ci95", 0.0)), _setting(r), str(r.get("protocol", "")))
        for r in results
        if isinstance(r, dict) and isinstance(r.get("mean"), int | float)
    ]
    return max(measured, key=lambda a: a.mean, default=None)


def _setting(result: dict[str, Any]) -> str:
    return f"{result.get('n_way', '?')}-way {result.get('k_shot', '?')}-shot"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DistilshotError(f"cannot read {path}: {error}") from None


@app.command()
def runs(
    folder: Annotated[
        Path, typer.Argument(metavar="DIR", help="Folder of run folders.", show_default=True)
    ] = Path("runs"),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List training runs: method, dataset, backbone, best accuracy with its protocol, and bundle.

    Example: distilshot runs reproduce/runs
    """
    found = list_runs(folder)
    if as_json:
        typer.echo(json.dumps([run.to_dict() for run in found]))
        return
    if not found:
        typer.echo(f"no runs in {folder}")
        return
    _print_runs(found)


def _print_runs(found: list[Run]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table()
    for column in ("run", "method", "dataset", "backbone", "best accuracy", "protocol", "bundle"):
        table.add_column(column, overflow="fold")
    for run in found:
        best = run.best
        accuracy = "not evaluated" if best is None else f"{best.mean:.2f} ± {best.ci95:.2f}% {best.setting}"
        cells = [
            run.name,
            run.method,
            run.dataset,
            run.backbone,
            accuracy,
            best.protocol if best else "",
            run.bundle or "not exported",
        ]
        table.add_row(*map(Text, cells))  # Text: folder names are never rich markup
    Console().print(table)
