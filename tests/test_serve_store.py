"""Store rules, for both backends (SQLite files and PostgreSQL databases, through `store_backend` of
tests/postgres_fixture.py): every refusal changes nothing, every change is one transaction."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from postgres_fixture import StoreBackend

from distilshot.errors import StoreError
from distilshot.serve.store import Shot, SupportStore, open_store
from distilshot.serve.store.sqlite_schema import APPLICATION_ID, SCHEMA_VERSION

FP = "a" * 64
OTHER_FP = "b" * 64


def shot(*values: float, source: str = "x.png", local: list[float] | None = None) -> Shot:
    embeddings = {"global": np.array(values, dtype=np.float32)}
    if local is not None:
        embeddings["local"] = np.array(local, dtype=np.float32)
    return Shot(source, embeddings, b"\x89PNG fake")


@pytest.fixture
def path(tmp_path):
    """A store file with two classes, closed so its bytes are settled."""
    p = tmp_path / "classes.db"
    with SupportStore(p, FP) as store:
        store.register("cat", [shot(1, 0), shot(3, 2)])
        store.register("dog", [shot(0, 5)])
    return p


@pytest.fixture
def location(store_backend: StoreBackend) -> str:
    """A store of either backend with two classes, closed so its contents are settled."""
    location = store_backend.new()
    with open_store(location, FP) as store:
        store.register("cat", [shot(1, 0), shot(3, 2)])
        store.register("dog", [shot(0, 5)])
    return location


def test_new_store_layout(path):
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert conn.execute("SELECT value FROM metadata WHERE key = 'fingerprint'").fetchone()[0] == FP
    shots = conn.execute("SELECT source, thumbnail FROM shots ORDER BY id").fetchall()
    assert shots == [("x.png", b"\x89PNG fake")] * 3
    dims = conn.execute("SELECT DISTINCT output, dim, length(vector) FROM embeddings").fetchall()
    assert dims == [("global", 2, 8)]
    conn.close()


def test_reopen_persists_classes_and_prototypes(location):
    with open_store(location, FP) as store:
        assert [(c.name, c.shots) for c in store.classes()] == [("cat", 2), ("dog", 1)]
        labels, means = store.prototypes()
        assert labels == ["cat", "dog"]
        assert np.array_equal(means["global"], [[2, 1], [0, 5]])
        assert store.fingerprint == FP


def refused(backend: StoreBackend, location: str, action, match: str) -> None:
    """`action(store)` must raise StoreError and leave the store as it was (a file byte-identical, every
    row of a database with its change counter)."""
    before = backend.state(location)
    with open_store(location, FP) as store, pytest.raises(StoreError, match=match):
        action(store)
    assert backend.state(location) == before


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("a/b", "path separator"),
        ("a\\b", "path separator"),
        ("line\nbreak", "control characters"),
        ("nul\x00", "control characters"),
        ("x" * 101, "the limit is 100"),
        (" padded", "whitespace"),
        ("..", "not allowed"),
    ],
)
def test_bad_class_names_are_refused(store_backend, location, name, match):
    refused(store_backend, location, lambda s: s.register(name, [shot(1, 1)]), match)


def test_long_name_within_limit_is_fine(store_backend):
    with open_store(store_backend.new(), FP) as store:
        assert store.register("Latin A é ü " + "x" * 88, [shot(1, 1)]).shots == 1


def test_duplicate_register_is_refused(store_backend, location):
    refused(
        store_backend,
        location,
        lambda s: s.register("cat", [shot(9, 9)]),
        "already registered; add images to it with add_shots",
    )


def test_zero_shots_are_refused(store_backend, location):
    refused(store_backend, location, lambda s: s.register("bird", []), "at least one support image")
    refused(store_backend, location, lambda s: s.add_shots("cat", []), "no support images")


def test_unknown_class_is_refused(store_backend, location):
    refused(store_backend, location, lambda s: s.remove("bird"), "no class 'bird'")
    refused(store_backend, location, lambda s: s.add_shots("bird", [shot(1, 1)]), "no class 'bird'")


def test_mismatched_embeddings_are_refused(store_backend, location):
    refused(store_backend, location, lambda s: s.register("bird", [shot(1, 1, 1)]), "this store holds")
    refused(
        store_backend,
        location,
        lambda s: s.register("bird", [shot(1, 1), shot(1, 1, local=[1])]),
        "this store holds",
    )
    refused(store_backend, location, lambda s: s.register("bird", [shot(1, np.nan)]), "NaN")


def test_register_many_is_all_or_nothing(store_backend, location):
    # "ant" would be fine, "dog" exists: neither is stored
    refused(
        store_backend,
        location,
        lambda s: s.register_many({"ant": [shot(1, 1)], "dog": [shot(2, 2)]}),
        "'dog' is already",
    )


def test_fingerprint_mismatch_is_refused(store_backend, location):
    before = store_backend.state(location)
    with pytest.raises(StoreError, match=r"never mixed.*Re-embed"):
        open_store(location, OTHER_FP)
    assert store_backend.state(location) == before


def test_not_a_store(tmp_path):
    text = tmp_path / "notes.db"
    text.write_text("just some text, long enough to look like a file\n")
    with pytest.raises(StoreError, match="not a distilshot support store"):
        SupportStore(text, FP)
    with pytest.raises(StoreError, match="not a distilshot support store"):
        SupportStore(tmp_path, FP)
    foreign = tmp_path / "other.sqlite"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    before = foreign.read_bytes()
    with pytest.raises(StoreError, match="SQLite file but not a distilshot support store"):
        SupportStore(foreign, FP)
    assert foreign.read_bytes() == before  # not switched to WAL or otherwise touched


def test_newer_schema_is_refused(path):
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="upgrade distilshot"):
        SupportStore(path, FP)


def test_missing_store_needs_a_model(tmp_path):
    with pytest.raises(StoreError, match="no support store"):
        SupportStore(tmp_path / "absent.db")
    assert not (tmp_path / "absent.db").exists()
    with pytest.raises(StoreError, match=r"folder .* does not exist"):
        SupportStore(tmp_path / "no" / "such.db", FP)


def test_without_fingerprint_list_and_remove_but_not_add(location):
    with open_store(location) as store:
        assert store.fingerprint == FP
        store.remove("dog")
        assert [c.name for c in store.classes()] == ["cat"]
        with pytest.raises(StoreError, match="opened without a bundle"):
            store.add_shots("cat", [shot(1, 1)])


def test_add_shots_updates_the_prototype_and_cache(location):
    with open_store(location, FP) as store:
        first = store.prototypes()
        assert store.prototypes() is first  # cached while unchanged
        info = store.add_shots("cat", [shot(5, 3)])
        assert (info.name, info.shots) == ("cat", 3)
        labels, means = store.prototypes()
        assert np.allclose(means["global"][labels.index("cat")], [3, 5 / 3])
        store.remove("cat")
        labels, means = store.prototypes()
        assert labels == ["dog"] and means["global"].shape == (1, 2)


def test_changes_by_another_connection_invalidate_the_cache(location):
    with open_store(location, FP) as reader, open_store(location, FP) as writer:
        assert reader.prototypes()[0] == ["cat", "dog"]
        writer.register("ant", [shot(7, 7)])
        assert reader.prototypes()[0] == ["ant", "cat", "dog"]


def test_remove_deletes_shots_embeddings_and_prototype(store_backend, location):
    with open_store(location, FP) as store:
        store.remove("cat")
    for table, expected in (("shots", 1), ("embeddings", 1), ("prototypes", 1), ("classes", 1)):
        assert store_backend.count(location, table) == expected, table


def test_in_memory_store_and_two_outputs():
    with SupportStore(None, FP) as store:
        store.register("a", [shot(1, 1, local=[0, 0, 2]), shot(3, 1, local=[2, 0, 0])])
        labels, means = store.prototypes()
        assert labels == ["a"]
        assert np.array_equal(means["local"], [[1, 0, 1]]) and np.array_equal(means["global"], [[2, 1]])
    with pytest.raises(StoreError, match="no support store"):
        SupportStore(None)


# -- class names: one Unicode form, nothing invisible -------------------------------------------------

CAFE_NFC, CAFE_NFD = "caf\u00e9", "cafe\u0301"


def test_names_differing_only_by_normalisation_are_one_class(location):
    with open_store(location, FP) as store:
        assert store.register(CAFE_NFD, [shot(1, 1)]).name == CAFE_NFC  # stored composed
        with pytest.raises(StoreError, match="already registered"):
            store.register(CAFE_NFC, [shot(2, 2)])
        with pytest.raises(StoreError, match="same name once Unicode-normalised"):
            store.register_many({"\u00c5ngstr\u00f6m": [shot(1, 1)], "A\u030angstro\u0308m": [shot(1, 1)]})
        assert store.add_shots(CAFE_NFC, [shot(3, 3)]).name == CAFE_NFC  # either spelling finds it
        assert [s.source for s in store.shots(CAFE_NFD)] == ["x.png", "x.png"]
        assert store.remove_shot(CAFE_NFD, store.shots(CAFE_NFC)[0].id).name == CAFE_NFC
        store.remove(CAFE_NFD)
        assert [c.name for c in store.classes()] == ["cat", "dog"]


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("evil\u202etxt.png", "202E"),  # right-to-left override
        ("ca\u200bt", "200B"),  # zero-width space: would look like "cat"
        ("\ufeffcat", "FEFF"),  # byte order mark
        ("dog\u2028", "2028"),  # line separator
        ("priv\ue000", "E000"),  # private use
        ("un\u0378assigned", "0378"),  # unassigned
        ("half\ud800", "D800"),  # lone surrogate
    ],
)
def test_invisible_and_direction_characters_are_refused(store_backend, location, name, code):
    refused(
        store_backend,
        location,
        lambda s: s.register(name, [shot(1, 1)]),
        f"invisible or direction-changing.*U\\+{code}",
    )


def test_a_name_stored_before_normalisation_is_still_found(store_backend, location):
    # as an older distilshot stored it
    store_backend.sql(location, "UPDATE classes SET name = ? WHERE name = 'dog'", (CAFE_NFD,))
    with open_store(location, FP) as store:
        assert [s.source for s in store.shots(CAFE_NFD)] == ["x.png"]
        store.remove(CAFE_NFD)
        assert [c.name for c in store.classes()] == ["cat"]


# -- the bundle's layout and field lengths --------------------------------------------------------------


def test_with_the_bundle_layout_an_empty_store_refuses_other_embeddings(store_backend):
    with open_store(store_backend.new(), FP, layout={"global": 2, "local": 1}) as store:
        with pytest.raises(StoreError, match=r"embeddings \{'global': 3\}; this bundle makes"):
            store.register("a", [shot(1, 1, 1)])
        with pytest.raises(StoreError, match="this bundle makes"):
            store.register("a", [shot(1, 1)])  # "local" missing
        assert store.register("a", [shot(1, 1, local=[2])]).shots == 1


def test_a_store_of_other_dims_than_the_bundle_is_refused_when_opened(location):
    with pytest.raises(StoreError, match=r"holds embeddings \{'global': 2\}, but this bundle makes"):
        open_store(location, FP, layout={"global": 3})


def test_sources_are_bounded(store_backend, location):
    refused(
        store_backend,
        location,
        lambda s: s.register("bird", [shot(1, 1, source="s" * 256)]),
        "the limit is 255",
    )
    with open_store(location, FP) as store:
        assert store.register("bird", [shot(1, 1, source="s" * 255)]).shots == 1
