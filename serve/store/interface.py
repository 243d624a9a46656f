"""What the classifier, the HTTP API and the CLI ask of a support store, whatever holds it.

A store holds the embeddings of exactly one model (its `fingerprint`) and never mixes two: a backend
refuses to open with another model's fingerprint unless it re-embeds every stored support image with the
new model. Every change is one transaction, and every refusal raises StoreError before anything is
written, so a refused call leaves the store as it was. SupportStore (serve/store/sqlite.py) is the SQLite
backend, PostgresStore (serve/store/postgres.py) the one several serving replicas share; open_store
(serve/store/location.py) picks one by location. Store files from `export_to` are read back by
serve/store/portable.py for `register_many`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Self

import numpy as np

from distilshot.serve.store.records import ClassInfo, Shot, ShotInfo

# Re-embeds stored support images with the caller's model: (source, PNG bytes) pairs in, one [N, dim]
# float32 array per output out. Raises StoreError if it cannot do so faithfully.
Reembedder = Callable[[Sequence[tuple[str, bytes]]], dict[str, np.ndarray]]
REEMBED_CHUNK = 256  # stored images decoded and embedded at a time while re-embedding


class ClassStore(ABC):
    """Registered classes with their support shots, embeddings and per-class prototypes. Safe to share
    between threads. `path` is its file (None: in memory, or in a database server), `location` where it
    lives as messages and reports may show it (a file path or a URL without its password; None: in
    memory), `fingerprint` the model whose embeddings it holds."""

    path: Path | None
    location: str | None
    fingerprint: str

    @abstractmethod
    def check_new(self, names: Sequence[str]) -> None:
        """Raises StoreError unless every name is valid and not registered yet (registering checks again)."""

    @abstractmethod
    def check_existing(self, name: str) -> None:
        """Raises StoreError unless class `name` is registered."""

    @abstractmethod
    def register_many(self, classes: Mapping[str, Sequence[Shot]]) -> list[ClassInfo]:
        """Adds several new classes in one transaction: all of them or, on any refusal, none. Names are
        stored Unicode-normalised (NFC), as the returned infos show."""

    def register(self, name: str, shots: Sequence[Shot]) -> ClassInfo:
        """Adds a new class with its shots in one transaction."""
        return self.register_many({name: shots})[0]

    @abstractmethod
    def add_shots(self, name: str, shots: Sequence[Shot]) -> ClassInfo:
        """Adds support shots to an existing class in one transaction."""

    @abstractmethod
    def remove(self, name: str) -> None:
        """Deletes a class with its shots, embeddings and prototype."""

    @abstractmethod
    def remove_shot(self, name: str, shot_id: int) -> ClassInfo:
        """Deletes one support shot of class `name`; its last shot cannot go (remove the class instead)."""

    @abstractmethod
    def classes(self) -> list[ClassInfo]:
        """Registered classes sorted by name."""

    @abstractmethod
    def shots(self, name: str) -> list[ShotInfo]:
        """The support shots of class `name` in the order they were added."""

    @abstractmethod
    def thumbnail(self, name: str, shot_id: int) -> bytes:
        """The stored PNG of one support shot of class `name`."""

    @abstractmethod
    def shot_embeddings(self, name: str) -> tuple[list[int], dict[str, np.ndarray]]:
        """The ids of class `name`'s shots and, per output, their embeddings float32 [S, dim]."""

    @abstractmethod
    def prototypes(self) -> tuple[list[str], dict[str, np.ndarray]]:
        """Class names (sorted) and, per output, their prototypes as read-only float32 [K, dim]. The same
        objects come back until the store changes, so callers may prepare them once per change."""

    @abstractmethod
    def export_to(self, destination: str | Path) -> Path:
        """Writes a self-contained store file (serve/store/portable.py reads it) to `destination`,
        atomically: the file appears complete or not at all."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
