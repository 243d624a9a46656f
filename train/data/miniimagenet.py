"""miniImageNet with the Ravi & Larochelle split. The images are not public, so users bring them:
`<data root>/mini-imagenet/images/<filename>` for every file name in the split CSVs."""

from __future__ import annotations

import os
from importlib.resources.abc import Traversable
from pathlib import Path

import numpy as np

from distilshot.errors import DatasetMissingError
from distilshot.train.data.arraycache import cached, file_fingerprint
from distilshot.train.data.decode_pool import decode_many
from distilshot.train.data.imageset import DatasetInfo, ImageSet, concat
from distilshot.train.data.root import DATA_ENV, data_roots
from distilshot.train.data.splitfiles import SPLITS, csv_rows

# `filename,label` CSVs per split; a module attribute so tests can point it at a tiny split.
CSV_DIR = SPLITS / "mini-imagenet-ravi"
IMAGES = "mini-imagenet/images"

INFO = DatasetInfo(
    name="mini-imagenet",
    image_size=84,
    channels=3,
    # The statistics the miniImageNet literature normalizes with (MetaOptNet, Lee et al. CVPR 2019; RFS,
    # Tian et al. ECCV 2020: 120.396/115.594/104.540 and 70.682/68.276/72.545 on 0..255), from the
    # 84 px train split. We cannot recompute them: the images are not shipped.
    mean=(0.472141, 0.453308, 0.409961),
    std=(0.277184, 0.267750, 0.284490),
    splits=("train", "val", "test", "trainval"),
    description=(
        "miniImageNet, Ravi & Larochelle split: 64/16/20 ImageNet classes x 600 images (train/val/test), "
        f"images supplied by the user in {IMAGES}/; Vinyals et al., NeurIPS 2016; "
        "Ravi & Larochelle, ICLR 2017."
    ),
)


def load(split: str, size: int) -> ImageSet:
    """Classes (WordNet ids) in CSV order; trainval = train then val."""
    if split == "trainval":
        return concat("mini-imagenet/trainval", [load("train", size), load("val", size)])
    csv = CSV_DIR / f"{split}.csv"
    rows = csv_rows(csv)
    folder = _images_folder(csv, rows)
    present = set(os.listdir(folder))
    missing = [name for name, _ in rows if name not in present]
    if missing:
        raise DatasetMissingError(
            f"{len(missing)} of the {len(rows)} miniImageNet {split} images are missing from {folder}, "
            f"e.g. {', '.join(missing[:3])}; the expected file names are listed in {csv}"
        )
    classes: dict[str, list[Path]] = {}
    for name, label in rows:
        classes.setdefault(label, []).append(folder / name)

    def build() -> ImageSet:
        files = [file for files in classes.values() for file in files]
        labels = np.repeat(
            np.arange(len(classes), dtype=np.int64), [len(files) for files in classes.values()]
        )
        images = decode_many(files, size, 3, f"Decoding miniImageNet {split} at {size}px")
        return ImageSet(f"mini-imagenet/{split}", images, labels, tuple(classes))

    return cached(f"mini-imagenet-{split}-{size}px-3ch", file_fingerprint(classes.items()), build)


def _images_folder(csv: Traversable | Path, rows: list[tuple[str, str]]) -> Path:
    for root in data_roots():
        if (root / IMAGES).is_dir():
            return root / IMAGES
    places = " or ".join(str(root / IMAGES) for root in data_roots())
    raise DatasetMissingError(
        f"miniImageNet images not found in {places}. They are not public, so distilshot cannot download "
        f"them: put the {len(rows)} images this split needs (and those of the other splits) in one of those "
        f"folders (or set {DATA_ENV} to a folder holding {IMAGES}/), named as in the Ravi & Larochelle "
        f"CSV {csv}, e.g. {rows[0][0]}."
    )
