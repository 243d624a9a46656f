"""The SQLite layout of a support store and of the files `export_to` writes, and the one place that
checks a file's identity (header, application id, schema version) and reads its model fingerprint."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from distilshot.errors import StoreError
from distilshot.serve.store.repository import now

APPLICATION_ID = 0x44534854  # "DSHT" in the SQLite header marks a distilshot support store
SCHEMA_VERSION = 1  # PRAGMA user_version
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

_EXPECTED_SCHEMA: list[tuple[str, str, str]] = []


def check_header(path: Path, label: str) -> None:
    """Raises StoreError unless file `path` starts as an SQLite database does (read before SQLite opens
    it, so a foreign file is never touched). `label` names it in the message."""
    with open(path, "rb") as f:
        if f.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
            raise StoreError(f"{label} is not a distilshot support store")


def check_identity(conn: sqlite3.Connection, label: str, where: str) -> int:
    """Raises StoreError unless the database is a support store of a schema version this code reads;
    returns that version. Read-only: a foreign file is not altered."""
    if conn.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
        raise StoreError(f"{label} is an SQLite file but not a distilshot support store")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{where} has schema version {version}; this distilshot reads version {SCHEMA_VERSION}: "
            "upgrade distilshot"
        )
    return int(version)


def create(conn: sqlite3.Connection, fingerprint: str, label: str, where: str) -> None:
    """Creates the schema in an empty database for model `fingerprint`, in one transaction; leaves a store
    that another process created meanwhile as it is (after checking its identity)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Another process may have created the store between our existence check and this lock.
        if conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID:
            conn.execute("ROLLBACK")
            check_identity(conn, label, where)
            return
        for statement in SCHEMA:
            conn.execute(statement)
        conn.executemany(
            "INSERT INTO metadata (key, value) VALUES (?, ?)",
            [("fingerprint", fingerprint), ("created", now())],
        )
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def expected_schema() -> list[tuple[str, str, str]]:
    """(type, name, sql) of every schema object a store holds, from an empty store made in memory."""
    if not _EXPECTED_SCHEMA:
        conn = sqlite3.connect(":memory:")
        for statement in SCHEMA:
            conn.execute(statement)
        _EXPECTED_SCHEMA.extend(conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name"))
        conn.close()
    return _EXPECTED_SCHEMA
