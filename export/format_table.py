"""The table of deployment formats (`distilshot export --to`), one frozen entry per format, registered
beside its implementation with `@export_format(...)` on its check function. export/formats.py imports
the implementations (which fills the table) and runs them.

A format's `build` writes its files under the edit's staging folder; its `check` runs them (on the
evaluation images where that applies) and raises DistilshotError to refuse them, leaving the bundle
unchanged; only then does the edit commit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from distilshot.core.manifest import Graph, Manifest
from distilshot.export.bundle_edit import BundleEdit
from distilshot.export.engine_parity import Comparison
from distilshot.train.data.imageset import ImageSet


@dataclass(frozen=True)
class ExportOptions:
    episodes: int = 1000  # evaluation episodes of each check
    calibration_images: int = 300  # training images that calibrate int8
    max_drop: float = 1.0  # 5-way 1-shot accuracy points int8 may lose


@dataclass
class Staged:
    """What a format's build wrote under the edit's staging folder."""

    graphs: dict[str, Graph] = field(default_factory=dict)  # file names as under staging
    remove: list[str] = field(default_factory=list)  # bundle files the commit drops
    notes: list[str] = field(default_factory=list)


@dataclass
class Checked:
    comparisons: list[Comparison] = field(default_factory=list)  # also recorded in the manifest's metrics
    offline: list[dict[str, Any]] = field(default_factory=list)  # checks without an engine
    notes: list[str] = field(default_factory=list)


@dataclass
class FormatReport:
    format: str
    files: list[str] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)  # offline checks, then Comparison.to_dict()
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "files": self.files, "checks": self.checks, "notes": self.notes}


@dataclass(frozen=True)
class FormatJob:
    """What a format's build and check work with."""

    edit: BundleEdit
    options: ExportOptions
    evaluation: Callable[[], ImageSet]  # the evaluation split, loaded on the first call


Build = Callable[[FormatJob], Staged]
Check = Callable[[FormatJob, Manifest, Staged], Checked]  # the Manifest: with the staged graphs


@dataclass(frozen=True)
class ExportFormat:
    name: str  # as `export --to` takes it
    adds: str  # the graph roles or folder it adds to the bundle
    precisions: tuple[str, ...]  # of what it adds
    extra: str  # the pip extra it needs: pip install distilshot[<extra>]
    backends: tuple[str, ...]  # serve backends that run what it adds (serve/engines/registry.py names)
    build: Build
    check: Check

    def describe(self) -> str:
        runs = f" on {', '.join(self.backends)}" if self.backends else ""
        return f"{self.name}: {self.adds} ({'/'.join(self.precisions)}, distilshot[{self.extra}]){runs}"


# name -> format, in registration order, which export/formats.py makes the running order
FORMATS: dict[str, ExportFormat] = {}


def export_format(
    name: str, *, adds: str, precisions: tuple[str, ...], extra: str, backends: tuple[str, ...], build: Build
) -> Callable[[Check], Check]:
    """Registers the decorated check function, with `build` and the rest, as format `name`."""

    def register(check: Check) -> Check:
        FORMATS[name] = ExportFormat(name, adds, precisions, extra, backends, build, check)
        return check

    return register
