"""The in-memory form of a dataset split, and the facts a trainer needs about a dataset."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np


# eq=False: comparing array fields with == is ambiguous, so sets compare (and hash) by identity.
@dataclass(frozen=True, eq=False)
class ImageSet:
    """Decoded images of one split: images uint8 [N, H, W, C] (C = 1 or 3), labels int64 [N] in
    0..num_classes-1 with every class present, class_names[label] naming each class. Datasets that know
    them (Omniglot) also give `drawers`, int64 [N], the id of the person who drew each image, and
    `class_groups`, the group (alphabet) of each class; both are None elsewhere."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    drawers: np.ndarray | None = None
    class_groups: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] not in (1, 3):
            raise ValueError(
                f"images must be uint8 [N, H, W, 1 or 3], got {self.images.dtype} {self.images.shape}"
            )
        if self.labels.dtype != np.int64 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(
                f"labels must be int64 [{len(self.images)}], got {self.labels.dtype} {self.labels.shape}"
            )
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"{self.name}: class names are not unique")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise ValueError(f"{self.name}: labels fall outside 0..{len(self.class_names) - 1}")
        if (np.bincount(self.labels, minlength=len(self.class_names)) == 0).any():
            raise ValueError(f"{self.name}: some classes have no images")
        if self.drawers is not None and (
            self.drawers.dtype != np.int64 or self.drawers.shape != self.labels.shape
        ):
            raise ValueError(f"{self.name}: drawers must be int64 [{len(self.labels)}]")
        if self.class_groups is not None and len(self.class_groups) != len(self.class_names):
            raise ValueError(f"{self.name}: class_groups must name one group per class")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_rows(self) -> list[np.ndarray]:
        """The row indices of each class's images, in label order (rows keep their order within a class)."""
        order = np.argsort(self.labels, kind="stable")
        return np.split(order, np.cumsum(np.bincount(self.labels, minlength=self.num_classes))[:-1])

    def subset(self, class_indices: Iterable[int]) -> ImageSet:
        """Only the given classes, relabelled 0..k-1 in the given order."""
        picked = [int(c) for c in class_indices]
        if len(set(picked)) != len(picked) or not all(0 <= c < self.num_classes for c in picked):
            raise ValueError(f"class indices must be distinct and in 0..{self.num_classes - 1}, got {picked}")
        rows = self.class_rows()
        take = np.concatenate([rows[c] for c in picked]) if picked else np.zeros(0, np.int64)
        labels = np.repeat(np.arange(len(picked), dtype=np.int64), [len(rows[c]) for c in picked])
        return ImageSet(
            self.name,
            self.images[take],
            labels,
            tuple(self.class_names[c] for c in picked),
            None if self.drawers is None else self.drawers[take],
            None if self.class_groups is None else tuple(self.class_groups[c] for c in picked),
        )

    def with_rotated_classes(self) -> ImageSet:
        """Four times the classes: the originals, then every class rotated counter-clockwise by 90, 180 and
        270 degrees as new classes named "<name>/rot090", "<name>/rot180", "<name>/rot270"."""
        images = np.concatenate([np.rot90(self.images, k, axes=(1, 2)) for k in range(4)])
        labels = np.concatenate([self.labels + k * self.num_classes for k in range(4)])
        names = self.class_names + tuple(f"{n}/rot{90 * k:03d}" for k in (1, 2, 3) for n in self.class_names)
        return ImageSet(
            f"{self.name}+rot",
            images,
            labels,
            names,
            None if self.drawers is None else np.tile(self.drawers, 4),
            None if self.class_groups is None else self.class_groups * 4,
        )


def concat(name: str, sets: Sequence[ImageSet]) -> ImageSet:
    """The classes of all `sets` side by side, labels offset in order; class names must not repeat."""
    offsets = np.cumsum([0] + [s.num_classes for s in sets[:-1]])
    return ImageSet(
        name,
        np.concatenate([s.images for s in sets]),
        np.concatenate([s.labels + offset for s, offset in zip(sets, offsets, strict=True)]),
        tuple(n for s in sets for n in s.class_names),
    )


@dataclass(frozen=True)
class DatasetInfo:
    """What a trainer and a bundle's preprocessing need to know about a dataset. mean and std are per
    channel, on pixels scaled to [0, 1]."""

    name: str
    image_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    splits: tuple[str, ...]
    description: str


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and std of uint8 [N, H, W, C] images on the [0, 1] scale, from a 256-bin
    histogram so no float copy of the images is made."""
    means, stds = [], []
    for c in range(images.shape[-1]):
        counts = np.bincount(images[..., c].ravel(), minlength=256).astype(np.float64)
        values = np.arange(256) / 255.0
        mean = (counts @ values) / counts.sum()
        means.append(float(mean))
        stds.append(float(np.sqrt(counts @ (values - mean) ** 2 / counts.sum())))
    return tuple(means), tuple(stds)
