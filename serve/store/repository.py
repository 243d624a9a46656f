"""The SQL of a support store's metadata, classes, shots, embeddings and per-class prototype rows, for
every backend: portable SQL with `?` placeholders, run on a `Connection` inside the caller's transaction
(serve/store/sql_store.py opens and commits it; serve/store/postgres_repository.py adapts psycopg)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from distilshot.core.head import class_mean
from distilshot.errors import StoreError
from distilshot.serve.store.names import canonical_name
from distilshot.serve.store.records import (
    ClassInfo,
    DuplicateClassError,
    Shot,
    ShotInfo,
    UnknownClassError,
)

_CLASS_ROWS = "SELECT c.name, COUNT(s.id), c.created FROM classes c LEFT JOIN shots s ON s.class_id = c.id"


class Connection(Protocol):
    """What the SQL here needs of a connection: sqlite3.Connection as it is, psycopg through an adapter.
    `execute` returns a cursor (fetchone, fetchall, iteration)."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Any: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]], /) -> Any: ...


def now() -> str:
    """The timestamp stored with classes and shots."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def read_fingerprint(conn: Connection) -> object:
    """The stored model fingerprint as the database holds it (None when there is none); callers check it."""
    row = conn.execute("SELECT value FROM metadata WHERE key = 'fingerprint'").fetchone()
    return None if row is None else row[0]


def write_fingerprint(conn: Connection, fingerprint: str) -> None:
    conn.execute("UPDATE metadata SET value = ? WHERE key = 'fingerprint'", (fingerprint,))


def shot_count(conn: Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM shots").fetchone()[0])


def stored_layout(conn: Connection) -> dict[str, int]:
    """Output -> dim of the stored prototypes (empty while no class is registered)."""
    rows = conn.execute("SELECT output, MAX(dim) FROM prototypes GROUP BY output ORDER BY output")
    return {output: int(dim) for output, dim in rows.fetchall()}


def refuse_existing(conn: Connection, names: Sequence[str]) -> None:
    for name in names:
        if conn.execute("SELECT 1 FROM classes WHERE name = ?", (name,)).fetchone():
            raise DuplicateClassError(
                f"class {name!r} is already registered; add images to it with add_shots (CLI: register --add)"
            )


def class_id(conn: Connection, name: str, where: str) -> int:
    # The stored form first; then the name as given, for a class stored before names were normalised.
    row = conn.execute(
        "SELECT id FROM classes WHERE name IN (?, ?) ORDER BY name = ? DESC LIMIT 1",
        (canonical_name(name), name, canonical_name(name)),
    ).fetchone()
    if row is None:
        raise UnknownClassError(f"there is no class {name!r} in the {where}")
    return int(row[0])


def class_info(conn: Connection, class_id: int) -> ClassInfo:
    return ClassInfo(*conn.execute(f"{_CLASS_ROWS} WHERE c.id = ? GROUP BY c.id", (class_id,)).fetchone())


def classes(conn: Connection) -> list[ClassInfo]:
    rows = conn.execute(f"{_CLASS_ROWS} GROUP BY c.id ORDER BY c.name").fetchall()
    return [ClassInfo(name, count, created) for name, count, created in rows]


def insert_class(conn: Connection, name: str, shots: Sequence[Shot], now: str) -> None:
    new_id = conn.execute(
        "INSERT INTO classes (name, created) VALUES (?, ?) RETURNING id", (name, now)
    ).fetchone()[0]
    insert_shots(conn, int(new_id), shots, now)


def insert_shots(conn: Connection, class_id: int, shots: Sequence[Shot], now: str) -> None:
    ids = [
        int(
            conn.execute(
                "INSERT INTO shots (class_id, source, thumbnail, created) VALUES (?, ?, ?, ?) RETURNING id",
                (class_id, shot.source, shot.thumbnail, now),
            ).fetchone()[0]
        )
        for shot in shots
    ]
    vectors = {o: np.stack([shot.embeddings[o] for shot in shots]) for o in shots[0].embeddings}
    insert_embeddings(conn, ids, vectors)
    update_prototypes(conn, [class_id])


def insert_embeddings(conn: Connection, shot_ids: Sequence[int], vectors: Mapping[str, np.ndarray]) -> None:
    for output, values in vectors.items():
        values = np.asarray(values, dtype="<f4")
        if values.ndim != 2 or len(values) != len(shot_ids) or not np.isfinite(values).all():
            raise StoreError(
                f"embeddings for output {output!r} must be {len(shot_ids)} finite vectors, "
                f"got shape {list(values.shape)}"
            )
        conn.executemany(
            "INSERT INTO embeddings (shot_id, output, dim, vector) VALUES (?, ?, ?, ?)",
            [(i, output, int(values.shape[1]), v.tobytes()) for i, v in zip(shot_ids, values, strict=True)],
        )


def update_prototypes(conn: Connection, class_ids: Sequence[int]) -> None:
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
                (class_id, output, int(mean.size), mean.astype("<f4").tobytes()),
            )


def delete_class(conn: Connection, class_id: int) -> None:
    """The class with its shots, embeddings and prototype (ON DELETE CASCADE)."""
    conn.execute("DELETE FROM classes WHERE id = ?", (class_id,))


def class_ids(conn: Connection) -> list[int]:
    return [int(row[0]) for row in conn.execute("SELECT id FROM classes").fetchall()]


def delete_shot(conn: Connection, class_id: int, shot_id: int) -> None:
    conn.execute("DELETE FROM shots WHERE id = ? AND class_id = ?", (shot_id, class_id))
    update_prototypes(conn, [class_id])


def has_shot(conn: Connection, class_id: int, shot_id: int) -> bool:
    query = "SELECT 1 FROM shots WHERE id = ? AND class_id = ?"
    return conn.execute(query, (shot_id, class_id)).fetchone() is not None


def shots(conn: Connection, class_id: int) -> list[ShotInfo]:
    rows = conn.execute(
        "SELECT id, source, created FROM shots WHERE class_id = ? ORDER BY id", (class_id,)
    ).fetchall()
    return [ShotInfo(int(i), source, created) for i, source, created in rows]


def thumbnail(conn: Connection, class_id: int, shot_id: int) -> bytes | None:
    row = conn.execute(
        "SELECT thumbnail FROM shots WHERE id = ? AND class_id = ?", (shot_id, class_id)
    ).fetchone()
    return None if row is None else bytes(row[0])


def shot_embeddings(conn: Connection, class_id: int) -> tuple[list[int], dict[str, np.ndarray]]:
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
    return ids, {o: np.frombuffer(b"".join(v), "<f4").reshape(len(v), dims[o]) for o, v in vectors.items()}


def prototypes(conn: Connection, where: str) -> tuple[list[str], dict[str, np.ndarray]]:
    labels = [row[0] for row in conn.execute("SELECT name FROM classes ORDER BY name")]
    means: dict[str, np.ndarray] = {}
    for output, dim in stored_layout(conn).items():
        blobs = [
            row[0]
            for row in conn.execute(
                "SELECT p.vector FROM classes c JOIN prototypes p ON p.class_id = c.id "
                "WHERE p.output = ? ORDER BY c.name",
                (output,),
            )
        ]
        if len(blobs) != len(labels):
            raise StoreError(f"{where} is damaged: {len(labels) - len(blobs)} classes lack a prototype")
        means[output] = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(labels), dim)
    return labels, means
