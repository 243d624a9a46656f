"""Index samplers. Each epoch draws from its own generator seeded by (seed, epoch), so any epoch can be
replayed exactly, which is what makes resumed training identical to uninterrupted training.

Under torchrun (train/distributed.py) each of `world` ranks samples its own part: episodes from a stream of
its own (seeded by (seed, epoch, rank)), and batches as its slice of one global batch that every rank draws
alike, so W ranks at batch b see together what one process sees at batch W*b. Rank 0 of any world draws
what a single process draws."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np


def rank_entropy(words: list[int], rank: int) -> list[int]:
    """SeedSequence entropy of a random stream on `rank`: `words` on rank 0, whose streams are those of a
    single process, and `words` + [0, rank] on the others."""
    return [*words, 0, rank] if rank else words


def epoch_rng(seed: int, epoch: int, rank: int = 0) -> np.random.Generator:
    return np.random.default_rng(rank_entropy([seed, epoch], rank))


@dataclass(frozen=True)
class Episode:
    """Indices of an N-way K-shot Q-query episode, class-major: support[i] and query[i] belong to
    classes[i], which is episode label i."""

    classes: np.ndarray  # [n_way] dataset labels
    support: np.ndarray  # [n_way, k_shot] image indices
    query: np.ndarray  # [n_way, n_query] image indices

    @property
    def indices(self) -> np.ndarray:
        """Support then query, flattened: the order episodic batches are built in."""
        return np.concatenate([self.support.ravel(), self.query.ravel()])


class EpisodeSampler:
    """`episodes` episodes per epoch; on `rank` > 0 a different stream of them."""

    def __init__(
        self,
        labels: np.ndarray,
        n_way: int,
        k_shot: int,
        n_query: int,
        episodes: int,
        seed: int,
        rank: int = 0,
    ) -> None:
        self.by_class = [np.flatnonzero(labels == c) for c in range(int(labels.max()) + 1)]
        eligible = [c for c, idx in enumerate(self.by_class) if len(idx) >= k_shot + n_query]
        if len(eligible) < n_way:
            raise ValueError(
                f"{n_way}-way {k_shot}-shot {n_query}-query episodes need {n_way} classes with at least "
                f"{k_shot + n_query} images; this split has {len(eligible)}"
            )
        self.eligible = np.array(eligible)
        self.n_way, self.k_shot, self.n_query = n_way, k_shot, n_query
        self.episodes = episodes
        self.seed, self.rank = seed, rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.episodes

    def __iter__(self) -> Iterator[Episode]:
        rng = epoch_rng(self.seed, self.epoch, self.rank)
        per_class = self.k_shot + self.n_query
        for _ in range(self.episodes):
            classes = rng.choice(self.eligible, self.n_way, replace=False)
            items = np.stack([rng.choice(self.by_class[c], per_class, replace=False) for c in classes])
            yield Episode(classes, items[:, : self.k_shot], items[:, self.k_shot :])


class WithinGroupEpisodeSampler(EpisodeSampler):
    """Lake et al.'s one-shot protocol (Science 2015), N-way K-shot Q-query: the N classes of an episode
    come from one group (an Omniglot alphabet; groups with at least N eligible classes are drawn
    uniformly), and the episode draws K + Q distinct drawers, the same for all its classes: each class's
    support images are those of the first K drawers, its queries those of the other Q, so support and
    query drawers are disjoint."""

    def __init__(
        self,
        labels: np.ndarray,
        class_groups: Sequence[str],
        drawers: np.ndarray,
        n_way: int,
        k_shot: int,
        n_query: int,
        episodes: int,
        seed: int,
    ) -> None:
        super().__init__(labels, n_way, k_shot, n_query, episodes, seed)
        self.drawer_ids = np.unique(drawers)
        # table[c, d]: the image of class c by drawer drawer_ids[d], or -1
        self.table = np.full((len(self.by_class), len(self.drawer_ids)), -1, dtype=np.int64)
        columns = np.searchsorted(self.drawer_ids, drawers)
        if len(np.unique(labels * len(self.drawer_ids) + columns)) != len(labels):
            raise ValueError("a drawer drew some class more than once; within-group episodes need one each")
        self.table[labels, columns] = np.arange(len(labels))
        groups: dict[str, list[int]] = {}
        for c in self.eligible:
            groups.setdefault(class_groups[c], []).append(int(c))
        self.groups = [np.array(members) for _, members in sorted(groups.items()) if len(members) >= n_way]
        if not self.groups:
            raise ValueError(
                f"within-group {n_way}-way episodes need a group with {n_way} classes of at least "
                f"{k_shot + n_query} images; none has"
            )

    def __iter__(self) -> Iterator[Episode]:
        rng = epoch_rng(self.seed, self.epoch)
        per_class = self.k_shot + self.n_query
        for _ in range(self.episodes):
            group = self.groups[rng.integers(len(self.groups))]
            classes = rng.choice(group, self.n_way, replace=False)
            shared = np.flatnonzero((self.table[classes] >= 0).all(axis=0))
            if len(shared) < per_class:
                raise ValueError(
                    f"classes {classes.tolist()} share {len(shared)} drawers; an episode needs {per_class}"
                )
            items = self.table[classes][:, rng.choice(shared, per_class, replace=False)]
            yield Episode(classes, items[:, : self.k_shot], items[:, self.k_shot :])


class ClassBalancedBatchSampler(EpisodeSampler):
    """Batches of `classes_per_batch` classes x `per_class` images: an episode without the query split.
    Of `world` ranks, each takes its own `classes_per_batch` classes of a global batch of
    `classes_per_batch * world` distinct classes."""

    def __init__(
        self,
        labels: np.ndarray,
        classes_per_batch: int,
        per_class: int,
        batches: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        super().__init__(labels, classes_per_batch * world, per_class, 0, batches, seed)
        self.own = slice(rank * classes_per_batch, (rank + 1) * classes_per_batch)

    def __iter__(self) -> Iterator[np.ndarray]:  # type: ignore[override]
        for episode in super().__iter__():
            yield episode.support[self.own].ravel()


class RandomBatchSampler:
    """Shuffled mini-batches over the whole set, the last incomplete batch dropped. Of `world` ranks, each
    takes its `batch_size` images of a global batch of `batch_size * world`."""

    def __init__(
        self,
        size: int,
        batch_size: int,
        seed: int,
        batches: int | None = None,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        if size < batch_size * world:
            ranks = f" x {world} ranks" if world > 1 else ""
            raise ValueError(f"batch size {batch_size}{ranks} is larger than the {size} training images")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.global_batch, self.offset = batch_size * world, batch_size * rank
        self.batches = batches or size // self.global_batch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[np.ndarray]:
        rng = epoch_rng(self.seed, self.epoch)
        order = np.concatenate(
            [rng.permutation(self.size) for _ in range(-(-self.batches * self.global_batch // self.size))]
        )
        for b in range(self.batches):
            start = b * self.global_batch + self.offset
            yield order[start : start + self.batch_size]
