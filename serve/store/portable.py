"""Reading exported store files, which may come from anyone, for an import into a store.

A file is accepted only as a store made by this code would be: exactly our schema, SQLite's full integrity
check, valid and distinct class names in their stored form, bounded text fields, stored copies that are
small 8-bit PNGs, and embeddings of one consistent layout (the importing bundle's, when the file claims its
model). Its vectors are never trusted: `import_shots` recomputes every embedding from the stored copies with
the importing bundle, so a class cannot bring another class's vectors. Every refusal raises StoreError
naming the problem before anything is written.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distilshot.errors import ImageError, StoreError
from distilshot.serve.images import load_stored_copy
from distilshot.serve.store.sqlite import (
    APPLICATION_ID,
    MAX_NAME_LENGTH,
    MAX_SOURCE_LENGTH,
    REEMBED_CHUNK,
    SCHEMA,
    SCHEMA_VERSION,
    SQLITE_MAGIC,
    Reembedder,
    Shot,
    check_class_name,
)

_FINGERPRINT = re.compile(r"[0-9a-f]{64}")  # Manifest.fingerprint: a sha256 in hex


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
    """The classes of store file `source` as shots for `SupportStore.register_many`, with embeddings
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


_EXPECTED_SCHEMA: list[tuple[str, str, str]] = []


def _expected_schema() -> list[tuple[str, str, str]]:
    """(type, name, sql) of every schema object a store holds, from an empty store made in memory."""
    if not _EXPECTED_SCHEMA:
        conn = sqlite3.connect(":memory:")
        for statement in SCHEMA:
            conn.execute(statement)
        _EXPECTED_SCHEMA.extend(conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name"))
        conn.close()
    return _EXPECTED_SCHEMA


def read_store_file(source: str | Path) -> StoreFile:
    """Reads and checks an exported store file (see the module's description)."""
    source = Path(source)
    where = f"store file {source}"
    if not source.is_file():
        raise StoreError(f"{where} does not exist")
    with open(source, "rb") as f:
        if f.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
            raise StoreError(f"{where} is not a distilshot support store")
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
    if conn.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
        raise StoreError(f"{where} is an SQLite file but not a distilshot support store")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version != SCHEMA_VERSION:
        raise StoreError(f"{where} has schema version {version}; this distilshot reads {SCHEMA_VERSION}")
    if (
        conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
        != _expected_schema()
    ):
        raise StoreError(f"{where} has tables, indexes, triggers or views that a store does not have")
    problems = [row[0] for row in conn.execute("PRAGMA integrity_check")]
    if problems != ["ok"]:
        raise StoreError(f"{where} is damaged: {problems[0]}")
    row = conn.execute("SELECT value FROM metadata WHERE key = 'fingerprint'").fetchone()
    if row is None or not isinstance(row[0], str) or not _FINGERPRINT.fullmatch(row[0]):
        raise StoreError(f"{where} has no valid model fingerprint (64 hex digits); it is damaged")
    empty = conn.execute("SELECT name FROM classes WHERE id NOT IN (SELECT class_id FROM shots)").fetchone()
    if empty is not None:
        raise StoreError(f"{where}: class {empty[0]!r} has no support images; it is damaged")
    classes: dict[str, list[tuple[str, bytes]]] = {}
    given: dict[str, str] = {}
    layout: dict[str, int] | None = None
    shots = conn.execute(
        "SELECT c.name, s.id, s.source, s.thumbnail FROM shots s JOIN classes c ON c.id = s.class_id "
        "ORDER BY c.name, s.id"
    )
    for raw_name, shot_id, shot_source, png in shots:
        try:
            name = check_class_name(raw_name)
        except StoreError as error:
            raise StoreError(f"{where}: {error}") from None
        if given.setdefault(name, raw_name) != raw_name:
            raise StoreError(
                f"{where}: class names {given[name]!r} and {raw_name!r} are the same name once "
                "Unicode-normalised (NFC)"
            )
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
    return StoreFile(row[0], layout or {}, classes)


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
