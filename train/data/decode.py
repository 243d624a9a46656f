"""The one rule that turns an image file into model pixels. serve/ implements the same rule and a test
compares the two, so any change here must be made there too (and bumps DECODE_VERSION)."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from distilshot.errors import ImageError

# Part of every decoded-array cache key: bump it when the rule below changes.
DECODE_VERSION = 1

_ALPHA_MODES = ("RGBA", "LA", "PA")
_WIDE_INT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


def decode_image(image: str | os.PathLike[str] | Image.Image, size: int, channels: int) -> np.ndarray:
    """Decodes a file (or an open Pillow image) to uint8 [size, size, channels]:

    1. open with Pillow and apply the EXIF orientation (`ImageOps.exif_transpose`);
    2. flatten transparency: modes RGBA/LA/PA, and P with "transparency" in `info`, are converted to RGBA
       and alpha-composited over opaque white. Wide modes become 8-bit "L" with numpy: integer modes
       "I;16*" and "I" by the 16-bit range, round(clip(v, 0, 65535) / 257); float "F" by Pillow's
       convention that it holds 0..255, round(clip(v, 0, 255)), NaN counting as 0;
    3. convert to "L" (channels=1) or "RGB" (channels=3) with Pillow's `convert`;
    4. unless already size x size, resize with BILINEAR so the shorter side is `size` and the longer
       `round(long * size / short)` (Python's round), then center-crop with left = (w - size) // 2 and
       top = (h - size) // 2.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {channels}")
    if size < 1:
        raise ValueError(f"size must be positive, not {size}")
    if isinstance(image, Image.Image):
        return _decode(image, size, channels)
    try:
        with Image.open(image) as opened:
            return _decode(opened, size, channels)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as error:
        raise ImageError(f"cannot decode image {os.fspath(image)}: {error}") from None


def _decode(image: Image.Image, size: int, channels: int) -> np.ndarray:
    image = ImageOps.exif_transpose(image)
    if image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    elif image.mode in _WIDE_INT_MODES:
        values = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.rint(np.clip(values, 0, 65535) / 257).astype(np.uint8), "L")
    elif image.mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0)
        image = Image.fromarray(np.rint(np.clip(values, 0, 255)).astype(np.uint8), "L")
    image = image.convert("L" if channels == 1 else "RGB")
    width, height = image.size
    if (width, height) != (size, size):
        short = min(width, height)
        if width <= height:
            image = image.resize((size, round(height * size / short)), Image.Resampling.BILINEAR)
        else:
            image = image.resize((round(width * size / short), size), Image.Resampling.BILINEAR)
        left, top = (image.width - size) // 2, (image.height - size) // 2
        image = image.crop((left, top, left + size, top + size))
    return np.asarray(image, dtype=np.uint8).reshape(size, size, channels)
