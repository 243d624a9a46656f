"""Dataset names -> their facts, their splits and how they train. Benchmarks are listed in DATASETS; any
class-per-folder image folder works as `folder:<path>`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from distilshot.core.choices import unknown_choice
from distilshot.core.enums import Augment
from distilshot.errors import DistilshotError
from distilshot.train.data import cifar, folder, miniimagenet, omniglot
from distilshot.train.data.imageset import DatasetInfo, ImageSet


@dataclass(frozen=True)
class Benchmark:
    info: DatasetInfo
    load: Callable[[str, int], ImageSet]  # (split, image size) -> the decoded split
    # training defaults (the first layer of every preset, train/presets.py): natural images get the RFS
    # augmentation; characters are neither flipped nor cropped
    augment: Augment = Augment.STANDARD
    rotated_classes: bool = False  # train on every class at four rotations as four classes


_BENCHMARKS: dict[str, Benchmark] = {
    # every character at four rotations as four classes (Vinyals et al.)
    "omniglot": Benchmark(omniglot.LAKE_INFO, omniglot.load_lake, Augment.NONE, rotated_classes=True),
    # the Vinyals split has the rotations built in
    "omniglot-vinyals": Benchmark(omniglot.VINYALS_INFO, omniglot.load_vinyals, Augment.NONE),
    "cifar-fs": Benchmark(cifar.INFOS["cifar-fs"], partial(cifar.load, "cifar-fs")),
    "fc100": Benchmark(cifar.INFOS["fc100"], partial(cifar.load, "fc100")),
    "mini-imagenet": Benchmark(miniimagenet.INFO, miniimagenet.load),
}
DATASETS: tuple[str, ...] = tuple(_BENCHMARKS)


def dataset_family(name: str) -> str:
    """The name a dataset's presets are keyed by: the benchmark's own, or "folder" for any folder."""
    if name.startswith(folder.PREFIX):
        return "folder"
    _benchmark(name)
    return name


def training_defaults(name: str) -> dict[str, Any]:
    """The TrainConfig values a dataset trains with unless a preset or the caller overrides them."""
    if name.startswith(folder.PREFIX):
        return {"augment": Augment.STANDARD, "rotated_classes": False}
    benchmark = _benchmark(name)
    return {"augment": benchmark.augment, "rotated_classes": benchmark.rotated_classes}


def dataset_info(name: str, image_size: int | None = None) -> DatasetInfo:
    """Facts about a dataset; `image_size` None means its default. For a folder dataset this decodes
    its train split (cached) to measure mean and std."""
    _check_size(image_size)
    if name.startswith(folder.PREFIX):
        return folder.info(name, image_size)
    info = _benchmark(name).info
    return info if image_size is None else replace(info, image_size=image_size)


def load_split(name: str, split: str, image_size: int | None = None) -> ImageSet:
    """The decoded images of one split, named "<dataset>/<split>"; `image_size` None means the default."""
    _check_size(image_size)
    if name.startswith(folder.PREFIX):
        return folder.load(name, split, image_size)
    benchmark = _benchmark(name)
    if split not in benchmark.info.splits:
        raise DistilshotError(f"{name} has no split {split!r}; it has {', '.join(benchmark.info.splits)}")
    return benchmark.load(split, image_size or benchmark.info.image_size)


def _benchmark(name: str) -> Benchmark:
    if name not in _BENCHMARKS:
        raise unknown_choice("dataset", name, [*DATASETS, f"{folder.PREFIX}<path>"])
    return _BENCHMARKS[name]


def _check_size(image_size: int | None) -> None:
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1
    ):
        raise DistilshotError(f"image_size must be a positive integer, not {image_size!r}")
