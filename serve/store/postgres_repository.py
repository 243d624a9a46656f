"""psycopg as serve/store/repository.py's Connection, and the SQL only PostgreSQL stores have: the change
counter of serve/store/postgres_schema.py's `distilshot_store` table."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg


class PostgresConnection:
    """A psycopg connection running repository.py's SQL: its `?` placeholders become psycopg's `%s`
    (that SQL holds no other `?` or `%`)."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.raw = conn

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> psycopg.Cursor:
        return self.raw.execute(sql.replace("?", "%s"), parameters or None)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self.raw.cursor() as cursor:
            cursor.executemany(sql.replace("?", "%s"), rows)


def bump_data_version(conn: psycopg.Connection) -> None:
    """The first statement of every write transaction: its row lock makes writers take turns, and the new
    value (visible once committed) tells every replica that the store changed."""
    conn.execute("UPDATE distilshot_store SET data_version = data_version + 1")


def data_version(conn: PostgresConnection) -> int:
    return int(conn.execute("SELECT data_version FROM distilshot_store").fetchone()[0])
