"""The support store: registered classes, their support shots and embeddings, in one SQLite file.

Every change is one transaction and every refusal raises StoreError before anything is written, so a
refused call leaves the file as it was. A store holds embeddings of exactly one model (its fingerprint);
opening it with another model's bundle is refused unless the caller re-embeds every stored support image
with the new model (`reembed`), which replaces all embeddings in one transaction: two embedding spaces are
never mixed. `export_to` writes a self-contained copy; serve/store_import.py reads such copies, which
may come from anyone, for `register_many`.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import threading
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import numpy as np

from distilshot.core.head import class_mean
from distilshot.errors import StoreError

APPLICATION_ID = 0x44534854  # "DSHT" in the SQLite header marks a distilshot support store
SCHEMA_VERSION = 1  # PRAGMA user_version
MAX_NAME_LENGTH = 100
MAX_SOURCE_LENGTH = 255  # a shot's source: a file name or a caller's display name
SQLITE_MAGIC = b"SQLite format 3\x00"

SCHEMA = (
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


# Re-embeds stored support images with the caller's model: (source, PNG bytes) pairs in, one [N, dim]
# float32 array per output out. Raises StoreError if it cannot do so faithfully.
Reembedder = Callable[[Sequence[tuple[str, bytes]]], dict[str, np.ndarray]]
REEMBED_CHUNK = 256  # stored images decoded and embedded at a time while re-embedding a whole store
LOCK_TIMEOUT_S = 10
T = TypeVar("T")


# Unicode categories refused in class names: control, format (invisible and bidirectional marks such as
# U+200B and U+202E), surrogate, private use, unassigned, and line and paragraph separators. With them,
# two classes could look the same, or a name could display reordered.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def canonical_name(name: str) -> str:
    """The stored form of a class name (Unicode NFC), so names that differ only in normalisation (an
    accent composed or combined) are one class. Lookups and removals apply it too."""
    return unicodedata.normalize("NFC", name)


def check_class_name(name: str) -> str:
    """Returns `name` in its stored form (NFC), or raises StoreError unless it is usable as a class
    name (and as a folder or file name later)."""
    if not isinstance(name, str):
        raise StoreError(f"a class name must be text, not {type(name).__name__}")
    if not name.strip():
        raise StoreError("a class name must not be empty")
    refused = next((ch for ch in name if unicodedata.category(ch) in _REFUSED_CATEGORIES), None)
    if refused is not None:
        raise StoreError(
            f"class name {name!r} must not contain control characters, line breaks or invisible or "
            f"direction-changing characters (U+{ord(refused):04X} at position {name.index(refused)})"
        )
    name = canonical_name(name)
    if len(name) > MAX_NAME_LENGTH:
        raise StoreError(
            f"class name {name[:20]!r}… is {len(name)} characters; the limit is {MAX_NAME_LENGTH}"
        )
    if "/" in name or "\\" in name:
        raise StoreError(f"class name {name!r} must not contain a path separator")
    if name != name.strip():
        raise StoreError(f"class name {name!r} must not start or end with whitespace")
    if name in (".", ".."):
        raise StoreError(f"class name {name!r} is not allowed")
    return name


def canonical_classes(classes: Mapping[str, T]) -> dict[str, T]:
    """`classes` keyed by checked, stored-form names; two names that are one once normalised are refused."""
    checked: dict[str, T] = {}
    given: dict[str, str] = {}
    for name, value in classes.items():
        stored = check_class_name(name)
        if stored in checked:
            raise StoreError(
                f"class names {given[stored]!r} and {name!r} are the same name once Unicode-normalised (NFC)"
            )
        checked[stored], given[stored] = value, name
    return checked


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class SupportStore:
    """Classes and support shots in SQLite (WAL mode). `path=None` keeps the store in memory.

    A new store needs the `fingerprint` of the model its embeddings come from; an existing store opened
    with a different fingerprint is refused. `layout` (output name -> dim, from the bundle) is what every
    shot's embeddings must be, even in an empty store; without it, the first shots set it. Without a
    fingerprint an existing store can be listed and have classes removed, but shots cannot be added.
    Safe to share between threads.
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
        self._lock = threading.RLock()
        self._generation = 0  # bumped on each of our commits; PRAGMA data_version covers other connections
        self._cache: tuple[tuple[int, int], tuple[list[str], dict[str, np.ndarray]]] | None = None
        self._conn = self._connect(fingerprint)
        self._model_checked = fingerprint is not None  # only then may embeddings be added
        self.layout = None if layout is None else dict(layout)
        try:
            self.fingerprint = self._check_fingerprint(fingerprint, reembed)
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
                with open(self.path, "rb") as f:
                    if f.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
                        raise StoreError(f"{self.path} is not a distilshot support store")
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
                self._check_identity(conn)
            conn.execute("PRAGMA foreign_keys = ON")
            if self.path is not None:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = FULL")  # an acknowledged change survives power loss
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
            for statement in SCHEMA:
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

    def _stored_fingerprint(self, conn: sqlite3.Connection) -> str:
        row = conn.execute("SELECT value FROM metadata WHERE key = 'fingerprint'").fetchone()
        if row is None:
            raise StoreError(f"{self._where} has no model fingerprint; it is damaged")
        return str(row[0])

    def _check_fingerprint(self, fingerprint: str | None, reembed: Reembedder | None) -> str:
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
        self._reembed(stored, fingerprint, reembed)
        return fingerprint

    def _reembed(self, stored: str, fingerprint: str, reembed: Reembedder) -> None:
        """Replaces every embedding and prototype with the new model's, and the fingerprint, in one
        transaction (other writers wait, as they must: no change may land between the two models)."""
        self.fingerprint = stored
        with self._transaction(check_model=False) as conn:
            if self._stored_fingerprint(conn) == fingerprint:
                return  # another process re-embedded it while we waited for the lock
            if self._stored_fingerprint(conn) != stored:
                raise ModelMismatchError(f"{self._where} changed model while it was being opened; retry")
            conn.execute("DELETE FROM embeddings")
            conn.execute("DELETE FROM prototypes")
            last = 0
            while True:
                rows = conn.execute(
                    "SELECT id, source, thumbnail FROM shots WHERE id > ? ORDER BY id LIMIT ?",
                    (last, REEMBED_CHUNK),
                ).fetchall()
                if not rows:
                    break
                vectors = reembed([(source, bytes(image)) for _, source, image in rows])
                self._insert_embeddings(conn, [row[0] for row in rows], vectors)
                last = rows[-1][0]
            self._update_prototypes(conn, [r[0] for r in conn.execute("SELECT id FROM classes")])
            conn.execute("UPDATE metadata SET value = ? WHERE key = 'fingerprint'", (fingerprint,))
        self.fingerprint = fingerprint

    def _check_layout(self) -> None:
        """A store whose prototypes do not have the bundle's outputs and dims cannot answer; say so now."""
        if self.layout is None:
            return
        with self._lock:
            stored = dict(self._conn.execute("SELECT output, dim FROM prototypes GROUP BY output").fetchall())
        if stored and stored != self.layout:
            raise StoreError(
                f"{self._where} holds embeddings {stored}, but this bundle makes {self.layout}: the store is "
                "damaged; remove its classes (`distilshot remove`) or use another store"
            )

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> SupportStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- changes ------------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self, check_model: bool = True) -> Iterator[sqlite3.Connection]:
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

    def _check_same_model(self, conn: sqlite3.Connection) -> None:
        """Another process may have re-embedded the store for another model since we opened it."""
        stored = self._stored_fingerprint(conn)
        if stored != self.fingerprint:
            raise ModelMismatchError(
                f"{self._where} was re-embedded for model {stored[:12]}… by another process; this "
                f"process serves model {self.fingerprint[:12]}… and stops using the store: reopen it"
            )

    def check_new(self, names: Sequence[str]) -> None:
        """Raises StoreError unless every name is valid and not registered yet (`register` checks again)."""
        checked = canonical_classes(dict.fromkeys(names))
        with self._lock:
            self._refuse_existing(self._conn, list(checked))

    def check_existing(self, name: str) -> None:
        """Raises StoreError unless class `name` is registered."""
        with self._lock:
            self._class_id(self._conn, name)

    def register(self, name: str, shots: Sequence[Shot]) -> ClassInfo:
        """Adds a new class with its shots in one transaction."""
        return self.register_many({name: shots})[0]

    def register_many(self, classes: Mapping[str, Sequence[Shot]]) -> list[ClassInfo]:
        """Adds several new classes in one transaction: all of them or, on any refusal, none. Names are
        stored Unicode-normalised (NFC), as the returned infos show."""
        if not classes:
            raise StoreError("no classes to register")
        classes = canonical_classes(classes)
        for name, shots in classes.items():
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
            stored, count, created = conn.execute(
                "SELECT c.name, COUNT(*), c.created FROM shots s JOIN classes c ON c.id = s.class_id "
                "WHERE c.id = ?",
                (class_id,),
            ).fetchone()
        return ClassInfo(stored, count, created)

    def remove(self, name: str) -> None:
        """Deletes a class with its shots, embeddings and prototype."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM classes WHERE id = ?", (self._class_id(conn, name),))

    def _refuse_existing(self, conn: sqlite3.Connection, names: Sequence[str]) -> None:
        for name in names:
            if conn.execute("SELECT 1 FROM classes WHERE name = ?", (name,)).fetchone():
                raise DuplicateClassError(
                    f"class {name!r} is already registered; add images to it with add_shots "
                    "(CLI: register --add)"
                )

    def _class_id(self, conn: sqlite3.Connection, name: str) -> int:
        # The stored form first; then the name as given, for a class stored before names were normalised.
        row = conn.execute(
            "SELECT id FROM classes WHERE name IN (?, ?) ORDER BY name = ? DESC LIMIT 1",
            (canonical_name(name), name, canonical_name(name)),
        ).fetchone()
        if row is None:
            raise UnknownClassError(f"there is no class {name!r} in the {self._where}")
        return int(row[0])

    def _check_shots(self, conn: sqlite3.Connection, shots: Sequence[Shot]) -> None:
        """All shots must carry the same outputs and dims as each other and as the stored prototypes."""
        if not self._model_checked:
            raise StoreError(f"{self._where} was opened without a bundle; open it with one to add images")
        layout = self.layout or dict(
            conn.execute("SELECT output, dim FROM prototypes GROUP BY output").fetchall()
        )
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
            if not layout:
                layout = dims
            if dims != layout:
                holds = "this bundle makes" if self.layout else "this store holds"
                raise StoreError(f"shot {shot.source!r} has embeddings {dims}; {holds} {layout}")
            if not all(np.isfinite(v).all() for v in shot.embeddings.values()):
                raise StoreError(f"shot {shot.source!r} has NaN or infinite embedding values")

    def _insert_shots(self, conn: sqlite3.Connection, class_id: int, shots: Sequence[Shot], now: str) -> None:
        ids = [
            conn.execute(
                "INSERT INTO shots (class_id, source, thumbnail, created) VALUES (?, ?, ?, ?)",
                (class_id, shot.source, shot.thumbnail, now),
            ).lastrowid
            for shot in shots
        ]
        vectors = {o: np.stack([shot.embeddings[o] for shot in shots]) for o in shots[0].embeddings}
        self._insert_embeddings(conn, ids, vectors)
        self._update_prototypes(conn, [class_id])

    def _insert_embeddings(
        self, conn: sqlite3.Connection, shot_ids: Sequence[int], vectors: Mapping[str, np.ndarray]
    ) -> None:
        for output, values in vectors.items():
            values = np.asarray(values, dtype="<f4")
            if values.ndim != 2 or len(values) != len(shot_ids) or not np.isfinite(values).all():
                raise StoreError(
                    f"embeddings for output {output!r} must be {len(shot_ids)} finite vectors, "
                    f"got shape {list(values.shape)}"
                )
            conn.executemany(
                "INSERT INTO embeddings (shot_id, output, dim, vector) VALUES (?, ?, ?, ?)",
                [(i, output, values.shape[1], v.tobytes()) for i, v in zip(shot_ids, values, strict=True)],
            )

    def _update_prototypes(self, conn: sqlite3.Connection, class_ids: Sequence[int]) -> None:
        """A prototype is the mean over all of its class's current shots."""
        for class_id in class_ids:
            rows = conn.execute(
                "SELECT e.output, e.vector FROM embeddings e JOIN shots s ON s.id = e.shot_id "
                "WHERE s.class_id = ? ORDER BY e.output, s.id",
                (class_id,),
            ).fetchall()
            by_output: dict[str, list[bytes]] = {}
            for output, vector in rows:
                by_output.setdefault(output, []).append(vector)
            conn.execute("DELETE FROM prototypes WHERE class_id = ?", (class_id,))
            for output, vectors in by_output.items():
                mean = class_mean(np.frombuffer(b"".join(vectors), "<f4").reshape(len(vectors), -1))
                conn.execute(
                    "INSERT INTO prototypes (class_id, output, dim, vector) VALUES (?, ?, ?, ?)",
                    (class_id, output, mean.size, mean.astype("<f4").tobytes()),
                )

    def remove_shot(self, name: str, shot_id: int) -> ClassInfo:
        """Deletes one support shot of class `name`; its last shot cannot go (remove the class instead)."""
        with self._transaction() as conn:
            class_id = self._class_id(conn, name)
            stored, count, created = conn.execute(
                "SELECT c.name, COUNT(*), c.created FROM shots s JOIN classes c ON c.id = s.class_id "
                "WHERE c.id = ?",
                (class_id,),
            ).fetchone()
            if not conn.execute(
                "SELECT 1 FROM shots WHERE id = ? AND class_id = ?", (shot_id, class_id)
            ).fetchone():
                raise UnknownClassError(f"class {name!r} has no shot {shot_id}")
            if count == 1:
                raise StoreError(
                    f"shot {shot_id} is the only support image of class {name!r}; remove the class instead"
                )
            conn.execute("DELETE FROM shots WHERE id = ?", (shot_id,))
            self._update_prototypes(conn, [class_id])
        return ClassInfo(stored, count - 1, created)

    # -- reading ------------------------------------------------------------------------------------

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: several SELECTs see one state even while other processes commit."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            finally:
                self._conn.execute("COMMIT")

    def classes(self) -> list[ClassInfo]:
        """Registered classes sorted by name."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT c.name, COUNT(s.id), c.created FROM classes c LEFT JOIN shots s ON s.class_id = c.id "
                "GROUP BY c.id ORDER BY c.name"
            ).fetchall()
        return [ClassInfo(name, count, created) for name, count, created in rows]

    def shots(self, name: str) -> list[ShotInfo]:
        """The support shots of class `name` in the order they were added."""
        with self._snapshot() as conn:
            class_id = self._class_id(conn, name)
            rows = conn.execute(
                "SELECT id, source, created FROM shots WHERE class_id = ? ORDER BY id", (class_id,)
            ).fetchall()
        return [ShotInfo(int(i), source, created) for i, source, created in rows]

    def thumbnail(self, name: str, shot_id: int) -> bytes:
        """The stored PNG of one support shot of class `name`."""
        with self._snapshot() as conn:
            class_id = self._class_id(conn, name)
            row = conn.execute(
                "SELECT thumbnail FROM shots WHERE id = ? AND class_id = ?", (shot_id, class_id)
            ).fetchone()
        if row is None:
            raise UnknownClassError(f"class {name!r} has no shot {shot_id}")
        return bytes(row[0])

    def shot_embeddings(self, name: str) -> tuple[list[int], dict[str, np.ndarray]]:
        """The ids of class `name`'s shots and, per output, their embeddings float32 [S, dim]."""
        with self._snapshot() as conn:
            class_id = self._class_id(conn, name)
            rows = conn.execute(
                "SELECT s.id, e.output, e.dim, e.vector FROM shots s JOIN embeddings e ON e.shot_id = s.id "
                "WHERE s.class_id = ? ORDER BY e.output, s.id",
                (class_id,),
            ).fetchall()
        ids = sorted({int(row[0]) for row in rows})
        vectors: dict[str, list[bytes]] = {}
        dims: dict[str, int] = {}
        for _, output, dim, vector in rows:
            vectors.setdefault(output, []).append(vector)
            dims[output] = dim
        return ids, {
            o: np.frombuffer(b"".join(v), "<f4").reshape(len(v), dims[o]) for o, v in vectors.items()
        }

    def prototypes(self) -> tuple[list[str], dict[str, np.ndarray]]:
        """Class names (sorted) and, per output, their prototypes as read-only float32 [K, dim]. Cached
        until this or another connection changes the store; the same objects come back while valid."""
        with self._lock:
            data_version = self._conn.execute("PRAGMA data_version").fetchone()[0]
            key = (self._generation, data_version)
            if self._cache is None or self._cache[0] != key:
                with self._snapshot() as conn:
                    if self._cache is not None and self._cache[0][1] != data_version and self._model_checked:
                        self._check_same_model(conn)  # another process committed: maybe a re-embedding
                    self._cache = (key, self._load_prototypes(conn))
            return self._cache[1]

    def _load_prototypes(self, conn: sqlite3.Connection) -> tuple[list[str], dict[str, np.ndarray]]:
        labels = [row[0] for row in conn.execute("SELECT name FROM classes ORDER BY name")]
        means: dict[str, np.ndarray] = {}
        for output, dim in conn.execute("SELECT output, dim FROM prototypes GROUP BY output").fetchall():
            blobs = [
                row[0]
                for row in conn.execute(
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

    # -- portable copies ----------------------------------------------------------------------------

    def export_to(self, destination: str | Path) -> Path:
        """Writes a self-contained copy of the store (one SQLite file, no WAL) to `destination`,
        atomically: the file appears complete or not at all."""
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
