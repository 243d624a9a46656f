"""The benchmark class splits shipped with the package in `splits/` (copied from their public sources)."""

from __future__ import annotations

import csv
import io
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

SPLITS: Traversable = resources.files(__package__) / "splits"


def class_list(benchmark: str, split: str) -> list[str]:
    """The non-empty lines of `splits/<benchmark>/<split>.txt`."""
    text = (SPLITS / benchmark / f"{split}.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def csv_rows(path: Traversable | Path) -> list[tuple[str, str]]:
    """(filename, label) rows of a Ravi-style `filename,label` CSV, header skipped."""
    rows = list(csv.reader(io.StringIO(path.read_text())))
    return [(row[0], row[1]) for row in rows[1:] if row]
