"""Image files to training pixels by the rule in distilshot/core/preprocess.py, which serving applies too."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from distilshot.core.manifest import Preprocessing
from distilshot.core.preprocess import to_model_pixels
from distilshot.errors import ImageError

# Part of every decoded-array cache key: bump it when steps 1-4 of the rule change.
DECODE_VERSION = 1


def decode_image(image: str | os.PathLike[str] | Image.Image, size: int, channels: int) -> np.ndarray:
    """Decodes a file (or an open Pillow image) to uint8 [size, size, channels] by steps 1-4 of the rule,
    resampling bilinearly (the manifests' default)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {channels}")
    if size < 1:
        raise ValueError(f"size must be positive, not {size}")
    # Steps 1-4 only: train/augment.py normalises in torch, so mean and std are the identity and unused.
    prep = Preprocessing(size, size, channels, mean=(0.0,) * channels, std=(1.0,) * channels)
    if isinstance(image, Image.Image):
        return to_model_pixels(image, prep)
    try:
        with Image.open(image) as opened:
            return to_model_pixels(opened, prep)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as error:
        raise ImageError(f"cannot decode image {os.fspath(image)}: {error}") from None
