"""PostgresStore: the ClassStore (serve/store/interface.py) in a PostgreSQL database that several serving
replicas share; its operations are serve/store/sql_store.py's, its layout serve/store/postgres_schema.py's.

Every change is one transaction that first bumps the store's change counter (`data_version`): its row
lock makes writers take turns (waiting up to LOCK_TIMEOUT_S) and its new value, committed with the
change, makes every replica's next read reload its cached prototypes. A replica killed mid-change leaves
nothing behind: the server rolls its transaction back. Needs the `postgres` extra (psycopg 3 and its pool).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import psycopg_pool

from distilshot.errors import StoreError
from distilshot.serve.store import postgres_repository as pg
from distilshot.serve.store import postgres_schema as schema
from distilshot.serve.store.interface import Reembedder
from distilshot.serve.store.portable import copy_to_file, write_store_file
from distilshot.serve.store.records import StoreBusyError
from distilshot.serve.store.sql_store import SqlStore

LOCK_TIMEOUT_S = 10  # as SQLite's (serve/store/sqlite.py): how long a writer waits for another
CONNECT_TIMEOUT_S = 10
POOL_SIZE = 8  # connections per process: concurrent calls beyond it wait for one


def shown_location(url: str) -> str:
    """`url` as messages show it: scheme, user, host, port and database; never a password or options."""
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme}://{user}{parts.netloc.rpartition('@')[2]}{parts.path}"


class PostgresStore(SqlStore):
    """Classes and support shots in the PostgreSQL database at `url` (postgresql://user@host:port/db),
    which holds nothing else; the store is created in it when it is empty. `fingerprint`, `reembed` and
    `layout` work as SupportStore's (serve/store/sqlite.py). Safe to share between threads: each call
    takes a connection from a pool of `pool_size`."""

    def __init__(
        self,
        url: str,
        fingerprint: str | None = None,
        reembed: Reembedder | None = None,
        *,
        layout: Mapping[str, int] | None = None,
        pool_size: int = POOL_SIZE,
    ) -> None:
        self.path = None
        self.location = shown_location(url)
        self._where = f"store {self.location}"
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
                schema.prepare(conn, fingerprint, self.location, self._where)
        except psycopg.Error as error:
            raise StoreError(f"cannot open {self._where}: {error}") from None
        self._pool = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S},
            check=psycopg_pool.ConnectionPool.check_connection,  # a server restart costs no failed call
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except psycopg.Error as error:
            self._pool.close()
            raise StoreError(f"cannot open {self._where}: {error}") from None
        self._open(fingerprint, reembed, layout)

    def close(self) -> None:
        self._pool.close()

    # -- transactions -------------------------------------------------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        """A connection of the pool, inside one transaction the caller begins; psycopg errors become
        StoreError."""
        try:
            with self._pool.connection(timeout=LOCK_TIMEOUT_S) as conn:
                try:
                    yield conn
                finally:
                    if not conn.closed:
                        conn.rollback()  # nothing to undo after a COMMIT
        except psycopg_pool.PoolTimeout:
            raise StoreBusyError(
                f"{self._where}: all {self._pool.max_size} connections of this process stayed busy for "
                f"{LOCK_TIMEOUT_S} s; nothing was changed; retry"
            ) from None
        except psycopg.errors.LockNotAvailable:
            raise StoreBusyError(
                f"{self._where} stayed locked by another writer for {LOCK_TIMEOUT_S} s; "
                "nothing was changed; retry"
            ) from None
        except psycopg.Error as error:
            raise StoreError(f"{self._where}: {error}; nothing was changed") from None

    @contextmanager
    def _transaction(self) -> Iterator[pg.PostgresConnection]:
        """A write transaction; other writers (threads and replicas) wait for it."""
        with self._connection() as conn:
            conn.execute("BEGIN")
            conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_S}s'")
            pg.bump_data_version(conn)
            yield pg.PostgresConnection(conn)
            conn.execute("COMMIT")

    @contextmanager
    def _snapshot(self) -> Iterator[pg.PostgresConnection]:
        """A read transaction: several SELECTs see one state even while replicas commit."""
        with self._connection() as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield pg.PostgresConnection(conn)
            conn.execute("COMMIT")

    def _version(self, conn: pg.PostgresConnection) -> int:
        return pg.data_version(conn)

    # -- portable copies ----------------------------------------------------------------------------

    def export_to(self, destination: str | Path) -> Path:
        """A store file as SupportStore.export_to writes it, copied from one snapshot."""

        def copy(tmp: Path) -> None:
            with self._snapshot() as conn:
                copy_to_file(conn, tmp, self._where)

        return write_store_file(destination, copy, self._where)
