"""`folder:<path>` datasets: any class-per-subfolder image folder, split into few-shot classes by
train/val/test subfolders, by a splits.json, or automatically."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distilshot.errors import DatasetMissingError, DistilshotError
from distilshot.train.data.arraycache import cached, file_fingerprint
from distilshot.train.data.decode_pool import decode_many
from distilshot.train.data.imageset import DatasetInfo, ImageSet, channel_stats, concat

PREFIX = "folder:"
IMAGE_SIZE = 84
CHANNELS = 3
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class Layout:
    """Class folders of each split (in label order) and how they were chosen."""

    root: Path
    splits: dict[str, list[Path]]
    how: str

    @property
    def available(self) -> tuple[str, ...]:
        both = "train" in self.splits and "val" in self.splits
        return (*self.splits, "trainval") if both else tuple(self.splits)


def root_of(name: str) -> Path:
    """The absolute folder of `folder:<path>`; relative paths count from the working directory."""
    return Path(os.path.abspath(os.path.expanduser(name[len(PREFIX) :])))


def layout(root: Path) -> Layout:
    """The class split of `root`: its train/val/test subfolders if any exist, else its splits.json, else
    the sorted class folders cut 60/20/20. A class folder is a folder with image files directly inside."""
    if not root.is_dir():
        raise DatasetMissingError(f"image folder {root} does not exist")
    if any((root / s).is_dir() for s in SPLIT_NAMES):
        splits = {s: _class_folders(root / s) for s in SPLIT_NAMES if (root / s).is_dir()}
        how = "classes from its train/val/test subfolders"
    elif (root / "splits.json").is_file():
        splits = _from_json(root)
        how = "classes from its splits.json"
    else:
        classes = _class_folders(root)
        if len(classes) < 3:
            raise DistilshotError(
                f"{root} has {len(classes)} class folders; an automatic split needs at least 3 (or add "
                "train/val/test subfolders or a splits.json)"
            )
        k = max(1, round(0.2 * len(classes)))
        splits = {"train": classes[: -2 * k], "val": classes[-2 * k : -k], "test": classes[-k:]}
        how = (
            f"class folders sorted by name and cut 60/20/20 in that order: the first {len(classes) - 2 * k} "
            f"train, the next {k} val, the last {k} test"
        )
    _check_disjoint(root, splits)
    return Layout(root, splits, how)


def info(name: str, image_size: int | None) -> DatasetInfo:
    """Mean and std come from the train split (all splits if there is none), decoded at `image_size`."""
    found = layout(root_of(name))
    size = image_size or IMAGE_SIZE
    source = ["train"] if "train" in found.splits else list(found.splits)
    mean, std = channel_stats(concat("stats", [load(name, s, size) for s in source]).images)
    return DatasetInfo(
        name=f"{PREFIX}{found.root}",
        image_size=size,
        channels=CHANNELS,
        mean=mean,
        std=std,
        splits=found.available,
        description=f"Image folder {found.root}: {found.how}; mean/std from its {' + '.join(source)} images.",
    )


def load(name: str, split: str, image_size: int | None) -> ImageSet:
    found = layout(root_of(name))
    size = image_size or IMAGE_SIZE
    if split not in found.available:
        raise DistilshotError(f"{found.root} has no {split!r} split; it has {', '.join(found.available)}")
    label = f"{PREFIX}{found.root}/{split}"
    if split == "trainval":
        return concat(label, [load(name, "train", size), load(name, "val", size)])
    classes = [(folder.name, _images_in(folder)) for folder in found.splits[split]]

    def build() -> ImageSet:
        files = [file for _, files in classes for file in files]
        labels = np.repeat(np.arange(len(classes), dtype=np.int64), [len(files) for _, files in classes])
        images = decode_many(files, size, CHANNELS, f"Decoding {found.root.name}/{split} at {size}px")
        return ImageSet(label, images, labels, tuple(n for n, _ in classes))

    tag = hashlib.sha256(str(found.root).encode()).hexdigest()[:8]
    return cached(
        f"folder-{found.root.name}-{tag}-{split}-{size}px-{CHANNELS}ch", file_fingerprint(classes), build
    )


def _images_in(folder: Path) -> list[Path]:
    with os.scandir(folder) as entries:
        return sorted(
            Path(e.path)
            for e in entries
            if e.is_file() and not e.name.startswith(".") and e.name.lower().endswith(IMAGE_SUFFIXES)
        )


def _class_folders(folder: Path) -> list[Path]:
    with os.scandir(folder) as entries:
        return sorted(
            Path(e.path)
            for e in entries
            if e.is_dir() and not e.name.startswith(".") and _images_in(Path(e.path))
        )


def _from_json(root: Path) -> dict[str, list[Path]]:
    path = root / "splits.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DistilshotError(f"cannot read {path}: {error}") from None
    if (
        not isinstance(data, dict)
        or not data
        or not set(data) <= set(SPLIT_NAMES)
        or not all(isinstance(v, list) and all(isinstance(c, str) for c in v) for v in data.values())
    ):
        raise DistilshotError(
            f'{path} must map some of "train", "val", "test" to lists of class folder names'
        )
    known = {folder.name for folder in _class_folders(root)}
    unknown = sorted({c for classes in data.values() for c in classes} - known)
    if unknown:
        raise DistilshotError(f"{path} names classes that are not folders of images in {root}: {unknown}")
    return {s: [root / c for c in data[s]] for s in SPLIT_NAMES if s in data}


def _check_disjoint(root: Path, splits: dict[str, list[Path]]) -> None:
    """Few-shot splits must not share classes: a test class seen in training makes the test meaningless."""
    seen: dict[str, str] = {}
    for split, folders in splits.items():
        for folder in folders:
            if folder.name in seen:
                raise DistilshotError(
                    f"class {folder.name!r} of {root} is in both {seen[folder.name]} and {split}; few-shot "
                    "splits need disjoint classes"
                )
            seen[folder.name] = split
