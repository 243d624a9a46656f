"""Combining the engine work of concurrent calls into batches.

Each call's pixels are queued in chunks of at most `max_images` images, the one place where the
classifier's work is cut into engine-sized pieces (the float copy made for the engine never exceeds one
chunk). Whichever calling thread finds the engine free runs everything queued at that moment (up to
`max_images` images) as one batch, its own work included, and hands every caller its share. Nothing
waits for a batch to fill: a lone call runs at once, and batches form exactly when calls arrive while
the engine is busy, which is when one engine call for many images beats many calls (per-call overhead,
better use of the cores). There is no background thread to start or stop.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

Embeddings = dict[str, np.ndarray]


@dataclass(eq=False)
class _Job:
    pixels: np.ndarray  # uint8 [N, H, W, C], N <= max_images
    done: threading.Event = field(default_factory=threading.Event)
    embeddings: Embeddings | None = None
    error: BaseException | None = None


class Batcher:
    """Embeds the images of concurrent calls in shared engine calls of at most `max_images` images."""

    def __init__(self, embed: Callable[[np.ndarray], Embeddings], max_images: int = 64) -> None:
        self._embed = embed
        self._max_images = max_images
        self._queue: deque[_Job] = deque()
        self._queue_lock = threading.Lock()
        self._engine_lock = threading.Lock()
        self.batches = 0  # engine batches run, for tests and benchmarks
        self.jobs = 0

    def run(self, pixels: np.ndarray) -> Embeddings:
        """The embeddings of `pixels` per output, rows in the order of `pixels`."""
        starts = range(0, max(len(pixels), 1), self._max_images)
        jobs = [_Job(pixels[start : start + self._max_images]) for start in starts]
        with self._queue_lock:
            self._queue.extend(jobs)
        for job in jobs:
            while not job.done.is_set():
                with self._engine_lock:
                    if not job.done.is_set():
                        self._run_batch(self._take())
        for job in jobs:
            if job.error is not None:
                raise job.error
        parts = [job.embeddings for job in jobs if job.embeddings is not None]
        return {output: np.concatenate([part[output] for part in parts]) for output in parts[0]}

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
            for job, end in zip(batch, ends, strict=True):
                job.embeddings = {o: v[end - len(job.pixels) : end] for o, v in embeddings.items()}
        except BaseException as error:  # every caller of the batch gets the error, none hangs
            for job in batch:
                job.error = error
        finally:
            self.batches += 1
            self.jobs += len(batch)
            for job in batch:
                job.done.set()
