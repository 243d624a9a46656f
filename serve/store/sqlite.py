"""SupportStore: the ClassStore (serve/store/interface.py) in one SQLite file, in WAL mode; its
operations are serve/store/sql_store.py's.

Several processes may share the file: writers take turns under SQLite's lock (waiting up to
LOCK_TIMEOUT_S), every change is one `BEGIN IMMEDIATE` transaction with `synchronous = FULL`, so a process
killed at any point leaves the file as it was before or after the change. SQLite's own change counter
(PRAGMA data_version) tells a process that another one committed, so its next read sees the change and
notices when another one re-embedded the store for another model.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from distilshot.errors import StoreError
from distilshot.serve.store import sqlite_schema as schema
from distilshot.serve.store.interface import Reembedder
from distilshot.serve.store.portable import write_store_file
from distilshot.serve.store.records import StoreBusyError
from distilshot.serve.store.sql_store import SqlStore

LOCK_TIMEOUT_S = 10


class SupportStore(SqlStore):
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
        self.location = None if self.path is None else str(self.path)
        self._where = "in-memory store" if self.path is None else f"store {self.path}"
        self._label = str(self.path)  # how messages name the file itself
        self._lock = threading.RLock()
        self._generation = 0  # bumped on each of our commits; PRAGMA data_version covers other connections
        self._conn = self._connect(fingerprint)
        self._open(fingerprint, reembed, layout)

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

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- transactions -------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; other writers (threads and processes) wait for it."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
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

    def _version(self, conn: sqlite3.Connection) -> tuple[int, int]:
        # data_version changes when another connection commits; our own commits bump _generation
        return self._generation, conn.execute("PRAGMA data_version").fetchone()[0]

    # -- portable copies ----------------------------------------------------------------------------

    def export_to(self, destination: str | Path) -> Path:
        """A copy by VACUUM INTO: one SQLite file, no WAL."""
        destination = Path(destination)
        if destination.exists() and (self.path is None or destination.resolve() == self.path.resolve()):
            raise StoreError(f"cannot export to {destination}: it is the store itself")

        def vacuum_into(tmp: Path) -> None:
            with self._lock:
                self._conn.execute("VACUUM INTO ?", (str(tmp),))

        return write_store_file(destination, vacuum_into, self._where)
