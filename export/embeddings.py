"""Embedding uint8 images [N, H, W, C] (already at the model's input size) with one of a bundle's
engines, in chunks, normalised as serve normalises them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from distilshot.core.manifest import Manifest, load_manifest
from distilshot.core.preprocess import normalise
from distilshot.errors import DistilshotError
from distilshot.serve.engines import open_engine
from distilshot.serve.engines.base import CHUNK_SIZE, Engine


def embed_images(engine: Engine, images: np.ndarray, manifest: Manifest) -> dict[str, np.ndarray]:
    """The embeddings (per output, [N, dim]) of `images` through `engine`."""
    parts = [
        engine.embed(normalise(images[start : start + CHUNK_SIZE], manifest.preprocessing))
        for start in range(0, len(images), CHUNK_SIZE)
    ]
    return {o.name: np.concatenate([p[o.name] for p in parts]) for o in manifest.embedder.outputs}


def bundle_features(bundle_dir: Path | str, images: np.ndarray) -> dict[str, np.ndarray]:
    """The embeddings of `images` from the engine serve would open for the bundle (or the staged folder)
    `bundle_dir`."""
    manifest = load_manifest(bundle_dir)
    prep = manifest.preprocessing
    if images.shape[1:] != (prep.height, prep.width, prep.channels):
        raise DistilshotError(
            f"calibration images are {list(images.shape[1:])}; the bundle takes "
            f"[{prep.height}, {prep.width}, {prep.channels}]"
        )
    return embed_images(open_engine(bundle_dir, manifest), images, manifest)
