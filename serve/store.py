"""The support store: registered classes, their support shots and embeddings, in one SQLite file.

Every change is one transaction and every refusal raises StoreError before anything is written, so a
refused call leaves the file as it was. A store holds embeddings of exactly one model (its fingerprint);
opening it with another model's bundle is refused rather than mixing two embedding spaces.
"""

from __future__ import annotations

import sqlite3
import threading
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from distilshot.errors import StoreError
from distilshot.serve.head import class_mean

APPLICATION_ID = 0x44534854  # "DSHT" in the SQLite header marks a distilshot support store
SCHEMA_VERSION = 1  # PRAGMA user_version
MAX_NAME_LENGTH = 100
_SQLITE_MAGIC = b"SQLite format 3\x00"

_SCHEMA = (
    "CREATE TABLE metadata (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE classes (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created TEXT NOT NULL)",
    # thumbnail: PNG, longest side <= 256, for re-embedding with another model and for galleries
    """CREATE TABLE shots (
        id INTEGER PRIMARY KEY,
        class_id INTEGER NOT NULL REFERENCES classes(id) ON DELETE CASCADE,
        source TEXT NOT NULL,
        thumbnail BLOB NOT NULL,
        created TEXT NOT NULL)""",
    "CREATE INDEX shots_by_class ON shots(class_id)",
    # vector: `dim` little-endian float32 values
    """CREATE TABLE embeddings (
        shot_id INTEGER NOT NULL REFERENCES shots(id) ON DELETE CASCADE,
        output TEXT NOT NULL,
        dim INTEGER NOT NULL,
        vector BLOB NOT NULL,
        PRIMARY KEY (shot_id, output))""",
    # Per-class means of `embeddings`, rewritten in the transaction that changes a class's shots, so
    # loading all prototypes reads one row per class and output instead of every shot.
    """CREATE TABLE prototypes (
        class_id INTEGER NOT NULL REFERENCES classes(id) ON DELETE CASCADE,
        output TEXT NOT NULL,
        dim INTEGER NOT NULL,
        vector BLOB NOT NULL,
        PRIMARY KEY (class_id, output))""",
)


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


def check_class_name(name: str) -> None:
    """Raises StoreError unless `name` is usable as a class name (and as a folder or file name later)."""
    if not isinstance(name, str) or not name.strip():
        raise StoreError("a class name must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise StoreError(
            f"class name {name[:20]!r}… is {len(name)} characters; the limit is {MAX_NAME_LENGTH}"
        )
    if "/" in name or "\\" in name:
        raise StoreError(f"class name {name!r} must not contain a path separator")
    if any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in name):
        raise StoreError(f"class name {name!r} must not contain control characters or line breaks")
    if name != name.strip():
        raise StoreError(f"class name {name!r} must not start or end with whitespace")
    if name in (".", ".."):
        raise StoreError(f"class name {name!r} is not allowed")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class SupportStore:
    """Classes and support shots in SQLite (WAL mode). `path=None` keeps the store in memory.

    A new store needs the `fingerprint` of the model its embeddings come from; an existing store opened
    with a different fingerprint is refused. Without a fingerprint an existing store can be listed and
    have classes removed, but shots cannot be added. Safe to share between threads.
    """

    def __init__(self, path: str | Path | None, fingerprint: str | None = None) -> None:
        self.path = None if path is None else Path(path)
        self._where = "in-memory store" if self.path is None else f"store {self.path}"
        self._lock = threading.RLock()
        self._generation = 0  # bumped on each of our commits; PRAGMA data_version covers other connections
        self._cache: tuple[tuple[int, int], tuple[list[str], dict[str, np.ndarray]]] | None = None
        self._conn = self._connect(fingerprint)
        self._model_checked = fingerprint is not None  # only then may embeddings be added
        try:
            self.fingerprint = self._check_fingerprint(fingerprint)
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
                with open(self.path, "rb") as f:
                    if f.read(len(_SQLITE_MAGIC)) != _SQLITE_MAGIC:
                        raise StoreError(f"{self.path} is not a distilshot support store")
        try:
            conn = sqlite3.connect(
                ":memory:" if self.path is None else self.path,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,  # guarded by self._lock
                timeout=10,
            )
        except sqlite3.Error as error:
            raise StoreError(f"cannot open {self._where}: {error}") from None
        try:
            # Read-only checks first: a foreign SQLite file must not be switched to WAL or altered.
            if not new:
                self._check_identity(conn)
            conn.execute("PRAGMA foreign_keys = ON")
            if self.path is not None:
                conn.execute("PRAGMA journal_mode = WAL")
            if new:
                self._create(conn, str(fingerprint))
        except sqlite3.Error as error:
            conn.close()
            raise StoreError(f"{self._where} cannot be used: {error}") from None
        except BaseException:
            conn.close()
            raise
        return conn

    def _check_identity(self, conn: sqlite3.Connection) -> None:
        application_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if application_id != APPLICATION_ID:
            raise StoreError(f"{self.path} is an SQLite file but not a distilshot support store")
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self._where} has schema version {version}; this distilshot reads version "
                f"{SCHEMA_VERSION}: upgrade distilshot"
            )

    def _create(self, conn: sqlite3.Connection, fingerprint: str) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have created the store between our existence check and this lock.
            if conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID:
                conn.execute("ROLLBACK")
                self._check_identity(conn)
                return
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.executemany(
                "INSERT INTO metadata (key, value) VALUES (?, ?)",
                [("fingerprint", fingerprint), ("created", _now())],
            )
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _check_fingerprint(self, fingerprint: str | None) -> str:
        row = self._conn.execute("SELECT value FROM metadata WHERE key = 'fingerprint'").fetchone()
        if row is None:
            raise StoreError(f"{self._where} has no model fingerprint; it is damaged")
        stored = row[0]
        if fingerprint is not None and stored != fingerprint:
            raise StoreError(
                f"{self._where} holds embeddings of model {stored[:12]}…, but this bundle is model "
                f"{fingerprint[:12]}…; embeddings of two models cannot be mixed. Use another store for "
                "this bundle (a later distilshot version can re-embed the stored support images)"
            )
        return stored

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> SupportStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- changes ------------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                    self._conn.execute("COMMIT")
                finally:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
            except sqlite3.Error as error:
                raise StoreError(f"{self._where}: {error}; nothing was changed") from None
            self._generation += 1

    def check_new(self, names: Sequence[str]) -> None:
        """Raises StoreError unless every name is valid and not registered yet (`register` checks again)."""
        for name in names:
            check_class_name(name)
        with self._lock:
            self._refuse_existing(self._conn, names)

    def check_existing(self, name: str) -> None:
        """Raises StoreError unless class `name` is registered."""
        with self._lock:
            self._class_id(self._conn, name)

    def register(self, name: str, shots: Sequence[Shot]) -> ClassInfo:
        """Adds a new class with its shots in one transaction."""
        return self.register_many({name: shots})[0]

    def register_many(self, classes: Mapping[str, Sequence[Shot]]) -> list[ClassInfo]:
        """Adds several new classes in one transaction: all of them or, on any refusal, none."""
        if not classes:
            raise StoreError("no classes to register")
        for name, shots in classes.items():
            check_class_name(name)
            if not shots:
                raise StoreError(f"class {name!r} needs at least one support image")
        now = _now()
        with self._transaction() as conn:
            self._check_shots(conn, [shot for shots in classes.values() for shot in shots])
            self._refuse_existing(conn, list(classes))
            for name, shots in classes.items():
                class_id = conn.execute(
                    "INSERT INTO classes (name, created) VALUES (?, ?)", (name, now)
                ).lastrowid
                self._insert_shots(conn, class_id, shots, now)
        return [ClassInfo(name, len(shots), now) for name, shots in classes.items()]

    def add_shots(self, name: str, shots: Sequence[Shot]) -> ClassInfo:
        """Adds support shots to an existing class in one transaction."""
        if not shots:
            raise StoreError(f"no support images to add to class {name!r}")
        with self._transaction() as conn:
            class_id = self._class_id(conn, name)
            self._check_shots(conn, shots)
            self._insert_shots(conn, class_id, shots, _now())
            count, created = conn.execute(
                "SELECT COUNT(*), c.created FROM shots s JOIN classes c ON c.id = s.class_id WHERE c.id = ?",
                (class_id,),
            ).fetchone()
        return ClassInfo(name, count, created)

    def remove(self, name: str) -> None:
        """Deletes a class with its shots, embeddings and prototype."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM classes WHERE id = ?", (self._class_id(conn, name),))

    def _refuse_existing(self, conn: sqlite3.Connection, names: Sequence[str]) -> None:
        for name in names:
            if conn.execute("SELECT 1 FROM classes WHERE name = ?", (name,)).fetchone():
                raise StoreError(
                    f"class {name!r} is already registered; add images to it with add_shots "
                    "(CLI: register --add)"
                )

    def _class_id(self, conn: sqlite3.Connection, name: str) -> int:
        row = conn.execute("SELECT id FROM classes WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise StoreError(f"there is no class {name!r} in the {self._where}")
        return int(row[0])

    def _check_shots(self, conn: sqlite3.Connection, shots: Sequence[Shot]) -> None:
        """All shots must carry the same outputs and dims as each other and as the stored prototypes."""
        if not self._model_checked:
            raise StoreError(f"{self._where} was opened without a bundle; open it with one to add images")
        layout = dict(conn.execute("SELECT output, dim FROM prototypes GROUP BY output").fetchall())
        for shot in shots:
            shape = {k: np.shape(v) for k, v in shot.embeddings.items()}
            if not shape or any(len(s) != 1 for s in shape.values()):
                raise StoreError(f"shot {shot.source!r} needs one 1-d embedding per output, got {shape}")
            dims = {k: s[0] for k, s in shape.items()}
            if not layout:
                layout = dims
            if dims != layout:
                raise StoreError(f"shot {shot.source!r} has embeddings {dims}; this store holds {layout}")
            if not all(np.isfinite(v).all() for v in shot.embeddings.values()):
                raise StoreError(f"shot {shot.source!r} has NaN or infinite embedding values")

    def _insert_shots(self, conn: sqlite3.Connection, class_id: int, shots: Sequence[Shot], now: str) -> None:
        for shot in shots:
            shot_id = conn.execute(
                "INSERT INTO shots (class_id, source, thumbnail, created) VALUES (?, ?, ?, ?)",
                (class_id, shot.source, shot.thumbnail, now),
            ).lastrowid
            conn.executemany(
                "INSERT INTO embeddings (shot_id, output, dim, vector) VALUES (?, ?, ?, ?)",
                [
                    (shot_id, k, len(v), np.asarray(v, dtype="<f4").tobytes())
                    for k, v in shot.embeddings.items()
                ],
            )
        # The prototype is the mean over all of the class's shots, old and new.
        rows = conn.execute(
            "SELECT e.output, e.dim, e.vector FROM embeddings e JOIN shots s ON s.id = e.shot_id "
            "WHERE s.class_id = ? ORDER BY e.output",
            (class_id,),
        ).fetchall()
        by_output: dict[str, list[bytes]] = {}
        for output, _dim, vector in rows:
            by_output.setdefault(output, []).append(vector)
        conn.executemany(
            "INSERT OR REPLACE INTO prototypes (class_id, output, dim, vector) VALUES (?, ?, ?, ?)",
            [
                (class_id, output, mean.size, mean.astype("<f4").tobytes())
                for output, vectors in by_output.items()
                for mean in [class_mean(np.frombuffer(b"".join(vectors), "<f4").reshape(len(vectors), -1))]
            ],
        )

    # -- reading ------------------------------------------------------------------------------------

    def classes(self) -> list[ClassInfo]:
        """Registered classes sorted by name."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT c.name, COUNT(s.id), c.created FROM classes c LEFT JOIN shots s ON s.class_id = c.id "
                "GROUP BY c.id ORDER BY c.name"
            ).fetchall()
        return [ClassInfo(name, count, created) for name, count, created in rows]

    def prototypes(self) -> tuple[list[str], dict[str, np.ndarray]]:
        """Class names (sorted) and, per output, their prototypes as read-only float32 [K, dim]. Cached
        until this or another connection changes the store; the same objects come back while valid."""
        with self._lock:
            key = (self._generation, self._conn.execute("PRAGMA data_version").fetchone()[0])
            if self._cache is None or self._cache[0] != key:
                self._cache = (key, self._load_prototypes())
            return self._cache[1]

    def _load_prototypes(self) -> tuple[list[str], dict[str, np.ndarray]]:
        labels = [row[0] for row in self._conn.execute("SELECT name FROM classes ORDER BY name")]
        means: dict[str, np.ndarray] = {}
        for output, dim in self._conn.execute(
            "SELECT output, dim FROM prototypes GROUP BY output"
        ).fetchall():
            blobs = [
                row[0]
                for row in self._conn.execute(
                    "SELECT p.vector FROM classes c JOIN prototypes p ON p.class_id = c.id "
                    "WHERE p.output = ? ORDER BY c.name",
                    (output,),
                )
            ]
            if len(blobs) != len(labels):
                raise StoreError(
                    f"{self._where} is damaged: {len(labels) - len(blobs)} classes lack a prototype"
                )
            means[output] = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(labels), dim)
        return labels, means
