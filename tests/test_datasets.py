"""The dataset layer: benchmark protocols on the real data, the decode rule, the array cache, downloads,
folder datasets and miniImageNet's bring-your-own images."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import pickle
import re
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distilshot.errors import DatasetMissingError, DistilshotError, ImageError
from distilshot.train.data import (
    DATASETS,
    DatasetInfo,
    ImageSet,
    dataset_info,
    decode_image,
    decode_pool,
    folder,
    load_split,
    miniimagenet,
    omniglot,
)
from distilshot.train.data.cifar import cifar100
from distilshot.train.data.download import ARCHIVES, Archive, locate, unpack
from distilshot.train.data.imageset import channel_stats
from distilshot.train.data.splitfiles import SPLITS, class_list

SPLIT_NAMES = ("train", "val", "test", "trainval")


def per_class(images: ImageSet) -> np.ndarray:
    return np.bincount(images.labels, minlength=images.num_classes)


def write_image(path: Path, seed: int, size: tuple[int, int] = (24, 20)) -> Path:
    """A random RGB image (width, height) saved in the format its suffix names."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("DISTILSHOT_CACHE", str(cache))
    return cache


@pytest.fixture
def no_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_cache: Path) -> Path:
    """An empty DISTILSHOT_DATA and an empty cache."""
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("DISTILSHOT_DATA", str(data))
    return data


# --- benchmark protocols on the real data ------------------------------------------------------------


def test_omniglot_lake_protocol() -> None:
    sets = {split: load_split("omniglot", split) for split in SPLIT_NAMES}
    train, val, test, trainval = (set(sets[s].class_names) for s in SPLIT_NAMES)
    assert len(trainval) == 964 and len(test) == 659
    assert {n.split("/")[0] for n in val} == set(omniglot.VAL_ALPHABETS)
    assert train | val == trainval and not train & val and not trainval & test
    assert len({n.split("/")[0] for n in trainval}) == 30 and len({n.split("/")[0] for n in test}) == 20
    for split, images in sets.items():
        assert images.name == f"omniglot/{split}"
        assert images.images.shape[1:] == (28, 28, 1) and images.images.dtype == np.uint8
        assert images.labels.dtype == np.int64 and (per_class(images) == 20).all()


def test_omniglot_vinyals_protocol() -> None:
    sets = {split: load_split("omniglot-vinyals", split) for split in SPLIT_NAMES}
    characters = {s: {n.rsplit("/", 1)[0] for n in sets[s].class_names} for s in SPLIT_NAMES}
    for split, count in {"train": 1028, "val": 172, "test": 423, "trainval": 1200}.items():
        assert sets[split].num_classes == 4 * count and len(characters[split]) == count
        assert sets[split].class_names == tuple(class_list("omniglot-vinyals", split))
        assert (per_class(sets[split]) == 20).all() and sets[split].images.shape[1:] == (28, 28, 1)
    assert not characters["train"] & characters["val"]
    assert not characters["trainval"] & characters["test"]


def test_vinyals_classes_are_rotated_omniglot_characters() -> None:
    vinyals = load_split("omniglot-vinyals", "test")
    lake = {**by_class(load_split("omniglot", "trainval")), **by_class(load_split("omniglot", "test"))}
    classes = by_class(vinyals)
    for character in sorted({n.rsplit("/", 1)[0] for n in vinyals.class_names})[:5]:
        upright = classes[f"{character}/rot000"]
        assert np.array_equal(upright, lake[character])
        for k in (1, 2, 3):
            rotated = classes[f"{character}/rot{90 * k:03d}"]
            assert np.array_equal(rotated, np.rot90(upright, k, axes=(1, 2)))
            assert not np.array_equal(rotated, upright)


def by_class(images: ImageSet) -> dict[str, np.ndarray]:
    return {n: images.images[rows] for n, rows in zip(images.class_names, images.class_rows(), strict=True)}


@pytest.mark.parametrize(("name", "counts"), [("cifar-fs", (64, 16, 20)), ("fc100", (60, 20, 20))])
def test_cifar_benchmarks(name: str, counts: tuple[int, int, int]) -> None:
    sets = {split: load_split(name, split) for split in SPLIT_NAMES}
    for split, count in zip(("train", "val", "test"), counts, strict=True):
        assert sets[split].num_classes == count
        assert sets[split].class_names == tuple(class_list(name, split))
    assert sets["trainval"].class_names == sets["train"].class_names + sets["val"].class_names
    names = [set(sets[s].class_names) for s in ("train", "val", "test")]
    assert len(names[0] | names[1] | names[2]) == sum(counts) == 100
    for images in sets.values():
        assert (per_class(images) == 600).all() and images.images.shape[1:] == (32, 32, 3)


@pytest.fixture(scope="module")
def cifar_pickles() -> dict[str, dict]:
    folder = locate(ARCHIVES["cifar-100"])
    parts = {}
    for name in ("train", "test", "meta"):
        with open(folder / name, "rb") as f:
            parts[name] = pickle.load(f, encoding="latin1")
    return parts


def test_cifar_images_are_the_pickled_pixels_train_then_test(cifar_pickles: dict[str, dict]) -> None:
    images = load_split("cifar-fs", "test")
    fine = cifar_pickles["meta"]["fine_label_names"]
    for name in images.class_names[:3]:
        expected = [
            cifar_pickles[part]["data"][np.asarray(cifar_pickles[part]["fine_labels"]) == fine.index(name)]
            for part in ("train", "test")
        ]
        hwc = np.concatenate(expected).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        assert np.array_equal(images.images[images.labels == images.class_names.index(name)], hwc)


def test_fc100_splits_follow_its_superclasses(cifar_pickles: dict[str, dict]) -> None:
    meta, train = cifar_pickles["meta"], cifar_pickles["train"]
    coarse_of = {
        meta["fine_label_names"][f]: meta["coarse_label_names"][c]
        for f, c in zip(train["fine_labels"], train["coarse_labels"], strict=True)
    }
    superclasses = json.loads((SPLITS / "fc100" / "superclasses.json").read_text())
    for split in ("train", "val", "test"):
        assert {coarse_of[n] for n in class_list("fc100", split)} == set(superclasses[split])


@pytest.mark.parametrize("name", ["omniglot", "omniglot-vinyals", "cifar-fs", "fc100"])
def test_mean_std_constants_are_the_train_split_statistics(name: str) -> None:
    mean, std = channel_stats(load_split(name, "train").images)
    info = dataset_info(name)
    np.testing.assert_allclose(info.mean, mean, atol=1e-6)
    np.testing.assert_allclose(info.std, std, atol=1e-6)


def test_cifar100_statistics_match_the_published_ones() -> None:
    mean, std = channel_stats(cifar100(32).images)
    np.testing.assert_allclose(mean, (0.5071, 0.4865, 0.4409), atol=1e-3)
    np.testing.assert_allclose(std, (0.2673, 0.2564, 0.2762), atol=1e-3)


def test_channel_stats_is_the_plain_mean_and_std() -> None:
    images = np.random.default_rng(0).integers(0, 256, (7, 5, 6, 3), dtype=np.uint8)
    mean, std = channel_stats(images)
    np.testing.assert_allclose(mean, (images / 255).mean(axis=(0, 1, 2)), atol=1e-12)
    np.testing.assert_allclose(std, (images / 255).std(axis=(0, 1, 2)), atol=1e-12)


def test_dataset_info_of_each_benchmark() -> None:
    defaults = {
        "omniglot": (28, 1),
        "omniglot-vinyals": (28, 1),
        "cifar-fs": (32, 3),
        "fc100": (32, 3),
        "mini-imagenet": (84, 3),
    }
    assert set(DATASETS) == set(defaults)
    for name, (size, channels) in defaults.items():
        info = dataset_info(name)
        assert isinstance(info, DatasetInfo) and info.name == name
        assert (info.image_size, info.channels) == (size, channels)
        assert len(info.mean) == len(info.std) == channels and all(0 < s < 1 for s in info.std)
        assert info.splits == SPLIT_NAMES and "\n" not in info.description
        assert re.search(r"et al\.|Lake", info.description) and re.search(
            r"\b(19|20)\d\d\b", info.description
        )
        assert dataset_info(name, image_size=64).image_size == 64


def test_registry_rejects_unknown_names_splits_and_sizes() -> None:
    with pytest.raises(DistilshotError, match=r"unknown dataset 'imagenet'.*omniglot"):
        load_split("imagenet", "train")
    with pytest.raises(DistilshotError, match="no split 'validation'"):
        load_split("omniglot", "validation")
    with pytest.raises(DistilshotError, match="positive integer"):
        dataset_info("omniglot", image_size=0)


# --- ImageSet -------------------------------------------------------------------------------------------


def tiny_set() -> ImageSet:
    images = np.arange(3 * 2 * 2, dtype=np.uint8).reshape(3, 2, 2, 1)
    return ImageSet("tiny", images, np.array([1, 0, 1], dtype=np.int64), ("a", "b"))


def test_with_rotated_classes_rotates_counter_clockwise() -> None:
    rotated = tiny_set().with_rotated_classes()
    assert rotated.class_names == (
        "a",
        "b",
        "a/rot090",
        "b/rot090",
        "a/rot180",
        "b/rot180",
        "a/rot270",
        "b/rot270",
    )
    assert rotated.labels.tolist() == [1, 0, 1, 3, 2, 3, 5, 4, 5, 7, 6, 7]
    # Image 0 is [[0, 1], [2, 3]]: a quarter turn counter-clockwise brings the right column to the top.
    assert rotated.images[3, ..., 0].tolist() == [[1, 3], [0, 2]]
    assert rotated.images[6, ..., 0].tolist() == [[3, 2], [1, 0]]
    assert rotated.images[9, ..., 0].tolist() == [[2, 0], [3, 1]]


def test_subset_relabels_in_the_given_order() -> None:
    subset = tiny_set().subset([1, 0])
    assert subset.class_names == ("b", "a") and subset.labels.tolist() == [0, 0, 1]
    assert subset.images[:, 0, 0, 0].tolist() == [0, 8, 4]
    with pytest.raises(ValueError, match="distinct"):
        tiny_set().subset([0, 0])


def test_imageset_checks_its_arrays() -> None:
    images = np.zeros((2, 4, 4, 1), np.uint8)
    with pytest.raises(ValueError, match="int64"):
        ImageSet("x", images, np.array([0, 1], dtype=np.int32), ("a", "b"))
    with pytest.raises(ValueError, match="no images"):
        ImageSet("x", images, np.array([0, 0], dtype=np.int64), ("a", "b"))
    with pytest.raises(ValueError, match="uint8"):
        ImageSet("x", images.astype(np.float32), np.array([0, 1], dtype=np.int64), ("a", "b"))


# --- the decode rule ------------------------------------------------------------------------------------


def test_decode_composites_rgba_over_white(tmp_path: Path) -> None:
    pixels = np.array([[[255, 0, 0, 0], [10, 20, 30, 255], [0, 0, 255, 128]]], dtype=np.uint8)
    Image.fromarray(pixels, "RGBA").save(tmp_path / "a.png")
    rgb = decode_image(tmp_path / "a.png", 1, 3)  # 3x1 -> shorter side is already 1: crop the middle
    assert rgb.tolist() == [[[10, 20, 30]]]
    full = decode_image(Image.fromarray(np.repeat(pixels, 3, axis=0), "RGBA"), 3, 3)
    assert full[0].tolist() == [[255, 255, 255], [10, 20, 30], [127, 127, 255]]
    gray = decode_image(Image.fromarray(np.array([[[0, 0], [0, 255], [200, 255]]], np.uint8), "LA"), 1, 1)
    assert gray.shape == (1, 1, 1) and gray.item() == 0
    transparent = decode_image(Image.fromarray(np.array([[[0, 0]]], np.uint8), "LA"), 1, 1)
    assert transparent.item() == 255


def test_decode_palette_with_transparency(tmp_path: Path) -> None:
    palette = Image.new("P", (2, 2))
    palette.putpalette([255, 0, 0, 0, 0, 255])
    palette.putpixel((1, 0), 1)
    for suffix in ("png", "gif"):
        palette.save(tmp_path / f"p.{suffix}", transparency=0)
        decoded = decode_image(tmp_path / f"p.{suffix}", 2, 3)
        assert decoded[0].tolist() == [[255, 255, 255], [0, 0, 255]], suffix


def test_decode_wide_modes_by_their_range(tmp_path: Path) -> None:
    wide = np.repeat(np.array([[0, 128, 129, 257 * 100, 65535]], dtype=np.uint16), 5, axis=0)
    Image.fromarray(wide).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as opened:
        assert opened.mode.startswith("I;16")
    expected = [0, 0, 1, 100, 255]
    assert decode_image(tmp_path / "deep.png", 5, 1)[0, :, 0].tolist() == expected
    int32 = np.repeat(np.array([[-5, 128, 129, 257 * 100, 70000]], dtype=np.int32), 5, axis=0)
    assert decode_image(Image.fromarray(int32, "I"), 5, 1)[0, :, 0].tolist() == expected
    floats = np.repeat(np.array([[-1.0, np.nan, 99.5, 100.4, 300.0]], dtype=np.float32), 5, axis=0)
    assert decode_image(Image.fromarray(floats, "F"), 5, 3)[0, :, 0].tolist() == [0, 0, 100, 100, 255]


def test_decode_cmyk_and_bilevel() -> None:
    cmyk = Image.new("CMYK", (2, 2), (0, 0, 0, 0))
    cmyk.putpixel((1, 0), (255, 0, 0, 0))
    assert decode_image(cmyk, 2, 3)[0].tolist() == [[255, 255, 255], [0, 255, 255]]
    bilevel = Image.new("1", (2, 2), 1)
    bilevel.putpixel((0, 0), 0)
    assert decode_image(bilevel, 2, 1)[..., 0].tolist() == [[0, 255], [255, 255]]
    rgb = Image.fromarray(np.random.default_rng(1).integers(0, 256, (4, 4, 3), dtype=np.uint8))
    assert np.array_equal(decode_image(rgb, 4, 1)[..., 0], np.asarray(rgb.convert("L")))


def test_decode_applies_exif_orientation(tmp_path: Path) -> None:
    pixels = np.zeros((20, 40, 3), np.uint8)  # 40 wide, 20 tall
    pixels[:, :20] = (250, 0, 0)
    pixels[:10, 20:] = (0, 0, 250)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(pixels).save(tmp_path / "plain.jpg", quality=95)
    Image.fromarray(pixels).save(tmp_path / "turned.jpg", quality=95, exif=exif)
    with Image.open(tmp_path / "turned.jpg") as opened:
        assert opened.size == (40, 20)
    plain = decode_image(tmp_path / "plain.jpg", 20, 3)
    turned = decode_image(tmp_path / "turned.jpg", 20, 3)
    assert np.array_equal(turned, np.rot90(plain, k=-1))
    assert not np.array_equal(turned, plain)


# 45 * 10 / 20 = 22.5 rounds (Python's round) to 22, crop offset (22 - 10) // 2 = 6; a 23 px long side needs
# no resize and has the odd margin 13, so the offset is 13 // 2 = 6.
@pytest.mark.parametrize(
    ("width", "height", "resized"),
    [(45, 20, (22, 10)), (20, 45, (10, 22)), (23, 10, (23, 10)), (10, 23, (10, 23))],
)
def test_decode_resizes_the_shorter_side_and_center_crops(
    width: int, height: int, resized: tuple[int, int]
) -> None:
    gradient = (np.add.outer(np.arange(height) * 3, np.arange(width) * 5) % 256).astype(np.uint8)
    image = Image.fromarray(gradient, "L")
    expected = np.asarray(image.resize(resized, Image.Resampling.BILINEAR))
    expected = expected[:, 6:16] if width > height else expected[6:16, :]
    assert np.array_equal(decode_image(image, 10, 1)[..., 0], expected)


def test_decode_keeps_pixels_of_an_image_already_at_size() -> None:
    pixels = np.random.default_rng(2).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    assert np.array_equal(decode_image(Image.fromarray(pixels), 8, 3), pixels)


def test_decode_rejects_a_file_that_is_not_an_image(tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ImageError, match=r"notes\.png"):
        decode_image(tmp_path / "notes.png", 8, 3)


def test_parallel_decode_matches_serial(monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = np.random.default_rng(3).integers(0, 256, (600, 12, 16, 3), dtype=np.uint8)
    serial = decode_pool.decode_many(arrays, 8, 3, "serial")
    monkeypatch.setattr(decode_pool, "PARALLEL_MIN", 2)
    assert np.array_equal(decode_pool.decode_many(arrays, 8, 3, "parallel"), serial)


# --- the decoded-array cache ----------------------------------------------------------------------------


def forbid_decoding(monkeypatch: pytest.MonkeyPatch, *modules: object) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded although the cache should have answered")

    for module in modules:
        monkeypatch.setattr(module, "decode_many", fail)


def test_cache_answers_the_second_load_of_real_data(monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_split("omniglot", "test")
    forbid_decoding(monkeypatch, omniglot)
    again = load_split("omniglot", "test")
    assert np.array_equal(first.images, again.images) and np.array_equal(first.labels, again.labels)
    assert first.class_names == again.class_names


def test_cache_hit_is_identical_and_a_changed_source_invalidates(
    tmp_path: Path, empty_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "animals"
    for c, name in enumerate(("ant", "bee", "cat", "dog", "eel")):
        for i in range(2):
            write_image(root / name / f"{i}.png", seed=10 * c + i)
    first = load_split(f"folder:{root}", "train")
    with monkeypatch.context() as patch:
        forbid_decoding(patch, folder)
        hit = load_split(f"folder:{root}", "train")
    assert np.array_equal(first.images, hit.images) and first.class_names == hit.class_names
    assert np.array_equal(first.labels, hit.labels)

    changed = write_image(root / "bee" / "1.png", seed=99)
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    calls = []
    real = folder.decode_many
    monkeypatch.setattr(folder, "decode_many", lambda *a, **k: calls.append(a) or real(*a, **k))
    fresh = load_split(f"folder:{root}", "train")
    assert len(calls) == 1
    row = int(np.flatnonzero(fresh.labels == fresh.class_names.index("bee"))[1])
    assert np.array_equal(fresh.images[row], decode_image(changed, 84, 3))
    assert not np.array_equal(fresh.images[row], first.images[row])
    assert len(list((empty_cache / "arrays").glob("folder-animals-*-train-84px-3ch-*.npz"))) == 1


def test_corrupt_cache_entry_is_rebuilt(tmp_path: Path, empty_cache: Path) -> None:
    root = tmp_path / "shapes"
    for c in range(3):
        write_image(root / f"class{c}" / "x.png", seed=c)
    first = load_split(f"folder:{root}", "test")
    (entry,) = (empty_cache / "arrays").glob("*-test-*.npz")
    entry.write_bytes(b"garbage")
    assert np.array_equal(load_split(f"folder:{root}", "test").images, first.images)


# --- missing data and downloads -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "archive"), [("omniglot", "omniglot-evaluation"), ("cifar-fs", "cifar-100")]
)
def test_missing_data_offline_names_paths_and_url(
    no_data: Path, empty_cache: Path, name: str, archive: str
) -> None:
    with pytest.raises(DatasetMissingError) as caught:
        load_split(name, "test")
    message, target = str(caught.value), ARCHIVES[archive].target
    for expected in (
        str(no_data / target),
        str(empty_cache / "data" / target),
        ARCHIVES[archive].url,
        ARCHIVES[archive].md5,
        "DISTILSHOT_DATA",
        "DISTILSHOT_OFFLINE",
    ):
        assert expected in message


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buffer.getvalue()


def png_bytes(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((6, 6), seed, np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch, no_data: Path) -> None:
    monkeypatch.delenv("DISTILSHOT_OFFLINE")


def test_download_verifies_and_unpacks_into_the_cache(
    tmp_path: Path, empty_cache: Path, online: None
) -> None:
    data = zip_bytes({"images_evaluation/Alpha/character01/0001_01.png": png_bytes(7)})
    served = tmp_path / "served" / "images_evaluation.zip"
    served.parent.mkdir()
    served.write_bytes(data)
    archive = Archive(served.as_uri(), hashlib.md5(data).hexdigest(), "omniglot/images_evaluation")
    path = locate(archive)
    assert path == empty_cache / "data" / "omniglot" / "images_evaluation"
    assert (path / "Alpha" / "character01" / "0001_01.png").read_bytes() == png_bytes(7)
    assert (empty_cache / "downloads" / "images_evaluation.zip").read_bytes() == data
    assert sorted(p.name for p in path.parent.iterdir()) == ["images_evaluation"]
    served.unlink()
    assert locate(archive) == path  # found now, no second download


def test_download_with_a_bad_checksum_is_deleted_and_refused(
    tmp_path: Path, empty_cache: Path, online: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = tmp_path / "images_evaluation.zip"
    served.write_bytes(zip_bytes({"images_evaluation/A/character01/1.png": png_bytes(1)}))
    real = ARCHIVES["omniglot-evaluation"]
    monkeypatch.setitem(ARCHIVES, "omniglot-evaluation", Archive(served.as_uri(), real.md5, real.target))
    with pytest.raises(DatasetMissingError, match=f"md5 is {hashlib.md5(served.read_bytes()).hexdigest()}"):
        load_split("omniglot", "test")
    assert list((empty_cache / "downloads").iterdir()) == []
    assert not (empty_cache / "data" / "omniglot").exists()


def test_failed_download_says_so(tmp_path: Path, online: None) -> None:
    archive = Archive((tmp_path / "nowhere.zip").as_uri(), "0" * 32, "omniglot/images_background")
    with pytest.raises(DatasetMissingError, match=r"downloading it failed.*nowhere\.zip"):
        locate(archive)


@pytest.mark.parametrize("kind", ["zip-parent", "zip-absolute", "tar-parent", "tar-symlink"])
def test_unpack_refuses_unsafe_members(tmp_path: Path, kind: str) -> None:
    archive_file = tmp_path / "evil.archive"
    if kind.startswith("zip"):
        evil = "top/../../evil.txt" if kind == "zip-parent" else "/tmp/evil.txt"
        archive_file.write_bytes(zip_bytes({"top/ok.txt": b"ok", evil: b"evil"}))
    else:
        with tarfile.open(archive_file, "w:gz") as t:
            member = tarfile.TarInfo("top/../../evil.txt" if kind == "tar-parent" else "top/link")
            if kind == "tar-symlink":
                member.type, member.linkname = tarfile.SYMTYPE, "/etc/passwd"
            t.addfile(member, io.BytesIO(b""))
    dest = tmp_path / "out" / "top"
    with pytest.raises(DatasetMissingError, match=r"unsafe|not a plain file"):
        unpack(archive_file, dest)
    assert not dest.exists() and not (tmp_path / "evil.txt").exists()
    assert list(dest.parent.iterdir()) == []


# --- folder datasets ------------------------------------------------------------------------------------


def test_folder_with_split_subfolders(tmp_path: Path, empty_cache: Path) -> None:
    root = tmp_path / "pets"
    files = {
        "train/ant": ["a.png", "b.JPG"],
        "train/bee": ["c.jpeg", "d.BMP", "e.gif"],
        "val/cat": ["f.webp"],
        "test/dog": ["g.png"],
        "test/eel": ["h.PNG", "i.jpg"],
    }
    for seed, (cls, names) in enumerate(files.items()):
        for i, name in enumerate(names):
            write_image(root / cls / name, seed=10 * seed + i, size=(30 + i, 25))
    (root / "train" / "ant" / "notes.txt").write_text("not an image")
    (root / "train" / "empty").mkdir()

    info = dataset_info(f"folder:{root}")
    assert (info.name, info.image_size, info.channels) == (f"folder:{root}", 84, 3)
    assert info.splits == SPLIT_NAMES and "train/val/test subfolders" in info.description
    train = load_split(f"folder:{root}", "train")
    assert train.class_names == ("ant", "bee") and per_class(train).tolist() == [2, 3]
    assert train.images.shape == (5, 84, 84, 3)
    assert np.array_equal(train.images[1], decode_image(root / "train" / "ant" / "b.JPG", 84, 3))
    assert info.mean == channel_stats(train.images)[0] and info.std == channel_stats(train.images)[1]
    assert load_split(f"folder:{root}", "trainval").class_names == ("ant", "bee", "cat")
    assert load_split(f"folder:{root}", "test").class_names == ("dog", "eel")
    assert load_split(f"folder:{root}", "val", image_size=16).images.shape == (1, 16, 16, 3)


def test_folder_with_splits_json(tmp_path: Path, empty_cache: Path) -> None:
    root = tmp_path / "flowers"
    for c, name in enumerate(("iris", "lily", "rose", "tulip")):
        write_image(root / name / "1.png", seed=c)
    (root / "splits.json").write_text(json.dumps({"train": ["rose", "iris"], "test": ["tulip"]}))
    info = dataset_info(f"folder:{root}")
    assert info.splits == ("train", "test") and "splits.json" in info.description
    assert load_split(f"folder:{root}", "train").class_names == ("rose", "iris")
    with pytest.raises(DistilshotError, match="no 'val' split"):
        load_split(f"folder:{root}", "val")
    (root / "splits.json").write_text(json.dumps({"train": ["rose"], "test": ["rose"]}))
    with pytest.raises(DistilshotError, match=r"'rose'.*both train and test"):
        load_split(f"folder:{root}", "train")
    (root / "splits.json").write_text(json.dumps({"train": ["daisy"]}))
    with pytest.raises(DistilshotError, match="daisy"):
        load_split(f"folder:{root}", "train")


def test_folder_split_automatically_60_20_20(
    tmp_path: Path, empty_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = [f"c{i:02d}" for i in range(10)]
    for i, name in enumerate(reversed(names)):
        write_image(tmp_path / "things" / name / "x.png", seed=i)
    monkeypatch.chdir(tmp_path)
    info = dataset_info("folder:things")  # relative to the working directory
    assert info.name == f"folder:{tmp_path / 'things'}" and "60/20/20" in info.description
    assert [load_split("folder:things", s).class_names for s in ("train", "val", "test")] == [
        tuple(names[:6]),
        tuple(names[6:8]),
        tuple(names[8:]),
    ]


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetMissingError, match="does not exist"):
        load_split(f"folder:{tmp_path / 'absent'}", "train")
    for split in ("train", "test"):
        write_image(tmp_path / "leaky" / split / "cat" / "x.png", seed=0)
    with pytest.raises(DistilshotError, match="both train and test"):
        dataset_info(f"folder:{tmp_path / 'leaky'}")


# --- miniImageNet ---------------------------------------------------------------------------------------


def test_mini_imagenet_without_images_says_where_to_put_them(no_data: Path, empty_cache: Path) -> None:
    with pytest.raises(DatasetMissingError) as caught:
        load_split("mini-imagenet", "train")
    message = str(caught.value)
    for expected in (
        str(no_data / "mini-imagenet" / "images"),
        str(empty_cache / "data" / "mini-imagenet" / "images"),
    ):
        assert expected in message
    assert "not public" in message and "n0153282900000005.jpg" in message and "train.csv" in message


def test_mini_imagenet_lists_missing_images(no_data: Path) -> None:
    write_image(no_data / "mini-imagenet" / "images" / "n0153282900000005.jpg", seed=0)
    with pytest.raises(DatasetMissingError, match="38399 of the 38400 miniImageNet train images are missing"):
        load_split("mini-imagenet", "train")


def test_mini_imagenet_from_a_tiny_images_folder(
    tmp_path: Path, no_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    splits = {"train": ["n01", "n02"], "val": ["n03"], "test": ["n04", "n05"]}
    monkeypatch.setattr(miniimagenet, "CSV_DIR", tmp_path / "csv")
    (tmp_path / "csv").mkdir()
    for split, classes in splits.items():
        with open(tmp_path / "csv" / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["filename", "label"])
            for c, wnid in enumerate(classes):
                for i in range(3):
                    name = f"{wnid}{i:08d}.jpg"
                    write_image(no_data / "mini-imagenet" / "images" / name, seed=c * 10 + i, size=(100, 90))
                    writer.writerow([name, wnid])
    train = load_split("mini-imagenet", "train")
    assert train.name == "mini-imagenet/train" and train.class_names == ("n01", "n02")
    assert train.images.shape == (6, 84, 84, 3) and per_class(train).tolist() == [3, 3]
    image = no_data / "mini-imagenet" / "images" / "n0200000001.jpg"
    assert np.array_equal(train.images[4], decode_image(image, 84, 3))
    assert load_split("mini-imagenet", "trainval").class_names == ("n01", "n02", "n03")
