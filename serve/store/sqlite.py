"""SupportStore: the ClassStore (serve/store/interface.py) in one SQLite file, in WAL mode.

Several processes may share the file: writers take turns under SQLite's lock (waiting up to
LOCK_TIMEOUT_S), every change is one `BEGIN IMMEDIATE` transaction with `synchronous = FULL`, so a process
killed at any point leaves the file as it was before or after the change, and a process notices when
another one re-embedded the store for another model.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np

from distilshot.errors import StoreError
from distilshot.serve.store import sqlite_repository as repository
from distilshot.serve.store import sqlite_schema as schema
from distilshot.serve.store.interface import ClassStore, Reembedder
from distilshot.serve.store.names import canonical_classes
from distilshot.serve.store.records import (
    ClassInfo,
    ModelMismatchError,
    Shot,
    ShotInfo,
    StoreBusyError,
    UnknownClassError,
    check_shots,
)
from distilshot.serve.store.sqlite_migration import reembed_store

LOCK_TIMEOUT_S = 10


class SupportStore(ClassStore):
    """Classes and support shots in SQLite (WAL mode). `path=None` keeps the store in memory.

    A new store needs the `fingerprint` of the model its embeddings come from; an existing store opened
    with a different fingerprint is refused unless `reembed` re-embeds its images with the new model.
    `layout` (output name -> dim, from the bundle) is what every shot's embeddings must be, even in an
    empty store; without it, the first shots set it. Without a fingerprint an existing store can be
    listed and have classes removed, but shots cannot be added. Safe to share between threads.
    """

    def __init__(
        self,
        path: str | Path | None,
        fingerprint: str | None = None,
        reembed: Reembedder | None = None,
        *,
        layout: Mapping[str, int] | None = None,
    ) -> None:
        self.path = None if path is None else Path(path)
        self._where = "in-memory store" if self.path is None else f"store {self.path}"
        self._label = str(self.path)  # how messages name the file itself
        self._lock = threading.RLock()
        self._generation = 0  # bumped on each of our commits; PRAGMA data_version covers other connections
        self._cache: tuple[tuple[int, int], tuple[list[str], dict[str, np.ndarray]]] | None = None
        self._conn = self._connect(fingerprint)
        self._model_checked = fingerprint is not None  # only then may embeddings be added
        self.layout = None if layout is None else dict(layout)
        try:
            self.fingerprint = self._open_for(fingerprint, reembed)
            self._check_layout()
        except BaseException:
            self._conn.close()
            raise

    # -- opening ------------------------------------------------------------------------------------

    def _connect(self, fingerprint: str | None) -> sqlite3.Connection:
        new = (
            self.path is None
            or not self.path.exists()
            or (self.path.is_file() and self.path.stat().st_size == 0)
        )
        if new and fingerprint is None:
            where = "" if self.path is None else f" at {self.path}"
            raise StoreError(f"there is no support store{where}; `register` with a bundle creates one")
        if self.path is not None:
            if self.path.exists() and not self.path.is_file():
                raise StoreError(f"{self.path} is not a file, so it is not a distilshot support store")
            if new and not self.path.parent.is_dir():
                raise StoreError(f"cannot create {self._where}: folder {self.path.parent} does not exist")
            if not new:
                schema.check_header(self.path, self._label)
        try:
            conn = sqlite3.connect(
                ":memory:" if self.path is None else self.path,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,  # guarded by self._lock
                timeout=LOCK_TIMEOUT_S,
            )
        except sqlite3.Error as error:
            raise StoreError(f"cannot open {self._where}: {error}") from None
        try:
            # Read-only checks first: a foreign SQLite file must not be switched to WAL or altered.
            if not new:
                schema.check_identity(conn, self._label, self._where)
            conn.execute("PRAGMA foreign_keys = ON")
            if self.path is not None:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = FULL")  # an acknowledged change survives power loss
            if new:
                schema.create(conn, str(fingerprint), self._label, self._where)
        except sqlite3.Error as error:
            conn.close()
            raise StoreError(f"{self._where} cannot be used: {error}") from None
        except BaseException:
            conn.close()
            raise
        return conn

    def _stored_fingerprint(self, conn: sqlite3.Connection) -> str:
        stored = schema.read_fingerprint(conn)
        if stored is None:
            raise StoreError(f"{self._where} has no model fingerprint; it is damaged")
        return str(stored)

    def _open_for(self, fingerprint: str | None, reembed: Reembedder | None) -> str:
        """The model fingerprint the store holds once opened for `fingerprint` (re-embedded if need be)."""
        stored = self._stored_fingerprint(self._conn)
        if fingerprint is None or stored == fingerprint:
            return stored
        if reembed is None:
            shots = self._conn.execute("SELECT COUNT(*) FROM shots").fetchone()[0]
            raise ModelMismatchError(
                f"{self._where} holds embeddings of model {stored[:12]}…, but this bundle is model "
                f"{fingerprint[:12]}…; embeddings of two models are never mixed. Re-embed its {shots} "
                "support images with this bundle (CLI: --reembed; Python: reembed=True), after which the "
                "store belongs to this bundle, or use another store"
            )
        with self._transaction(check_model=False) as conn:  # reembed_store checks the model itself
            reembed_store(conn, stored, fingerprint, reembed, self._where)
        return fingerprint

    def _check_layout(self) -> None:
        """A store whose prototypes do not have the bundle's outputs and dims cannot answer; say so now."""
        if self.layout is None:
            return
        with self._lock:
            stored = repository.stored_layout(self._conn)
        if stored and stored != self.layout:
            raise StoreError(
                f"{self._where} holds embeddings {stored}, but this bundle makes {self.layout}: the store is "
                "damaged; remove its classes (`distilshot remove`) or use another store"
            )

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- transactions -------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self, check_model: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction, after checking (`check_model`) that no other process re-embedded the
        store since we opened it."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    if check_model:
                        self._check_same_model(self._conn)
                    yield self._conn
                    self._conn.execute("COMMIT")
                finally:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
            except sqlite3.OperationalError as error:
                if "locked" in str(error) or "busy" in str(error):
                    raise StoreBusyError(
                        f"{self._where} stayed locked by another writer for {LOCK_TIMEOUT_S} s; "
                        "nothing was changed; retry"
                    ) from None
                raise StoreError(f"{self._where}: {error}; nothing was changed") from None
            except sqlite3.Error as error:
                raise StoreError(f"{self._where}: {error}; nothing was changed") from None
            self._generation += 1

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: several SELECTs see one state even while other processes commit."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            finally:
                self._conn.execute("COMMIT")

    def _check_same_model(self, conn: sqlite3.Connection) -> None:
        """Another process may have re-embedded the store for another model since we opened it."""
        stored = self._stored_fingerprint(conn)
        if stored != self.fingerprint:
            raise ModelMismatchError(
                f"{self._where} was re-embedded for model {stored[:12]}… by another process; this "
                f"process serves model {self.fingerprint[:12]}… and stops using the store: reopen it"
            )

    def _check_shots(self, conn: sqlite3.Connection, shots: Sequence[Shot]) -> None:
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
        with self._lock:
            repository.refuse_existing(self._conn, list(checked))

    def check_existing(self, name: str) -> None:
        with self._lock:
            repository.class_id(self._conn, name, self._where)

    def register_many(self, classes: Mapping[str, Sequence[Shot]]) -> list[ClassInfo]:
        if not classes:
            raise StoreError("no classes to register")
        classes = canonical_classes(classes)
        for name, shots in classes.items():
            if not shots:
                raise StoreError(f"class {name!r} needs at least one support image")
        now = schema.now()
        with self._transaction() as conn:
            self._check_shots(conn, [shot for shots in classes.values() for shot in shots])
            repository.refuse_existing(conn, list(classes))
            for name, shots in classes.items():
                repository.insert_class(conn, name, shots, now)
        return [ClassInfo(name, len(shots), now) for name, shots in classes.items()]

    def add_shots(self, name: str, shots: Sequence[Shot]) -> ClassInfo:
        if not shots:
            raise StoreError(f"no support images to add to class {name!r}")
        with self._transaction() as conn:
            class_id = repository.class_id(conn, name, self._where)
            self._check_shots(conn, shots)
            repository.insert_shots(conn, class_id, shots, schema.now())
            return repository.class_info(conn, class_id)

    def remove(self, name: str) -> None:
        with self._transaction() as conn:
            repository.delete_class(conn, repository.class_id(conn, name, self._where))

    def remove_shot(self, name: str, shot_id: int) -> ClassInfo:
        with self._transaction() as conn:
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
        with self._lock:
            return repository.classes(self._conn)

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

    def prototypes(self) -> tuple[list[str], dict[str, np.ndarray]]:
        """Cached until this or another connection changes the store."""
        with self._lock:
            data_version = self._conn.execute("PRAGMA data_version").fetchone()[0]
            key = (self._generation, data_version)
            if self._cache is None or self._cache[0] != key:
                with self._snapshot() as conn:
                    if self._cache is not None and self._cache[0][1] != data_version and self._model_checked:
                        self._check_same_model(conn)  # another process committed: maybe a re-embedding
                    self._cache = (key, repository.prototypes(conn, self._where))
            return self._cache[1]

    # -- portable copies ----------------------------------------------------------------------------

    def export_to(self, destination: str | Path) -> Path:
        """A copy by VACUUM INTO: one SQLite file, no WAL."""
        destination = Path(destination)
        if not destination.parent.is_dir():
            raise StoreError(f"cannot export to {destination}: folder {destination.parent} does not exist")
        if destination.exists() and (self.path is None or destination.resolve() == self.path.resolve()):
            raise StoreError(f"cannot export to {destination}: it is the store itself")
        fd, tmp = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".tmp")
        os.close(fd)
        os.unlink(tmp)  # VACUUM INTO wants to create the file itself
        try:
            with self._lock:
                self._conn.execute("VACUUM INTO ?", (tmp,))
            os.replace(tmp, destination)
        except sqlite3.Error as error:
            raise StoreError(f"cannot export {self._where} to {destination}: {error}") from None
        finally:
            Path(tmp).unlink(missing_ok=True)
        return destination
