"""Combining the engine work of concurrent calls into batches.

Whichever calling thread finds the engine free runs everything queued at that moment (up to `max_images`
images) as one batch, its own work included, and hands every caller its share. Nothing waits for a batch
to fill: a lone call runs at once, and batches form exactly when calls arrive while the engine is busy,
which is when one engine call for many images beats many calls (per-call overhead, better use of the
cores, one pass over the prototypes for all queries). There is no background thread to start or stop.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from distilshot.core.head import PrototypeHead, Prototypes

Embeddings = dict[str, np.ndarray]


@dataclass(eq=False)
class _Job:
    pixels: np.ndarray  # uint8 [N, H, W, C]
    prototypes: Prototypes | None  # logits are wanted against these (None: embeddings only)
    done: threading.Event = field(default_factory=threading.Event)
    embeddings: Embeddings | None = None
    logits: np.ndarray | None = None
    error: BaseException | None = None


class Batcher:
    """Embeds (and scores against prototypes) the images of concurrent calls in shared engine calls."""

    def __init__(
        self, embed: Callable[[np.ndarray], Embeddings], head: PrototypeHead, max_images: int = 64
    ) -> None:
        self._embed = embed
        self._head = head
        self._max_images = max_images
        self._queue: deque[_Job] = deque()
        self._queue_lock = threading.Lock()
        self._engine_lock = threading.Lock()
        self.batches = 0  # engine batches run, for tests and benchmarks
        self.jobs = 0

    def run(
        self, pixels: np.ndarray, prototypes: Prototypes | None = None
    ) -> tuple[Embeddings, np.ndarray | None]:
        """Embeddings of `pixels` per output and, if `prototypes` is given, the logits [N, K] against them."""
        job = _Job(pixels, prototypes)
        with self._queue_lock:
            self._queue.append(job)
        while not job.done.is_set():
            with self._engine_lock:
                if not job.done.is_set():
                    self._run_batch(self._take())
        if job.error is not None:
            raise job.error
        assert job.embeddings is not None
        return job.embeddings, job.logits

    def _take(self) -> list[_Job]:
        """The oldest queued jobs, at least one, up to `max_images` images in total."""
        with self._queue_lock:
            batch = [self._queue.popleft()]
            total = len(batch[0].pixels)
            while self._queue and total + len(self._queue[0].pixels) <= self._max_images:
                total += len(self._queue[0].pixels)
                batch.append(self._queue.popleft())
        return batch

    def _run_batch(self, batch: list[_Job]) -> None:
        try:
            embeddings = self._embed(np.concatenate([job.pixels for job in batch]))
            ends = np.cumsum([len(job.pixels) for job in batch])
            parts = [
                {o: v[end - len(job.pixels) : end] for o, v in embeddings.items()}
                for job, end in zip(batch, ends, strict=True)
            ]
            for job, part in zip(batch, parts, strict=True):
                job.embeddings = part
            # Queries against the same prototypes are scored in one product (one pass over K prototypes).
            groups: dict[int, tuple[Prototypes, list[int]]] = {}
            for i, job in enumerate(batch):
                if job.prototypes is not None:
                    groups.setdefault(id(job.prototypes), (job.prototypes, []))[1].append(i)
            for prototypes, members in groups.values():
                queries = {o: np.concatenate([parts[i][o] for i in members]) for o in embeddings}
                logits = self._head.logits(queries, prototypes)
                start = 0
                for i in members:
                    batch[i].logits = logits[start : start + len(batch[i].pixels)]
                    start += len(batch[i].pixels)
        except BaseException as error:  # every caller of the batch gets the error, none hangs
            for job in batch:
                job.error = error
        finally:
            self.batches += 1
            self.jobs += len(batch)
            for job in batch:
                job.done.set()
