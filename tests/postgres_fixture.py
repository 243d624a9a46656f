"""A throw-away PostgreSQL cluster for the shared-store tests: Debian's server binaries (`make install`
installs postgresql), on a free loopback port, its data in a folder under /tmp, for the whole session.
As root the server runs as the `postgres` user (initdb refuses root). Each test gets a database of its
own (`postgres_url`); `store_backend` runs a test once per backend, and `classifier_on` opens a
classifier on either. `running_cluster` is the cluster without pytest, for bench/bench_replicas.py."""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from distilshot.serve.classifier import FewShotClassifier

PG_BIN = Path("/usr/lib/postgresql/15/bin")
_databases = itertools.count()


def _as_server_user(*command: object) -> list[str]:
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return [*prefix, *map(str, command)]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ClusterError(RuntimeError):
    """The throw-away cluster could not start."""


@contextmanager
def running_cluster() -> Iterator[str]:
    """A throw-away cluster while the block runs; its superuser's URL without a database,
    postgresql://postgres@127.0.0.1:PORT."""
    if not (PG_BIN / "initdb").is_file() or not (PG_BIN / "pg_ctl").is_file():
        raise ClusterError(
            f"PostgreSQL's server binaries are not in {PG_BIN}; `make install` installs postgresql"
        )
    root = Path(tempfile.mkdtemp(prefix="distilshot-pg-", dir="/tmp"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", _free_port()
    options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c full_page_writes=off"
    initdb = [PG_BIN / "initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"]
    initdb.append("--no-sync")  # a throw-away cluster: nothing is fsynced
    start = [PG_BIN / "pg_ctl", "-D", data, "-l", root / "log", "-o", options, "-w", "start"]
    for step, command in (("initdb", initdb), ("pg_ctl start", start)):
        done = subprocess.run(_as_server_user(*command), capture_output=True, text=True)
        if done.returncode != 0:
            log = (root / "log").read_text() if (root / "log").exists() else ""
            shutil.rmtree(root, ignore_errors=True)
            raise ClusterError(f"PostgreSQL's {step} failed: {done.stderr}{log}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(
            _as_server_user(PG_BIN / "pg_ctl", "-D", data, "-m", "immediate", "stop"), capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The session's cluster (running_cluster)."""
    with ExitStack() as stack:
        try:
            url = stack.enter_context(running_cluster())
        except ClusterError as error:
            pytest.fail(str(error))
        yield url


class StoreBackend:
    """Store locations of one backend for a test (`new` gives an empty one each call), and raw access to
    what a store holds, for the tests that compare or tamper with it."""

    TABLES = ("metadata", "classes", "shots", "embeddings", "prototypes")

    def __init__(self, name: str, folder: Path, server: str | None = None) -> None:
        self.name, self._folder, self._server = name, folder, server
        self._made: list[str] = []

    def new(self) -> str:
        number = len(self._made)
        if self._server is None:
            location = str(self._folder / f"store{number}.db")
        else:
            database = f"store_{os.getpid()}_{next(_databases)}"
            self._admin(f"CREATE DATABASE {database}")
            location = f"{self._server}/{database}"
        self._made.append(location)
        return location

    def drop_all(self) -> None:
        if self._server is not None:
            for location in self._made:
                self._admin(f"DROP DATABASE {location.rpartition('/')[2]} WITH (FORCE)")

    def _admin(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(f"{self._server}/postgres", autocommit=True) as admin:
            admin.execute(statement)

    def sql(self, location: str, statement: str, params: tuple[object, ...] = ()) -> list[tuple]:
        """Runs one statement (`?` placeholders) on the store at `location` and commits; its rows."""
        if self._server is None:
            conn = sqlite3.connect(location)
            try:
                rows = conn.execute(statement, params).fetchall()
                conn.commit()
            finally:
                conn.close()
            return rows
        import psycopg

        with psycopg.connect(location, autocommit=True) as conn:
            cursor = conn.execute(statement.replace("?", "%s"), params or None)
            return cursor.fetchall() if cursor.description else []

    def state(self, location: str) -> object:
        """Everything the store at `location` holds: equal states mean nothing was changed (for SQLite
        the file's bytes, for PostgreSQL every row, its change counter included)."""
        if self._server is None:
            conn = sqlite3.connect(location)
            dump = list(conn.iterdump())
            conn.close()
            return Path(location).read_bytes(), dump
        tables = ("distilshot_store", *self.TABLES)
        return {table: self.sql(location, f"SELECT * FROM {table} ORDER BY 1, 2") for table in tables}

    def count(self, location: str, table: str) -> int:
        return self.sql(location, f"SELECT COUNT(*) FROM {table}")[0][0]


@pytest.fixture(params=["sqlite", "postgres"])
def store_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreBackend]:
    """Each test that asks for it runs once with a SQLite file and once with a PostgreSQL database."""
    server = request.getfixturevalue("postgres_server") if request.param == "postgres" else None
    backend = StoreBackend(request.param, tmp_path, server)
    try:
        yield backend
    finally:
        backend.drop_all()


@pytest.fixture
def postgres_url(postgres_server: str, tmp_path: Path) -> Iterator[str]:
    """A new, empty database of the session's cluster, dropped after the test."""
    backend = StoreBackend("postgres", tmp_path, postgres_server)
    try:
        yield backend.new()
    finally:
        backend.drop_all()


def classifier_on(bundle: Path, location: str | Path, reembed: bool = False) -> FewShotClassifier:
    """FewShotClassifier(bundle, location, reembed=reembed): a file or a postgresql:// location."""
    from distilshot.serve.classifier import FewShotClassifier

    return FewShotClassifier(bundle, location, reembed=reembed)
