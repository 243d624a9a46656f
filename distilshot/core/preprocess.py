"""The one rule that turns a decoded image into model input, for training (train/data/decode.py) and
serving (serve/images.py) alike:

1. apply the EXIF orientation (as `ImageOps.exif_transpose`);
2. flatten transparency: modes RGBA/LA/PA, and P with "transparency" in `info`, are converted to RGBA
   and alpha-composited over opaque white. Wide modes become 8-bit "L" with numpy: integer modes "I;16*"
   and "I" by the 16-bit range, round(clip(v, 0, 65535) / 257); float "F" by Pillow's convention that it
   holds 0..255, round(clip(v, 0, 255)), NaN counting as 0;
3. convert to "L" (1 channel) or "RGB" (3 channels) with Pillow's `convert`;
4. unless already the target size, resize with the manifest's `resample` so that the side needing the
   larger factor meets its target and the other becomes `round(side * target / other)` (Python's round),
   then centre-crop with left = (w - width) // 2 and top = (h - height) // 2;
5. scale to [0, 1], subtract `mean` and divide by `std` per channel, NCHW float32.

Training caches the uint8 result of steps 1-4 under train/data/arraycache.py's key, which includes
train/data/decode.py's DECODE_VERSION: any change to steps 1-4 must bump it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from distilshot.core.manifest import Preprocessing

WIDE_INT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")
_TRANSPARENT = ("RGBA", "LA", "PA")
# Pixels converted at a time by `flatten`; its numpy steps take about 30 bytes per pixel of a strip.
STRIP_PIXELS = 1 << 18
_ORIENTATION = 0x0112
# EXIF orientation -> the transposition that makes the image upright (as ImageOps.exif_transpose).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def flatten(image: Image.Image, mode: str) -> Image.Image:
    """Steps 1-3 of the rule: EXIF orientation applied, transparency composited over white, integer and
    float modes brought to 8 bits, then Pillow's convert to `mode` ("L" or "RGB").

    Steps 2-3 work pixel by pixel, so they run on strips of rows and the orientation (a permutation of
    pixels) is applied to the converted result: what this holds besides the source is the result, its
    upright copy and one strip, where whole-image numpy steps would take 8 bytes per pixel each. The
    result is `image` itself when nothing needs doing: never modify it in place."""
    method = _UPRIGHT.get(image.getexif().get(_ORIENTATION, 1))
    if image.mode != mode:
        width, height = image.size
        rows = max(1, STRIP_PIXELS // width)
        converted = Image.new(mode, image.size)
        for top in range(0, height, rows):
            strip = image.crop((0, top, width, min(top + rows, height)))  # keeps palette and info
            converted.paste(_flat_strip(strip).convert(mode), (0, top))
        image = converted
    return image if method is None else image.transpose(method)


def _flat_strip(image: Image.Image) -> Image.Image:
    """Step 2 on a strip: the source's colours with transparency and wide values flattened."""
    if image.mode in _TRANSPARENT or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    if image.mode in WIDE_INT_MODES:
        values = np.asarray(image, dtype=np.float64)
        return Image.fromarray(np.rint(np.clip(values, 0, 65535) / 257).astype(np.uint8))
    if image.mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0)
        return Image.fromarray(np.rint(np.clip(values, 0, 255)).astype(np.uint8))
    return image


def to_model_pixels(image: Image.Image, prep: Preprocessing) -> np.ndarray:
    """Steps 1-4 of the rule: uint8 [H, W, C] exactly as the model sees them before normalisation."""
    image = flatten(image, "L" if prep.channels == 1 else "RGB")
    if image.size != (prep.width, prep.height):
        w, h = image.size
        if prep.height / h >= prep.width / w:
            size = (round(w * prep.height / h), prep.height)
        else:
            size = (prep.width, round(h * prep.width / w))
        image = image.resize(size, resample=RESAMPLE[prep.resample])
        left, top = (size[0] - prep.width) // 2, (size[1] - prep.height) // 2
        image = image.crop((left, top, left + prep.width, top + prep.height))
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def normalise(pixels: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """Step 5: uint8 [N, H, W, C] -> float32 [N, C, H, W] = (pixels / 255 - mean) / std."""
    mean = np.asarray(prep.mean, dtype=np.float32)
    std = np.asarray(prep.std, dtype=np.float32)
    x = (pixels.astype(np.float32) / np.float32(255) - mean) / std
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def preprocess(images: list[Image.Image], prep: Preprocessing) -> np.ndarray:
    """The whole rule for a batch: float32 [N, C, H, W]."""
    if not images:
        return np.zeros((0, prep.channels, prep.height, prep.width), dtype=np.float32)
    return normalise(np.stack([to_model_pixels(image, prep) for image in images]), prep)
