"""Dataset names -> their facts and their splits. Benchmarks are listed in DATASETS; any class-per-folder
image folder works as `folder:<path>`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial

from distilshot.errors import DistilshotError
from distilshot.train.data import cifar, folder, miniimagenet, omniglot
from distilshot.train.data.imageset import DatasetInfo, ImageSet

_BENCHMARKS: dict[str, tuple[DatasetInfo, Callable[[str, int], ImageSet]]] = {
    "omniglot": (omniglot.LAKE_INFO, omniglot.load_lake),
    "omniglot-vinyals": (omniglot.VINYALS_INFO, omniglot.load_vinyals),
    "cifar-fs": (cifar.INFOS["cifar-fs"], partial(cifar.load, "cifar-fs")),
    "fc100": (cifar.INFOS["fc100"], partial(cifar.load, "fc100")),
    "mini-imagenet": (miniimagenet.INFO, miniimagenet.load),
}
DATASETS: tuple[str, ...] = tuple(_BENCHMARKS)


def dataset_info(name: str, image_size: int | None = None) -> DatasetInfo:
    """Facts about a dataset; `image_size` None means its default. For a folder dataset this decodes
    its train split (cached) to measure mean and std."""
    _check_size(image_size)
    if name.startswith(folder.PREFIX):
        return folder.info(name, image_size)
    info, _ = _benchmark(name)
    return info if image_size is None else replace(info, image_size=image_size)


def load_split(name: str, split: str, image_size: int | None = None) -> ImageSet:
    """The decoded images of one split, named "<dataset>/<split>"; `image_size` None means the default."""
    _check_size(image_size)
    if name.startswith(folder.PREFIX):
        return folder.load(name, split, image_size)
    info, load = _benchmark(name)
    if split not in info.splits:
        raise DistilshotError(f"{name} has no split {split!r}; it has {', '.join(info.splits)}")
    return load(split, image_size or info.image_size)


def _benchmark(name: str) -> tuple[DatasetInfo, Callable[[str, int], ImageSet]]:
    if name not in _BENCHMARKS:
        raise DistilshotError(
            f"unknown dataset {name!r}; use one of {', '.join(DATASETS)} or {folder.PREFIX}<path>"
        )
    return _BENCHMARKS[name]


def _check_size(image_size: int | None) -> None:
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1
    ):
        raise DistilshotError(f"image_size must be a positive integer, not {image_size!r}")
