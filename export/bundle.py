"""Writing a bundle: the exported graph(s) plus manifest.json with preprocessing, head, metrics and the
sha256 of every file. Everything is written into a staging folder beside the destination, which is
renamed into place once complete (`staged_folder`), so a bundle is either complete or absent."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from distilshot.core.files import sha256_file
from distilshot.core.manifest import Manifest, Preprocessing
from distilshot.errors import DistilshotError
from distilshot.export.onnx_graph import export_embedder
from distilshot.train.checkpoint import ModelSpec
from distilshot.train.methods import Method

EMBEDDER_FILE = "embedder.onnx"


def preprocessing_of(spec: ModelSpec) -> Preprocessing:
    return Preprocessing(
        height=spec.image_size, width=spec.image_size, channels=spec.channels, mean=spec.mean, std=spec.std
    )


@contextmanager
def staged_folder(out_dir: Path, overwrite: bool = False) -> Iterator[Path]:
    """A fresh folder beside `out_dir` to assemble a bundle in (it may be opened as a bundle once its
    manifest is saved); renamed to `out_dir` when the block ends, removed if it raises."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise DistilshotError(f"{out_dir} already exists; choose another --out or pass --overwrite")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    staging.chmod(0o755)  # mkdtemp makes it private; a bundle is meant to be shared
    try:
        yield staging
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def stage_embedder(
    model: Method,
    spec: ModelSpec,
    folder: Path,
    metrics: dict[str, dict[str, Any]] | None = None,
    training: dict[str, Any] | None = None,
) -> Manifest:
    """Exports `model`'s embedder into the staging folder `folder` and saves the manifest describing it."""
    graph = export_embedder(model, spec, folder / EMBEDDER_FILE)
    manifest = Manifest(
        name=f"{spec.method}-{spec.backbone}-{spec.dataset}",
        method=spec.method,
        backbone=spec.backbone,
        dataset=spec.dataset,
        preprocessing=preprocessing_of(spec),
        graphs={"embedder": graph},
        head=model.head(),
        metrics=metrics or {},
        training=training or {},
        files={EMBEDDER_FILE: sha256_file(folder / EMBEDDER_FILE)},
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    manifest.save(folder)
    return manifest


def write_bundle(model: Method, spec: ModelSpec, out_dir: Path) -> tuple[Path, Manifest]:
    """Exports `model` into a new bundle folder `out_dir` (embedder and head only, no evaluation results)
    and returns it with its manifest: what benchmarks and tests that need a bundle of a model use."""
    with staged_folder(out_dir) as staging:
        manifest = stage_embedder(model, spec, staging)
    return Path(out_dir), manifest
