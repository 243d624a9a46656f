"""What only the PostgreSQL store has: its layout and change counter, refusing databases that are not
stores, never showing a password, the driver as an optional extra, choosing the backend by location,
waiting writers, and exports that are SQLite store files. The rules both backends share are
tests/test_serve_store.py's."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import psycopg
import pytest
from serve_fixtures import encode, solid

from distilshot.errors import StoreError
from distilshot.serve.store import Shot, StoreBusyError, SupportStore, open_store
from distilshot.serve.store import postgres as postgres_store
from distilshot.serve.store.portable import read_store_file

FP = "a" * 64


PNG = encode(solid((250, 0, 0)))  # a stored copy an import accepts


def shot(*values: float) -> Shot:
    return Shot("x.png", {"global": np.array(values, dtype=np.float32)}, PNG)


def query(url: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql, params or None)
        return cursor.fetchall() if cursor.description else []


def tables(url: str) -> list[str]:
    return [
        row[0] for row in query(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
    ]


def data_version(url: str) -> int:
    return query(url, "SELECT data_version FROM distilshot_store")[0][0]


def test_a_new_store_has_the_layout_and_sorts_names_by_code_point(postgres_url):
    names = ["é", "a", "B", "Z", "ä", "_"]
    with open_store(postgres_url, FP) as store:
        assert store.path is None and store.location == postgres_url
        for name in names:
            store.register(name, [shot(1, 2)])
        assert [c.name for c in store.classes()] == sorted(names)  # as SQLite and Python sort
        assert store.prototypes()[0] == sorted(names)
    assert tables(postgres_url) == [
        "classes",
        "distilshot_store",
        "embeddings",
        "metadata",
        "prototypes",
        "shots",
    ]
    assert query(postgres_url, "SELECT schema_version FROM distilshot_store") == [(1,)]
    assert query(postgres_url, "SELECT value FROM metadata WHERE key = 'fingerprint'") == [(FP,)]
    dims = query(postgres_url, "SELECT DISTINCT output, dim, length(vector) FROM embeddings")
    assert dims == [("global", 2, 8)]


def test_every_change_bumps_the_change_counter_once_and_a_refusal_not_at_all(postgres_url):
    with open_store(postgres_url, FP) as store:
        assert data_version(postgres_url) == 0
        store.register_many({"a": [shot(1, 1)], "b": [shot(2, 2)]})
        assert data_version(postgres_url) == 1
        info = store.add_shots("a", [shot(3, 3)])
        store.remove_shot("a", store.shots("a")[0].id)
        store.remove("b")
        assert (info.shots, data_version(postgres_url)) == (2, 4)
        with pytest.raises(StoreError, match="already registered"):
            store.register("a", [shot(1, 1)])
        store.classes(), store.prototypes()
        assert data_version(postgres_url) == 4


def test_a_database_holding_other_tables_is_refused_and_untouched(postgres_url):
    query(postgres_url, "CREATE TABLE orders (id INTEGER)")
    with pytest.raises(StoreError, match="PostgreSQL database but not a distilshot support store"):
        open_store(postgres_url, FP)
    assert tables(postgres_url) == ["orders"]


def test_a_newer_schema_is_refused(postgres_url):
    open_store(postgres_url, FP).close()
    query(postgres_url, "UPDATE distilshot_store SET schema_version = 2")
    with pytest.raises(StoreError, match="schema version 2; this distilshot reads version 1: upgrade"):
        open_store(postgres_url, FP)


def test_a_missing_store_needs_a_model(postgres_url):
    with pytest.raises(StoreError, match="there is no support store at postgresql://"):
        open_store(postgres_url)
    assert tables(postgres_url) == []


def test_messages_never_show_the_password(postgres_url):
    with_password = postgres_url.replace("postgres@", "postgres:s3cret@")  # the test cluster trusts all
    with open_store(with_password, FP) as store:
        assert store.location == postgres_url
        with pytest.raises(StoreError) as refused:
            store.remove("absent")
        assert "s3cret" not in str(refused.value) and postgres_url in str(refused.value)
    unreachable = "postgresql://someone:s3cret@127.0.0.1:1/db?sslmode=disable"
    with pytest.raises(
        StoreError, match=r"cannot open store postgresql://someone@127\.0\.0\.1:1/db:"
    ) as error:
        open_store(unreachable, FP)
    assert "s3cret" not in str(error.value)


def test_without_the_extra_a_postgres_location_names_the_install(monkeypatch):
    monkeypatch.delitem(sys.modules, "distilshot.serve.store.postgres")
    monkeypatch.setitem(sys.modules, "psycopg", None)  # what `import psycopg` meets without the extra
    with pytest.raises(StoreError, match=r"pip install 'distilshot\[postgres\]'"):
        open_store("postgresql://someone@127.0.0.1:1/db", FP)


def test_the_location_chooses_the_backend(tmp_path):
    with open_store(tmp_path / "s.db", FP) as file_store, open_store(str(tmp_path / "t.db"), FP) as text:
        assert isinstance(file_store, SupportStore) and isinstance(text, SupportStore)
    with open_store(None, FP) as in_memory:
        assert in_memory.path is None and in_memory.location is None
    with pytest.raises(StoreError, match="scheme 'mysql' is unknown"):
        open_store("mysql://someone@host/db", FP)
    with pytest.raises(StoreError, match="as text, not as a Path"):
        open_store(Path("postgresql://someone@host/db"), FP)


def test_a_writer_waits_for_another_and_then_gives_up_unchanged(postgres_url, monkeypatch):
    monkeypatch.setattr(postgres_store, "LOCK_TIMEOUT_S", 1)
    with open_store(postgres_url, FP) as store, psycopg.connect(postgres_url) as other:
        store.register("a", [shot(1, 1)])
        other.execute("UPDATE distilshot_store SET data_version = data_version")  # holds the writers' lock
        with pytest.raises(StoreBusyError, match="stayed locked by another writer for 1 s; nothing was"):
            store.register("b", [shot(2, 2)])
        assert [c.name for c in store.classes()] == ["a"]  # readers do not wait
        other.rollback()
        assert store.register("b", [shot(2, 2)]).shots == 1


def test_an_export_is_a_store_file_as_sqlite_writes_it(postgres_url, tmp_path):
    with open_store(postgres_url, FP) as store:
        store.register("cat", [shot(1, 0), shot(3, 2)])
        store.register("dog", [shot(0, 5)])
        store.remove_shot("cat", store.shots("cat")[0].id)  # ids with a gap stay as they are
        labels, means = store.prototypes()
        shots = store.shots("cat")
        exported = store.export_to(tmp_path / "copy.db")
        with pytest.raises(StoreError, match=r"folder .* does not exist"):
            store.export_to(tmp_path / "no" / "copy.db")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.db"]  # no temporary file left
    file = read_store_file(exported)  # every check an import makes
    assert (file.fingerprint, file.layout, list(file.classes)) == (FP, {"global": 2}, ["cat", "dog"])
    with SupportStore(exported, FP) as copy:
        assert copy.shots("cat") == shots
        copy_labels, copy_means = copy.prototypes()
    assert copy_labels == labels and np.array_equal(copy_means["global"], means["global"])
