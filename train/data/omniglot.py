"""Omniglot (Lake, Salakhutdinov & Tenenbaum, Science 2015) under two protocols: Lake's
background/evaluation split, and the Vinyals split with rotations as extra classes."""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

import numpy as np

from distilshot.errors import DatasetMissingError, DistilshotError
from distilshot.train.data.arraycache import cached, file_fingerprint
from distilshot.train.data.decode_pool import decode_many
from distilshot.train.data.download import ARCHIVES, locate
from distilshot.train.data.imageset import DatasetInfo, ImageSet
from distilshot.train.data.splitfiles import class_list

SPLITS = ("train", "val", "test", "trainval")
# Background alphabets held out as the validation split of the Lake protocol.
VAL_ALPHABETS = ("Bengali", "Futurama", "Hebrew", "Tifinagh")
# Characters per official folder; a copy with fewer is incomplete and would change the benchmark.
_CHARACTERS = {"background": 964, "evaluation": 659}

# mean/std: channel_stats of the default-size train split, computed once with this package's decoder.

LAKE_INFO = DatasetInfo(
    name="omniglot",
    image_size=28,
    channels=1,
    mean=(0.923880,),
    std=(0.213133,),
    splits=SPLITS,
    description=(
        "Omniglot, Lake protocol: one class per character; train = the 30 background alphabets minus "
        f"{', '.join(VAL_ALPHABETS)} (val), trainval = all 964 background characters, test = the 20 "
        "evaluation alphabets (659 characters); Lake, Salakhutdinov & Tenenbaum, Science 2015."
    ),
)
VINYALS_INFO = DatasetInfo(
    name="omniglot-vinyals",
    image_size=28,
    channels=1,
    mean=(0.921797,),
    std=(0.216024,),
    splits=SPLITS,
    description=(
        "Omniglot, Vinyals split: 1028/172/423 train/val/test characters, each rotated by 0/90/180/270 "
        "degrees into 4 classes (4112/688/1692); Vinyals et al., NeurIPS 2016; Lake et al., Science 2015."
    ),
)


def load_lake(split: str, size: int) -> ImageSet:
    """Characters sorted by "<Alphabet>/<characterNN>"."""
    if split == "test":
        return replace(characters("evaluation", size), name="omniglot/test")
    background = characters("background", size)
    keep = [
        i
        for i, name in enumerate(background.class_names)
        if split == "trainval" or (name.split("/")[0] in VAL_ALPHABETS) == (split == "val")
    ]
    return replace(background.subset(keep), name=f"omniglot/{split}")


def load_vinyals(split: str, size: int) -> ImageSet:
    """Classes in split-file order; "<Alphabet>/<characterNN>/rotDDD" is the character rotated
    counter-clockwise by DDD degrees."""
    rows, images = {}, []
    for folder in ("background", "evaluation"):
        chars = characters(folder, size)
        rows.update(
            {name: (chars.images, r) for name, r in zip(chars.class_names, chars.class_rows(), strict=True)}
        )
    names = class_list("omniglot-vinyals", split)
    for name in names:
        character, rotation = name.rsplit("/", 1)
        if character not in rows or rotation not in ("rot000", "rot090", "rot180", "rot270"):
            raise DistilshotError(f"omniglot-vinyals {split}: cannot resolve split entry {name!r}")
        source, r = rows[character]
        images.append(np.rot90(source[r], int(rotation[3:]) // 90, axes=(1, 2)))
    labels = np.repeat(np.arange(len(names), dtype=np.int64), [len(block) for block in images])
    return ImageSet(f"omniglot-vinyals/{split}", np.concatenate(images), labels, tuple(names))


def characters(folder: str, size: int) -> ImageSet:
    """Every character of `images_<folder>` as a class "<Alphabet>/<characterNN>", sorted by name, with
    its alphabet as class group and each drawing's drawer (see `drawer_of`)."""
    root = locate(ARCHIVES[f"omniglot-{folder}"])
    classes = []
    for alphabet in _names(root):
        for character in _names(root / alphabet):
            drawings = root / alphabet / character
            classes.append((f"{alphabet}/{character}", [drawings / f for f in _names(drawings, ".png")]))
    if len(classes) != _CHARACTERS[folder]:
        raise DatasetMissingError(
            f"{root} is incomplete: {len(classes)} characters, expected {_CHARACTERS[folder]}; "
            f"replace it with a fresh copy of {ARCHIVES[f'omniglot-{folder}'].url}"
        )

    def build() -> ImageSet:
        files = [file for _, files in classes for file in files]
        labels = np.repeat(np.arange(len(classes), dtype=np.int64), [len(files) for _, files in classes])
        images = decode_many(files, size, 1, f"Decoding Omniglot {folder} at {size}px")
        return ImageSet(f"omniglot/{folder}", images, labels, tuple(name for name, _ in classes))

    decoded = cached(f"omniglot-{folder}-{size}px-1ch", file_fingerprint(classes), build)
    # Not part of the cached arrays: read from the file names, whose order the cached rows follow.
    drawers = np.array([drawer_of(file) for _, files in classes for file in files], dtype=np.int64)
    alphabets = tuple(name.split("/")[0] for name, _ in classes)
    return replace(decoded, drawers=drawers, class_groups=alphabets)


def drawer_of(file: Path) -> int:
    """The drawer of an Omniglot drawing: the YY (01-20) of its file name XXXX_YY.png, where XXXX numbers
    the character."""
    match = re.fullmatch(r"\d{4}_(\d{2})\.png", file.name)
    if match is None:
        raise DatasetMissingError(f"{file} is not named like an Omniglot drawing (XXXX_YY.png)")
    return int(match.group(1))


def _names(folder: Path, suffix: str | None = None) -> list[str]:
    """Sorted entry names: folders when `suffix` is None, else files ending in `suffix`."""
    with os.scandir(folder) as entries:
        return sorted(
            e.name
            for e in entries
            if not e.name.startswith(".")
            and (e.is_dir() if suffix is None else e.is_file() and e.name.endswith(suffix))
        )
