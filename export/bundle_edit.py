"""Adding graphs and files to an existing bundle without ever showing a reader half a bundle.

New files are written into a staging folder inside the bundle, then moved in under names that no file of
the current manifest uses (a "-2", "-3", ... suffix on the first path component when they would), then
the manifest is replaced atomically: that is the commit point. Files the new manifest no longer lists
are deleted last. A reader sees the old bundle or the new one; an interrupted edit leaves the old one
(plus at most some unlisted files, removed by the next edit)."""

from __future__ import annotations

import dataclasses
import fcntl
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from distilshot.core.files import sha256_file
from distilshot.core.manifest import (
    MANIFEST_FILE,
    FixedClassifier,
    Generators,
    Graph,
    Manifest,
    load_manifest,
)
from distilshot.errors import DistilshotError

STAGING_PREFIX = ".staging-"
LOCK_FILE = ".edit.lock"


class BundleEdit:
    """with BundleEdit(bundle) as edit: write files under edit.staging, then edit.commit(...)."""

    def __init__(self, bundle_dir: Path | str) -> None:
        self.dir = Path(bundle_dir)
        load_manifest(self.dir, verify=False)  # a clear error if this is not a bundle
        # one edit at a time: a second export waits, then sees the first one's manifest
        self._lock = open(self.dir / LOCK_FILE, "a")  # noqa: SIM115 (held until __exit__)
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self.manifest = load_manifest(self.dir)  # verifies every file against its sha256
        for leftover in self.dir.glob(f"{STAGING_PREFIX}*"):
            shutil.rmtree(leftover, ignore_errors=True)  # from an interrupted edit
        self.staging = Path(tempfile.mkdtemp(dir=self.dir, prefix=STAGING_PREFIX))

    def __enter__(self) -> BundleEdit:
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
        self._lock.close()  # releases the lock

    def preview(self, graphs: dict[str, Graph]) -> Manifest:
        """The manifest with `graphs` (file names as under `staging`) added, addressable from the bundle
        folder, for opening engines on staged graphs before committing them. Never saved."""
        files = dict(self.manifest.files)
        moved = {}
        for role, graph in graphs.items():
            names = {n: f"{self.staging.name}/{n}" for n in (graph.file, graph.weights) if n}
            for path in names.values():
                files[path] = sha256_file(self.dir / path)
            moved[role] = dataclasses.replace(
                graph, file=names[graph.file], weights=None if graph.weights is None else names[graph.weights]
            )
        return dataclasses.replace(self.manifest, graphs={**self.manifest.graphs, **moved}, files=files)

    def commit(
        self,
        graphs: dict[str, Graph] | None = None,
        metrics: dict[str, dict[str, Any]] | None = None,
        remove: Iterable[str] = (),
        generators: Generators | None = None,
        classifier: FixedClassifier | None = None,
    ) -> Manifest:
        """Moves every staged file into the bundle, adds (or replaces) `graphs`, `metrics`, the feature
        `generators` and the fixed `classifier`, drops the files in `remove`, and writes the new manifest.
        File names in `graphs`, `generators` and `classifier` are those under `staging`."""
        staged = sorted(
            p.relative_to(self.staging).as_posix() for p in self.staging.rglob("*") if p.is_file()
        )
        if not staged and not graphs and not metrics and generators is None and classifier is None:
            raise DistilshotError("nothing to add to the bundle")
        rename = self._fresh_names(staged)
        graphs = {
            role: dataclasses.replace(
                graph,
                file=rename[graph.file],
                weights=None if graph.weights is None else rename[graph.weights],
            )
            for role, graph in (graphs or {}).items()
        }
        old = self.manifest
        files = dict(old.files)
        for name in staged:
            target = self.dir / rename[name]
            target.parent.mkdir(parents=True, exist_ok=True)
            (self.staging / name).replace(target)
            files[rename[name]] = sha256_file(target)
        kept_graphs = {r: g for r, g in old.graphs.items() if r not in graphs}
        referenced = {f for g in [*kept_graphs.values(), *graphs.values()] for f in (g.file, g.weights) if f}
        replaced = {
            f for r in graphs if r in old.graphs for f in (old.graphs[r].file, old.graphs[r].weights) if f
        }
        extras: dict[str, Any] = {}
        if generators is not None:
            extras["generators"] = dataclasses.replace(
                generators, files=tuple(rename[f] for f in generators.files)
            )
            remove = [*remove, *(old.generators.files if old.generators else ())]
        if classifier is not None:
            extras["classifier"] = dataclasses.replace(classifier, file=rename[classifier.file])
            remove = [*remove, *([old.classifier.file] if old.classifier else [])]
        files = {k: v for k, v in files.items() if k not in (replaced | set(remove)) - referenced}
        new = dataclasses.replace(
            old,
            graphs={**kept_graphs, **graphs},
            files=files,
            metrics={**old.metrics, **(metrics or {})},
            **extras,
        )
        new.save(self.dir)  # validates, then the atomic rename that publishes the edit
        self.manifest = new
        for name in set(old.files) - set(files):
            (self.dir / name).unlink(missing_ok=True)
            _remove_empty_parents(self.dir, PurePosixPath(name))
        return new

    def _fresh_names(self, staged: list[str]) -> dict[str, str]:
        """Final names: as staged unless one is taken by a current file (or, for a file in a folder, its
        top folder is); then all get the same suffix, so files that belong together keep matching names."""
        taken = set(self.manifest.files) | {MANIFEST_FILE}
        taken_roots = {PurePosixPath(name).parts[0] for name in taken}

        def collides(name: str) -> bool:
            parts = PurePosixPath(name).parts
            return name in taken or (len(parts) > 1 and parts[0] in taken_roots)

        for attempt in range(1, 1000):
            rename = {name: _suffixed(name, attempt) for name in staged}
            if not any(collides(name) for name in rename.values()):
                return rename
        raise DistilshotError(f"cannot find free file names in {self.dir}")


def _suffixed(name: str, attempt: int) -> str:
    if attempt == 1:
        return name
    first, *rest = PurePosixPath(name).parts
    stem, dot, ext = first.partition(".") if not rest else (first, "", "")
    return str(PurePosixPath(f"{stem}-{attempt}{dot}{ext}", *rest))


def _remove_empty_parents(root: Path, name: PurePosixPath) -> None:
    for parent in name.parents:
        if parent == PurePosixPath("."):
            return
        folder = root / parent
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
