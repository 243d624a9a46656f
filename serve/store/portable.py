"""Store files: writing them for `ClassStore.export_to`, and reading them, since they may come from
anyone, for an import.

A file is accepted only as a store made by this code would be: exactly the schema of
serve/store/sqlite_schema.py, SQLite's full integrity check, valid and distinct class names in their stored
form, bounded text fields, stored copies that are small 8-bit PNGs, and embeddings of one consistent
layout (the importing bundle's, when the file claims its model). Its vectors are never trusted:
`import_shots` recomputes every embedding from the stored copies with the importing bundle, so a class
cannot bring another class's vectors. Every refusal raises StoreError naming the problem before anything
is written.
"""

from __future__ import annotations

import os
import re
import sqlite3
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distilshot.errors import ImageError, StoreError
from distilshot.serve.images import load_stored_copy
from distilshot.serve.store import repository
from distilshot.serve.store import sqlite_schema as schema
from distilshot.serve.store.interface import REEMBED_CHUNK, Reembedder
from distilshot.serve.store.names import MAX_NAME_LENGTH, canonical_classes
from distilshot.serve.store.records import MAX_SOURCE_LENGTH, Shot

_FINGERPRINT = re.compile(r"[0-9a-f]{64}")  # Manifest.fingerprint: a sha256 in hex
COPY_CHUNK = 256  # shots (with their embeddings) copied at a time by copy_to_file


def write_store_file(destination: str | Path, write: Callable[[Path], None], where: str) -> Path:
    """Makes store file `destination` atomically: `write` creates it at a temporary path beside it (which
    does not exist yet), which then replaces `destination`. `where` names the store in messages."""
    destination = Path(destination)
    if not destination.parent.is_dir():
        raise StoreError(f"cannot export to {destination}: folder {destination.parent} does not exist")
    fd, tmp = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".tmp")
    os.close(fd)
    os.unlink(tmp)  # `write` creates the file itself
    try:
        write(Path(tmp))
        os.replace(tmp, destination)
    except sqlite3.Error as error:
        raise StoreError(f"cannot export {where} to {destination}: {error}") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return destination


def copy_to_file(source: repository.Connection, target: Path, where: str) -> None:
    """Writes the store read through `source` (inside one read transaction of another backend) as the new
    store file `target`, in the layout of serve/store/sqlite_schema.py, ids and timestamps kept."""
    fingerprint = str(repository.read_fingerprint(source))
    conn = sqlite3.connect(target, isolation_level=None)
    try:
        schema.create(conn, fingerprint, str(target), where)
        conn.execute("BEGIN")
        conn.executemany(
            "UPDATE metadata SET value = ? WHERE key = ?",
            [(value, key) for key, value in source.execute("SELECT key, value FROM metadata").fetchall()],
        )
        conn.executemany(
            "INSERT INTO classes VALUES (?, ?, ?)",
            source.execute("SELECT id, name, created FROM classes").fetchall(),
        )
        last = 0
        while shots := source.execute(
            "SELECT id, class_id, source, thumbnail, created FROM shots WHERE id > ? ORDER BY id LIMIT ?",
            (last, COPY_CHUNK),
        ).fetchall():
            conn.executemany("INSERT INTO shots VALUES (?, ?, ?, ?, ?)", shots)
            embeddings = source.execute(
                "SELECT shot_id, output, dim, vector FROM embeddings WHERE shot_id > ? AND shot_id <= ?",
                (last, shots[-1][0]),
            )
            conn.executemany("INSERT INTO embeddings VALUES (?, ?, ?, ?)", embeddings.fetchall())
            last = shots[-1][0]
        prototypes = source.execute("SELECT class_id, output, dim, vector FROM prototypes")
        conn.executemany("INSERT INTO prototypes VALUES (?, ?, ?, ?)", prototypes.fetchall())
        conn.execute("COMMIT")
    finally:
        conn.close()


@dataclass(frozen=True)
class StoreFile:
    """What an exported store file holds: its model fingerprint, the layout (output -> dim) of its
    embeddings, and per class (stored-form name) the (source, PNG copy) of each shot, in order."""

    fingerprint: str
    layout: dict[str, int]
    classes: dict[str, list[tuple[str, bytes]]]


def import_shots(
    source: str | Path, fingerprint: str, layout: Mapping[str, int], reembed: Reembedder
) -> dict[str, list[Shot]]:
    """The classes of store file `source` as shots for `ClassStore.register_many`, with embeddings
    recomputed by `reembed` (the importing bundle, fingerprint `fingerprint`, outputs `layout`)."""
    file = read_store_file(source)
    if file.fingerprint == fingerprint and file.layout != dict(layout):
        raise StoreError(
            f"store file {source} claims this bundle's model but holds embeddings {file.layout}; a store "
            f"of this model holds {dict(layout)}: it was not made by distilshot"
        )
    if not file.classes:
        raise StoreError(f"store file {source} holds no classes; nothing to import")
    shots: dict[str, list[Shot]] = {}
    for name, items in file.classes.items():
        parts = [reembed(items[i : i + REEMBED_CHUNK]) for i in range(0, len(items), REEMBED_CHUNK)]
        vectors = {output: np.concatenate([part[output] for part in parts]) for output in parts[0]}
        shots[name] = [
            Shot(shot_source, {o: v[i] for o, v in vectors.items()}, png)
            for i, (shot_source, png) in enumerate(items)
        ]
    return shots


def read_store_file(source: str | Path) -> StoreFile:
    """Reads and checks an exported store file (see the module's description)."""
    source = Path(source)
    where = f"store file {source}"
    if not source.is_file():
        raise StoreError(f"{where} does not exist")
    schema.check_header(source, where)
    try:
        conn = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
    except sqlite3.Error as error:
        raise StoreError(f"cannot open {where}: {error}") from None
    try:
        return _read(conn, where)
    except sqlite3.Error as error:
        raise StoreError(f"{where} cannot be read: {error}") from None
    finally:
        conn.close()


def _read(conn: sqlite3.Connection, where: str) -> StoreFile:
    conn.execute("PRAGMA trusted_schema = OFF")
    version = schema.check_identity(conn, where, where)
    if version != schema.SCHEMA_VERSION:
        raise StoreError(
            f"{where} has schema version {version}; this distilshot reads {schema.SCHEMA_VERSION}"
        )
    if (
        conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
        != schema.expected_schema()
    ):
        raise StoreError(f"{where} has tables, indexes, triggers or views that a store does not have")
    problems = [row[0] for row in conn.execute("PRAGMA integrity_check")]
    if problems != ["ok"]:
        raise StoreError(f"{where} is damaged: {problems[0]}")
    fingerprint = repository.read_fingerprint(conn)
    if not isinstance(fingerprint, str) or not _FINGERPRINT.fullmatch(fingerprint):
        raise StoreError(f"{where} has no valid model fingerprint (64 hex digits); it is damaged")
    empty = conn.execute("SELECT name FROM classes WHERE id NOT IN (SELECT class_id FROM shots)").fetchone()
    if empty is not None:
        raise StoreError(f"{where}: class {empty[0]!r} has no support images; it is damaged")
    rows = conn.execute(
        "SELECT c.name, s.id, s.source, s.thumbnail FROM shots s JOIN classes c ON c.id = s.class_id "
        "ORDER BY c.name, s.id"
    ).fetchall()
    by_name: dict[str, list[tuple[int, object, object]]] = {}
    for raw_name, shot_id, shot_source, png in rows:
        by_name.setdefault(raw_name, []).append((shot_id, shot_source, png))
    try:
        named = canonical_classes(by_name)
    except StoreError as error:
        raise StoreError(f"{where}: {error}") from None
    classes: dict[str, list[tuple[str, bytes]]] = {}
    layout: dict[str, int] | None = None
    for name, shots in named.items():
        for shot_id, shot_source, png in shots:
            shot = f"{where}: shot {shot_id} of class {name!r}"
            if not isinstance(shot_source, str) or len(shot_source) > MAX_SOURCE_LENGTH:
                length = len(shot_source) if isinstance(shot_source, str | bytes) else "?"
                raise StoreError(
                    f"{shot}: its source must be text of at most {MAX_SOURCE_LENGTH} characters, "
                    f"not {type(shot_source).__name__} of length {length}"
                )
            try:
                load_stored_copy(png, name=shot)
            except ImageError as error:
                raise StoreError(str(error)) from None
            dims = _embedding_layout(conn, shot_id, shot)
            if layout is None:
                layout = dims
            elif dims != layout:
                raise StoreError(f"{shot} has embeddings {dims}; the file's other shots have {layout}")
            classes.setdefault(name, []).append((shot_source, png))
    return StoreFile(fingerprint, layout or {}, classes)


def _embedding_layout(conn: sqlite3.Connection, shot_id: int, shot: str) -> dict[str, int]:
    """Output -> dim of one shot's embeddings, which must be well formed (their values are not used)."""
    dims: dict[str, int] = {}
    for output, dim, vector in conn.execute(
        "SELECT output, dim, vector FROM embeddings WHERE shot_id = ?", (shot_id,)
    ):
        if not isinstance(output, str) or not 0 < len(output) <= MAX_NAME_LENGTH:
            raise StoreError(f"{shot} has an embedding output name that is not a short text")
        if not isinstance(dim, int) or dim < 1 or not isinstance(vector, bytes) or len(vector) != 4 * dim:
            raise StoreError(f"{shot}: its embedding {output!r} is not {dim!r} float32 values; it is damaged")
        dims[output] = dim
    if not dims:
        raise StoreError(f"{shot} has no embeddings; it is damaged")
    return dims
