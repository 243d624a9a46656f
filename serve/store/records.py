"""What a store holds and hands back, the rules a shot must meet before any backend stores it, and the
store's errors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from distilshot.errors import StoreError

MAX_SOURCE_LENGTH = 255  # a shot's source: a file name or a caller's display name


@dataclass(frozen=True)
class ClassInfo:
    name: str
    shots: int
    created: str


@dataclass(frozen=True)
class Shot:
    """One support image ready to store: its embeddings (output name -> [dim] float32) and a PNG thumbnail."""

    source: str
    embeddings: Mapping[str, np.ndarray]
    thumbnail: bytes


@dataclass(frozen=True)
class ShotInfo:
    id: int
    source: str
    created: str


class UnknownClassError(StoreError):
    """The named class (or shot) is not in the store."""


class DuplicateClassError(StoreError):
    """A class of that name is already registered."""


class ModelMismatchError(StoreError):
    """The store's embeddings come from another model than the caller's."""


class StoreBusyError(StoreError):
    """Another writer held the store for longer than the lock timeout; retrying may succeed."""


def check_shots(shots: Sequence[Shot], layout: Mapping[str, int], holds: str) -> None:
    """Raises StoreError unless every shot has a short source and one finite 1-d embedding per output,
    all of `layout` (output -> dim; when empty, the first shot's). `holds` says whose layout it is in the
    message ("this bundle makes", "this store holds")."""
    expected = dict(layout)
    for shot in shots:
        if not isinstance(shot.source, str) or len(shot.source) > MAX_SOURCE_LENGTH:
            raise StoreError(
                f"shot source {str(shot.source)[:40]!r}… is {len(shot.source)} characters; the limit is "
                f"{MAX_SOURCE_LENGTH}"
            )
        shape = {k: np.shape(v) for k, v in shot.embeddings.items()}
        if not shape or any(len(s) != 1 for s in shape.values()):
            raise StoreError(f"shot {shot.source!r} needs one 1-d embedding per output, got {shape}")
        dims = {k: s[0] for k, s in shape.items()}
        if not expected:
            expected = dims
        if dims != expected:
            raise StoreError(f"shot {shot.source!r} has embeddings {dims}; {holds} {expected}")
        if not all(np.isfinite(v).all() for v in shot.embeddings.values()):
            raise StoreError(f"shot {shot.source!r} has NaN or infinite embedding values")
