"""Decoded images cached as .npz under `<cache>/arrays/`, so each source is decoded only once.

An entry is keyed by a readable name (source, size, channels) plus a digest of the source's fingerprint
and the decode rule version; a changed source or rule gets a new digest, and the stale entry is removed.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from distilshot.train.data.decode import DECODE_VERSION
from distilshot.train.data.imageset import ImageSet
from distilshot.train.data.root import cache_dir

_FORMAT = 1  # bump when the .npz layout changes


def file_fingerprint(classes: Iterable[tuple[str, Iterable[Path]]]) -> str:
    """A digest of class names with their files' paths, sizes and modification times: cheap to compute
    on every load, and it changes when a file is added, removed, replaced or touched."""
    digest = hashlib.sha256()
    for name, files in classes:
        for file in files:
            stat = file.stat()
            digest.update(f"{name}\t{file}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def cached(key: str, fingerprint: str, build: Callable[[], ImageSet]) -> ImageSet:
    """The ImageSet cached under `key` for this `fingerprint`, or `build()`'s result, which is then cached."""
    key = re.sub(r"[^A-Za-z0-9._-]+", "_", key)
    digest = hashlib.sha256(f"{_FORMAT}:{DECODE_VERSION}:{fingerprint}".encode()).hexdigest()[:16]
    folder = cache_dir() / "arrays"
    path = folder / f"{key}-{digest}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as data:
                return ImageSet(
                    str(data["name"]), data["images"], data["labels"], tuple(map(str, data["class_names"]))
                )
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass  # unreadable entry: rebuild and overwrite it
    images = build()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(
                    f,
                    name=np.str_(images.name),
                    images=images.images,
                    labels=images.labels,
                    class_names=np.array(images.class_names, dtype=str),
                )
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        for stale in folder.glob(f"{key}-{'[0-9a-f]' * 16}.npz"):
            if stale != path:
                stale.unlink(missing_ok=True)
    except OSError as error:
        warnings.warn(f"could not cache decoded images in {folder}: {error}", stacklevel=2)
    return images
