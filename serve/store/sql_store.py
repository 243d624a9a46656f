"""The ClassStore operations on repository.py's SQL, for every SQL backend (sqlite.py, postgres.py).

A backend supplies `_transaction` (a write transaction: writers take turns, and a failure raises
StoreError with nothing changed), `_snapshot` (a read transaction that sees one state) and `_version` (a
value that changes with every change committed by any process), and calls `_open` once connected.
Prototypes are cached per `_version`, so every process sees another's change at its next read.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace

import numpy as np

from distilshot.errors import StoreError
from distilshot.serve.store import repository
from distilshot.serve.store.interface import ClassStore, Reembedder
from distilshot.serve.store.migration import reembed_store
from distilshot.serve.store.names import canonical_classes
from distilshot.serve.store.records import (
    ClassInfo,
    ModelMismatchError,
    Shot,
    ShotInfo,
    UnknownClassError,
    check_shots,
)
from distilshot.serve.store.repository import Connection

Prototypes = tuple[list[str], dict[str, np.ndarray]]


class SqlStore(ClassStore):
    """A ClassStore in an SQL database; see the module's description for what a backend adds."""

    _where: str  # how messages name the store: "store <location>"
    layout: dict[str, int] | None

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[Connection]: ...

    @abstractmethod
    def _snapshot(self) -> AbstractContextManager[Connection]: ...

    @abstractmethod
    def _version(self, conn: Connection) -> object:
        """Inside a snapshot: equal values mean no process changed the store in between."""

    # -- opening ------------------------------------------------------------------------------------

    def _open(
        self, fingerprint: str | None, reembed: Reembedder | None, layout: Mapping[str, int] | None
    ) -> None:
        """Checks the connected store against the caller's model (re-embedding it with `reembed` if it
        holds another one) and `layout`; closes the store if it cannot be used."""
        self._cache: tuple[object, Prototypes] | None = None
        self._model_checked = fingerprint is not None  # only then may embeddings be added
        self.layout = None if layout is None else dict(layout)
        try:
            self.fingerprint = self._open_for(fingerprint, reembed)
            self._check_layout()
        except BaseException:
            self.close()
            raise

    def _stored_fingerprint(self, conn: Connection) -> str:
        stored = repository.read_fingerprint(conn)
        if stored is None:
            raise StoreError(f"{self._where} has no model fingerprint; it is damaged")
        return str(stored)

    def _open_for(self, fingerprint: str | None, reembed: Reembedder | None) -> str:
        """The model fingerprint the store holds once opened for `fingerprint` (re-embedded if need be)."""
        with self._snapshot() as conn:
            stored = self._stored_fingerprint(conn)
            if fingerprint is None or stored == fingerprint:
                return stored
            shots = repository.shot_count(conn)
        if reembed is None:
            raise ModelMismatchError(
                f"{self._where} holds embeddings of model {stored[:12]}…, but this bundle is model "
                f"{fingerprint[:12]}…; embeddings of two models are never mixed. Re-embed its {shots} "
                "support images with this bundle (`distilshot reembed --bundle B --store S`; Python: "
                "reembed=True), after which the "
                "store belongs to this bundle, or use another store"
            )
        with self._change(check_model=False) as conn:  # reembed_store checks the model itself
            reembed_store(conn, stored, fingerprint, reembed, self._where)
        return fingerprint

    def _check_layout(self) -> None:
        """A store whose prototypes do not have the bundle's outputs and dims cannot answer; say so now."""
        if self.layout is None:
            return
        with self._snapshot() as conn:
            stored = repository.stored_layout(conn)
        if stored and stored != self.layout:
            raise StoreError(
                f"{self._where} holds embeddings {stored}, but this bundle makes {self.layout}: the store is "
                "damaged; remove its classes (`distilshot remove`) or use another store"
            )

    # -- checks -------------------------------------------------------------------------------------

    @contextmanager
    def _change(self, check_model: bool = True) -> Iterator[Connection]:
        """A write transaction, after checking (`check_model`) that no other process re-embedded the
        store since we opened it."""
        with self._transaction() as conn:
            if check_model:
                self._check_same_model(conn)
            yield conn

    def _check_same_model(self, conn: Connection) -> None:
        """Another process may have re-embedded the store for another model since we opened it."""
        stored = self._stored_fingerprint(conn)
        if stored != self.fingerprint:
            raise ModelMismatchError(
                f"{self._where} was re-embedded for model {stored[:12]}… by another process; this "
                f"process serves model {self.fingerprint[:12]}… and stops using the store: reopen it"
            )

    def _check_shots(self, conn: Connection, shots: Sequence[Shot]) -> None:
        """All shots must carry the same outputs and dims as each other and as the stored prototypes."""
        if not self._model_checked:
            raise StoreError(f"{self._where} was opened without a bundle; open it with one to add images")
        if self.layout:
            check_shots(shots, self.layout, "this bundle makes")
        else:
            check_shots(shots, repository.stored_layout(conn), "this store holds")

    # -- changes ------------------------------------------------------------------------------------

    def check_new(self, names: Sequence[str]) -> None:
        checked = canonical_classes(dict.fromkeys(names))
        with self._snapshot() as conn:
            repository.refuse_existing(conn, list(checked))

    def check_existing(self, name: str) -> None:
        with self._snapshot() as conn:
            repository.class_id(conn, name, self._where)

    def register_many(self, classes: Mapping[str, Sequence[Shot]]) -> list[ClassInfo]:
        if not classes:
            raise StoreError("no classes to register")
        classes = canonical_classes(classes)
        for name, shots in classes.items():
            if not shots:
                raise StoreError(f"class {name!r} needs at least one support image")
        now = repository.now()
        with self._change() as conn:
            self._check_shots(conn, [shot for shots in classes.values() for shot in shots])
            repository.refuse_existing(conn, list(classes))
            for name, shots in classes.items():
                repository.insert_class(conn, name, shots, now)
        return [ClassInfo(name, len(shots), now) for name, shots in classes.items()]

    def add_shots(self, name: str, shots: Sequence[Shot]) -> ClassInfo:
        if not shots:
            raise StoreError(f"no support images to add to class {name!r}")
        with self._change() as conn:
            class_id = repository.class_id(conn, name, self._where)
            self._check_shots(conn, shots)
            repository.insert_shots(conn, class_id, shots, repository.now())
            return repository.class_info(conn, class_id)

    def remove(self, name: str) -> None:
        with self._change() as conn:
            repository.delete_class(conn, repository.class_id(conn, name, self._where))

    def remove_shot(self, name: str, shot_id: int) -> ClassInfo:
        with self._change() as conn:
            class_id = repository.class_id(conn, name, self._where)
            info = repository.class_info(conn, class_id)
            if not repository.has_shot(conn, class_id, shot_id):
                raise UnknownClassError(f"class {name!r} has no shot {shot_id}")
            if info.shots == 1:
                raise StoreError(
                    f"shot {shot_id} is the only support image of class {name!r}; remove the class instead"
                )
            repository.delete_shot(conn, class_id, shot_id)
        return replace(info, shots=info.shots - 1)

    # -- reading ------------------------------------------------------------------------------------

    def classes(self) -> list[ClassInfo]:
        with self._snapshot() as conn:
            return repository.classes(conn)

    def shots(self, name: str) -> list[ShotInfo]:
        with self._snapshot() as conn:
            return repository.shots(conn, repository.class_id(conn, name, self._where))

    def thumbnail(self, name: str, shot_id: int) -> bytes:
        with self._snapshot() as conn:
            png = repository.thumbnail(conn, repository.class_id(conn, name, self._where), shot_id)
        if png is None:
            raise UnknownClassError(f"class {name!r} has no shot {shot_id}")
        return png

    def shot_embeddings(self, name: str) -> tuple[list[int], dict[str, np.ndarray]]:
        with self._snapshot() as conn:
            return repository.shot_embeddings(conn, repository.class_id(conn, name, self._where))

    def prototypes(self) -> Prototypes:
        """Cached until this or another process changes the store."""
        with self._snapshot() as conn:
            version = self._version(conn)  # read first: a change after it only costs one more reload
            cached = self._cache
            if cached is None or cached[0] != version:
                if self._model_checked:
                    self._check_same_model(conn)  # the change may have been another's re-embedding
                cached = (version, repository.prototypes(conn, self._where))
                self._cache = cached
            return cached[1]
