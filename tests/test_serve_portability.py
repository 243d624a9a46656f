"""Moving classes between models and machines: re-embedding a store for another bundle, exporting and
importing store files (including hostile ones), removing single shots, and the CLI for all of it. The
store-level tests run on both backends (`store_backend`, `classifier_on`: tests/postgres_fixture.py)."""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from postgres_fixture import classifier_on
from serve_fixtures import encode, make_bundle, noise, solid, write_image

from distilshot.errors import StoreError
from distilshot.serve.classifier import FewShotClassifier
from distilshot.serve.store import ModelMismatchError, SupportStore

RED, BLUE = (250, 0, 0), (0, 0, 250)
DISTILSHOT = Path(sys.executable).parent / "distilshot"


def images_in_every_mode() -> dict[str, Image.Image]:
    base = noise((40, 30), seed=3)
    sixteen = Image.fromarray(np.asarray(base.convert("L"), np.uint16) * 257)
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.arange(40, dtype=np.uint8) * 6, (30, 1))))
    return {
        "rgb": base,
        "grey": base.convert("L"),
        "rgba": rgba,
        "palette": base.convert("P"),
        "cmyk": base.convert("CMYK"),
        "sixteen": sixteen,
        "bilevel": base.convert("1"),
    }


@pytest.mark.parametrize("channels", [1, 3])
def test_reembedding_stored_images_is_exact_for_images_up_to_256_px(store_backend, tmp_path, channels):
    first = make_bundle(tmp_path / "first", channels=channels)
    second = make_bundle(tmp_path / "second", channels=channels, size=12)  # another input size
    store = store_backend.new()
    images = images_in_every_mode()
    with classifier_on(first, store) as clf:
        for name, image in images.items():
            clf.register(name, [image])
    with pytest.raises(ModelMismatchError, match="never mixed"):
        classifier_on(second, store)
    with classifier_on(second, store, reembed=True) as clf:
        labels, means = clf.store.prototypes()
        assert clf.store.fingerprint == clf.manifest.fingerprint()
    with FewShotClassifier(second, tmp_path / "fresh.db") as fresh:  # the originals, embedded directly
        for name, image in images.items():
            fresh.register(name, [image])
        fresh_labels, fresh_means = fresh.store.prototypes()
    assert labels == fresh_labels
    for output in means:
        assert np.array_equal(means[output], fresh_means[output]), output
    with pytest.raises(ModelMismatchError):  # the store now belongs to the second model
        classifier_on(first, store)


def test_reembedding_refuses_copies_smaller_than_the_new_input_and_changes_nothing(store_backend, tmp_path):
    small = make_bundle(tmp_path / "small")
    large = make_bundle(tmp_path / "large", size=100)
    store = store_backend.new()
    with classifier_on(small, store) as clf:
        clf.register("panorama", [noise((2000, 60))])  # kept as 256 x 8: too thin for a 100 px model
    before = store_backend.state(store)
    with pytest.raises(StoreError, match="cannot be re-embedded faithfully"):
        classifier_on(large, store, reembed=True)
    assert store_backend.state(store) == before
    with classifier_on(small, store) as clf:  # still the first model's, untouched
        assert [c.name for c in clf.classes()] == ["panorama"]


def test_another_process_reembedding_stops_this_one_from_mixing(store_backend, tmp_path):
    first, second = make_bundle(tmp_path / "first"), make_bundle(tmp_path / "second", "two")
    store = store_backend.new()
    with classifier_on(first, store) as old:
        old.register("red", [solid(RED)])
        assert old.classify([solid(RED)])[0].label == "red"
        classifier_on(second, store, reembed=True).close()
        with pytest.raises(ModelMismatchError, match="re-embedded for model"):
            old.classify([solid(RED)])
        with pytest.raises(ModelMismatchError, match="re-embedded for model"):
            old.register("blue", [solid(BLUE)])


def test_export_then_import_into_the_same_model_copies_embeddings(store_backend, tmp_path):
    bundle = make_bundle(tmp_path / "b")
    with classifier_on(bundle, store_backend.new()) as a:
        a.register("red", [solid(RED), solid((240, 10, 0))])
        a.register("blue", [solid(BLUE)])
        exported = a.export_store(tmp_path / "copy.db")
        if a.store.path is not None:
            with pytest.raises(StoreError, match="it is the store itself"):
                a.export_store(a.store.path)
        labels, means = a.store.prototypes()
    with SupportStore(exported) as copy:  # an export is itself a store
        assert [(c.name, c.shots) for c in copy.classes()] == [("blue", 1), ("red", 2)]
    with classifier_on(bundle, store_backend.new()) as b:
        b.register("green", [solid((0, 250, 0))])
        assert [c.name for c in b.import_store(exported)] == ["blue", "red"]
        b_labels, b_means = b.store.prototypes()
        with pytest.raises(StoreError, match="already registered"):
            b.import_store(exported)
    rows = [b_labels.index(label) for label in labels]
    assert np.array_equal(b_means["embedding"][rows], means["embedding"])


def hostile(tmp_path: Path, exported: Path, name: str, sql: str) -> Path:
    path = tmp_path / f"{name}.db"
    shutil.copyfile(exported, path)
    with sqlite3.connect(path) as conn:
        conn.execute(sql)
    return path


def test_hostile_store_files_are_refused_and_change_nothing(store_backend, tmp_path):
    bundle = make_bundle(tmp_path / "b")
    with classifier_on(bundle, store_backend.new()) as a:
        a.register("red", [solid(RED)])
        exported = a.export_store(tmp_path / "copy.db")
    cases = {
        hostile(
            tmp_path, exported, "trigger", "CREATE TRIGGER t AFTER INSERT ON classes BEGIN SELECT 1; END"
        ): ("triggers or views"),
        hostile(tmp_path, exported, "badname", "UPDATE classes SET name = 'a/b'"): "path separator",
        hostile(tmp_path, exported, "badimage", "UPDATE shots SET thumbnail = x'89504e47'"): "not an image",
        hostile(tmp_path, exported, "foreign", "PRAGMA application_id = 7"): "not a distilshot support store",
        hostile(tmp_path, exported, "newer", "PRAGMA user_version = 99"): "schema version 99",
    }
    truncated = tmp_path / "truncated.db"
    truncated.write_bytes(exported.read_bytes()[:3000])
    cases[truncated] = "damaged|cannot be read|malformed"
    with classifier_on(bundle, store_backend.new()) as target:
        target.register("blue", [solid(BLUE)])
        for path, match in cases.items():
            with pytest.raises(StoreError, match=match):
                target.import_store(path)
        assert [c.name for c in target.classes()] == ["blue"]


def test_remove_one_shot_updates_the_prototype(store_backend, tmp_path):
    with classifier_on(make_bundle(tmp_path / "b"), store_backend.new()) as clf:
        clf.register("red", [solid(RED), solid((0, 250, 0))], names=["red.png", "green.png"])
        shots = clf.shots("red")
        assert [s.source for s in shots] == ["red.png", "green.png"]
        assert Image.open(io.BytesIO(clf.thumbnail("red", shots[0].id))).getpixel((0, 0)) == RED
        clf.register("blue", [solid(BLUE)])
        before = clf.classify([solid(RED)])[0].logits[0]
        assert clf.remove_shot("red", shots[1].id).shots == 1
        assert clf.classify([solid(RED)])[0].logits[0] > before  # the prototype is red alone now
        with pytest.raises(StoreError, match="remove the class instead"):
            clf.remove_shot("red", shots[0].id)
        with pytest.raises(StoreError, match="has no shot"):
            clf.remove_shot("blue", shots[0].id)


def run(*args: object, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(DISTILSHOT), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert (result.returncode == 0) == ok, result.stderr
    return result


def test_cli_reembed_export_import_and_unknown(tmp_path):
    first, second = make_bundle(tmp_path / "first"), make_bundle(tmp_path / "second", "two")
    write_image(tmp_path / "red.png", solid(RED))
    write_image(tmp_path / "blue.png", solid(BLUE))
    write_image(tmp_path / "green.png", solid((0, 250, 0)))
    run("register", "--bundle", first, "--store", "s.db", "red", "red.png", cwd=tmp_path)
    refused = run(
        "register", "--bundle", second, "--store", "s.db", "blue", "blue.png", cwd=tmp_path, ok=False
    )
    assert "distilshot reembed" in refused.stderr
    run("register", "--bundle", second, "--store", "s.db", "--reembed", "blue", "blue.png", cwd=tmp_path)
    run("export-store", "copy.db", "--store", "s.db", cwd=tmp_path)
    imported = run(
        "import-store", "copy.db", "--bundle", first, "--store", "other.db", "--json", cwd=tmp_path
    )
    assert [c["name"] for c in json.loads(imported.stdout)] == ["blue", "red"]
    out = run(
        "classify", "green.png", "--bundle", first, "--store", "other.db", "--threshold", "-1", cwd=tmp_path
    )
    assert "unknown" in out.stdout
    out = run(
        "classify", "red.png", "--bundle", first, "--store", "other.db", "--threshold", "-1", cwd=tmp_path
    )
    assert "unknown" not in out.stdout and "red" in out.stdout
    bad = tmp_path / "bad.png"
    bad.write_bytes(encode(noise())[:100])
    failed = run("register", "--bundle", first, "--store", "other.db", "x", "bad.png", cwd=tmp_path, ok=False)
    assert "truncated" in failed.stderr
