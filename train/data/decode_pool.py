"""Decoding many images at once: in a process pool when there are enough to pay for it."""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat
from pathlib import Path

import numpy as np
from PIL import Image

from distilshot.train.data.decode import decode_image
from distilshot.train.data.progress import progress_bar

# Below this many images, starting worker processes costs more than it saves.
PARALLEL_MIN = 1024
_CHUNK = 256

Source = Path | np.ndarray  # an image file, or an HWC uint8 array (CIFAR) that goes through Image.fromarray


def decode_many(sources: Sequence[Source], size: int, channels: int, description: str) -> np.ndarray:
    """decode_image over `sources`, as one uint8 [N, size, size, channels] array in the same order."""
    out = np.empty((len(sources), size, size, channels), np.uint8)
    workers = os.cpu_count() or 1
    if len(sources) < PARALLEL_MIN or workers == 1:
        with progress_bar(description, len(sources)) as advance:
            for i, source in enumerate(sources):
                out[i] = _decode(source, size, channels)
                advance(1)
        return out
    starts = range(0, len(sources), _CHUNK)
    chunks = (sources[s : s + _CHUNK] for s in starts)
    # fork: workers only need this module, and spawn would re-run an unguarded __main__ script.
    context = multiprocessing.get_context("fork") if sys.platform == "linux" else None
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        # map submits everything, which forks the workers before the progress bar starts its thread.
        blocks = pool.map(_decode_chunk, chunks, repeat(size), repeat(channels))
        with progress_bar(description, len(sources)) as advance:
            for start, block in zip(starts, blocks, strict=True):
                out[start : start + len(block)] = block
                advance(len(block))
    return out


def _decode(source: Source, size: int, channels: int) -> np.ndarray:
    return decode_image(Image.fromarray(source) if isinstance(source, np.ndarray) else source, size, channels)


def _decode_chunk(sources: Sequence[Source], size: int, channels: int) -> np.ndarray:
    return np.stack([_decode(source, size, channels) for source in sources])
