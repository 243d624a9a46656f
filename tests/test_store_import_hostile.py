"""Store files from elsewhere are checked as a store made by this code would be, and their vectors are
never trusted: a refused import names the problem and changes nothing; an accepted one holds the
embeddings this bundle computes from the stored copies. Each import goes into a store of both backends
(`store_backend`, `classifier_on`: tests/postgres_fixture.py)."""

from __future__ import annotations

import shutil
import sqlite3
import unicodedata
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from postgres_fixture import classifier_on
from serve_fixtures import encode, make_bundle, noise, png_claiming, solid

from distilshot.errors import StoreError
from distilshot.serve.classifier import FewShotClassifier

RED, BLUE = (250, 0, 0), (0, 0, 250)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    """A bundle and an exported store of it with classes "blue" (1 shot) and "red" (2 shots)."""
    root = tmp_path_factory.mktemp("hostile")
    bundle = make_bundle(root / "bundle")
    with FewShotClassifier(bundle, root / "source.db") as source:
        source.register("red", [solid(RED), solid((240, 10, 0))])
        source.register("blue", [solid(BLUE)])
        exported = source.export_store(root / "export.db")
    return bundle, exported


def edited(tmp_path: Path, exported: Path, edit: Callable[[sqlite3.Connection], object]) -> Path:
    path = tmp_path / "edited.db"
    shutil.copyfile(exported, path)
    conn = sqlite3.connect(path)
    edit(conn)
    conn.commit()
    conn.close()
    return path


def sql(statement: str, params: tuple[object, ...] = ()) -> Callable[[sqlite3.Connection], object]:
    return lambda conn: conn.execute(statement, params)


def refused_and_unchanged(bundle: Path, target: str, path: Path, match: str) -> None:
    """Importing `path` into the store at `target` is refused with `match` and leaves it as it was, and
    the store still registers and classifies afterwards."""
    with classifier_on(bundle, target) as clf:
        before = [(c.name, c.shots) for c in clf.classes()]
        with pytest.raises(StoreError, match=match):
            clf.import_store(path)
        assert [(c.name, c.shots) for c in clf.classes()] == before
        clf.register("green", [solid((0, 250, 0))])
        assert clf.classify([solid((0, 240, 10))])[0].label == "green"


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (
            sql("UPDATE embeddings SET dim = 3, vector = substr(vector, 1, 12)"),
            r"claims this bundle's model but holds embeddings \{'embedding': 3\}",
        ),
        (sql("UPDATE embeddings SET output = 'other'"), r"holds embeddings \{'other': 4\}"),
        (
            sql("INSERT INTO embeddings SELECT shot_id, 'extra', dim, vector FROM embeddings"),
            r"holds embeddings \{'embedding': 4, 'extra': 4\}",
        ),
        (sql("DELETE FROM embeddings WHERE shot_id = 1"), "shot 1 of class 'red' has no embeddings"),
        (
            sql("UPDATE embeddings SET dim = 3, vector = substr(vector, 1, 12) WHERE shot_id = 1"),
            r"shot 1 of class 'red' has embeddings \{'embedding': 3\}; the file's other shots have",
        ),
        (sql("UPDATE embeddings SET vector = x'00' WHERE shot_id = 2"), "not 4 float32 values"),
    ],
    ids=["3-d", "renamed output", "extra output", "no embeddings", "mixed dims", "short vector"],
)
@pytest.mark.parametrize("target", ["empty", "with a class"])
def test_embeddings_not_of_this_bundle_are_refused(setup, store_backend, tmp_path, edit, match, target):
    bundle, exported = setup
    store = store_backend.new()
    if target == "with a class":
        with classifier_on(bundle, store) as clf:
            clf.register("yellow", [solid((250, 250, 0))])
    refused_and_unchanged(bundle, store, edited(tmp_path, exported, edit), match)


def test_a_class_carrying_another_class_vectors_gets_its_own_embeddings(setup, store_backend, tmp_path):
    bundle, exported = setup
    # every shot of "red" carries the vector of "blue"'s shot
    path = edited(
        tmp_path,
        exported,
        sql(
            "UPDATE embeddings SET vector = (SELECT e.vector FROM embeddings e JOIN shots s ON s.id = "
            "e.shot_id JOIN classes c ON c.id = s.class_id WHERE c.name = 'blue')"
        ),
    )
    with classifier_on(bundle, store_backend.new()) as clf:
        assert [c.name for c in clf.import_store(path)] == ["blue", "red"]
        labels, means = clf.store.prototypes()
        assert clf.classify([solid(RED)])[0].label == "red"
    with FewShotClassifier(bundle, tmp_path / "fresh.db") as fresh:
        fresh.register("red", [solid(RED), solid((240, 10, 0))])
        fresh.register("blue", [solid(BLUE)])
        fresh_labels, fresh_means = fresh.store.prototypes()
    assert labels == fresh_labels
    assert np.array_equal(means["embedding"], fresh_means["embedding"])


def float_tiff(size: tuple[int, int]) -> bytes:
    return encode(Image.frombuffer("F", (size[0], 1), bytes(4 * size[0])).resize(size), "TIFF")


@pytest.mark.parametrize(
    ("copy", "match"),
    [
        (lambda: float_tiff((6000, 6600)), "must be a PNG image"),
        (lambda: png_claiming(8000, 5000), "at most 256 px on its longest side, not 8000x5000"),
        (lambda: encode(noise((300, 200))), "not 300x200"),
        (lambda: encode(noise((64, 48)).convert("RGBA")), "8-bit grey or RGB PNG, not PNG 'RGBA'"),
        (lambda: encode(Image.new("I;16", (64, 48))), "not PNG 'I;16'"),
        (lambda: encode(noise((64, 48)), "JPEG"), "must be a PNG image"),
    ],
    ids=["float tiff", "40 Mpixel png", "300 px png", "rgba png", "16-bit png", "jpeg"],
)
def test_stored_copies_must_be_pngs_as_this_code_stores_them(setup, store_backend, tmp_path, copy, match):
    bundle, exported = setup
    path = edited(tmp_path, exported, sql("UPDATE shots SET thumbnail = ? WHERE id = 2", params=(copy(),)))
    refused_and_unchanged(bundle, store_backend.new(), path, f"shot 2 of class 'red'.*{match}")


@pytest.mark.parametrize("length", [256, 5_000_000])
def test_long_sources_are_refused(setup, store_backend, tmp_path, length):
    bundle, exported = setup
    path = edited(tmp_path, exported, sql("UPDATE shots SET source = ? WHERE id = 3", params=("x" * length,)))
    match = "shot 3 of class 'blue': its source must be text of at most 255 characters, "
    match += f"not str of length {length}$"
    refused_and_unchanged(bundle, store_backend.new(), path, match)


def test_a_source_of_255_characters_is_imported(setup, store_backend, tmp_path):
    bundle, exported = setup
    path = edited(tmp_path, exported, sql("UPDATE shots SET source = ? WHERE id = 3", params=("y" * 255,)))
    with classifier_on(bundle, store_backend.new()) as clf:
        clf.import_store(path)
        assert [s.source for s in clf.shots("blue")] == ["y" * 255]


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("x" * 101, "the limit is 100"),
        ("a\u202eb", "U\\+202E at position 1"),
        ("zero\u200bwidth", "U\\+200B"),
    ],
)
def test_class_names_are_checked_like_new_ones(setup, store_backend, tmp_path, name, match):
    bundle, exported = setup
    path = edited(tmp_path, exported, sql("UPDATE classes SET name = ? WHERE name = 'red'", params=(name,)))
    refused_and_unchanged(bundle, store_backend.new(), path, match)


def test_names_equal_once_normalised_are_refused_and_nfd_is_stored_as_nfc(setup, store_backend, tmp_path):
    bundle, exported = setup
    composed, decomposed = "caf\u00e9", unicodedata.normalize("NFD", "caf\u00e9")

    def rename(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE classes SET name = ? WHERE name = 'red'", (composed,))
        conn.execute("UPDATE classes SET name = ? WHERE name = 'blue'", (decomposed,))

    both = edited(tmp_path, exported, rename)
    refused_and_unchanged(bundle, store_backend.new(), both, "same name once Unicode-normalised")
    one = edited(
        tmp_path, exported, sql("UPDATE classes SET name = ? WHERE name = 'red'", params=(decomposed,))
    )
    with classifier_on(bundle, store_backend.new()) as clf:
        assert [c.name for c in clf.import_store(one)] == ["blue", composed]
        with pytest.raises(StoreError, match="already registered"):
            clf.register(composed, [solid(RED)])


def stale_index(path: Path) -> None:
    """Moves a shot to another class behind the back of index shots_by_class: the table is sound, so
    PRAGMA quick_check passes, but the index no longer matches it, which only integrity_check sees."""
    conn = sqlite3.connect(path)
    saved = conn.execute(
        "SELECT type, name, tbl_name, rootpage, sql FROM sqlite_master WHERE name = 'shots_by_class'"
    ).fetchone()
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute("DELETE FROM sqlite_master WHERE name = 'shots_by_class'")
    conn.commit()
    conn.close()
    conn = sqlite3.connect(path)  # a fresh schema without the index, so the update leaves it alone
    conn.execute("UPDATE shots SET class_id = (SELECT id FROM classes WHERE name = 'blue') WHERE id = 2")
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute("INSERT INTO sqlite_master VALUES (?, ?, ?, ?, ?)", saved)
    conn.commit()
    conn.close()


def test_integrity_check_not_just_quick_check(setup, store_backend, tmp_path):
    bundle, exported = setup
    path = tmp_path / "stale.db"
    shutil.copyfile(exported, path)
    stale_index(path)
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA quick_check").fetchall() == [("ok",)]
        assert check.execute("PRAGMA integrity_check").fetchall() != [("ok",)]
    refused_and_unchanged(bundle, store_backend.new(), path, "is damaged: .*shots_by_class")


def test_an_invalid_fingerprint_is_refused(setup, store_backend, tmp_path):
    bundle, exported = setup
    path = edited(
        tmp_path,
        exported,
        sql("UPDATE metadata SET value = ? WHERE key = 'fingerprint'", params=("x" * 10**6,)),
    )
    refused_and_unchanged(bundle, store_backend.new(), path, "no valid model fingerprint")


def test_one_bad_class_refuses_the_whole_import(setup, store_backend, tmp_path):
    bundle, exported = setup
    path = edited(
        tmp_path,
        exported,
        sql("UPDATE shots SET thumbnail = ? WHERE id = 3", params=(encode(noise((300, 10))),)),
    )
    target = store_backend.new()
    refused_and_unchanged(bundle, target, path, "class 'blue'")
    with classifier_on(bundle, target) as clf:
        assert [c.name for c in clf.classes()] == ["green"]  # "red" was fine but not imported alone
