"""CIFAR-FS and FC100: few-shot class splits of CIFAR-100 (Krizhevsky 2009) using all 600 images of each
class, i.e. the official train and test sets merged."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from distilshot.errors import DatasetMissingError, DistilshotError
from distilshot.train.data.arraycache import cached, file_fingerprint
from distilshot.train.data.decode_pool import decode_many
from distilshot.train.data.download import ARCHIVES, locate
from distilshot.train.data.imageset import DatasetInfo, ImageSet
from distilshot.train.data.splitfiles import class_list

SPLITS = ("train", "val", "test", "trainval")
_PER_CLASS = 600

# mean/std: channel_stats of the default-size train split, computed once with this package's decoder.
# As a check, all of CIFAR-100 gives (0.5074, 0.4867, 0.4411) / (0.2675, 0.2566, 0.2763), within 3e-4 of
# the published (0.5071, 0.4865, 0.4409) / (0.2673, 0.2564, 0.2762).
INFOS = {
    "cifar-fs": DatasetInfo(
        name="cifar-fs",
        image_size=32,
        channels=3,
        mean=(0.508796, 0.491734, 0.443741),
        std=(0.267376, 0.256383, 0.277213),
        splits=SPLITS,
        description=(
            "CIFAR-FS: CIFAR-100 fine classes split 64/16/20 (train/val/test), all 600 images per class; "
            "Bertinetto et al., ICLR 2019; Krizhevsky 2009."
        ),
    ),
    "fc100": DatasetInfo(
        name="fc100",
        image_size=32,
        channels=3,
        mean=(0.518210, 0.497561, 0.458364),
        std=(0.274252, 0.263272, 0.287416),
        splits=SPLITS,
        description=(
            "FC100: CIFAR-100 split by superclass 12/4/4 = 60/20/20 fine classes (train/val/test), all 600 "
            "images per class; Oreshkin et al., NeurIPS 2018; Krizhevsky 2009."
        ),
    ),
}


def load(benchmark: str, split: str, size: int) -> ImageSet:
    """The split's classes in split-file order (trainval = train then val)."""
    parts = ("train", "val") if split == "trainval" else (split,)
    names = [name for part in parts for name in class_list(benchmark, part)]
    everything = cifar100(size)
    index = {name: i for i, name in enumerate(everything.class_names)}
    unknown = sorted(set(names) - set(index))
    if unknown:
        raise DistilshotError(f"{benchmark} {split} names classes CIFAR-100 does not have: {unknown}")
    subset = everything.subset([index[n] for n in names])
    return ImageSet(f"{benchmark}/{split}", subset.images, subset.labels, subset.class_names)


def cifar100(size: int) -> ImageSet:
    """All 100 fine classes in label order; within a class the `train` file's images, then `test`'s, each
    in file order."""
    folder = locate(ARCHIVES["cifar-100"])
    files = [folder / name for name in ("meta", "train", "test")]

    def build() -> ImageSet:
        parts = [_unpickle(folder / name) for name in ("train", "test")]
        data = np.concatenate([p["data"] for p in parts])
        fine = np.concatenate([p["fine_labels"] for p in parts]).astype(np.int64)
        counts = np.bincount(fine, minlength=100)
        if len(counts) != 100 or (counts != _PER_CLASS).any():
            raise DatasetMissingError(
                f"{folder} is incomplete: expected {_PER_CLASS} images in each of 100 classes"
            )
        order = np.argsort(fine, kind="stable")
        hwc = np.ascontiguousarray(data[order].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        images = decode_many(hwc, size, 3, f"Decoding CIFAR-100 at {size}px")
        names = tuple(_unpickle(folder / "meta")["fine_label_names"])
        return ImageSet("cifar-100", images, fine[order], names)

    return cached(f"cifar-100-{size}px-3ch", file_fingerprint([("cifar-100", files)]), build)


def _unpickle(path: Path) -> dict[str, Any]:
    # CIFAR's own format; the file comes from the md5-checked archive or a copy the user pointed us at.
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")
