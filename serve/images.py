"""Turning untrusted image input into model pixels.

`load_image` is the only door for outside images: it checks size limits before decoding, forces a full
decode and raises one `ImageError` per problem, each naming the image. `to_model_pixels` and
`preprocess` implement the preprocessing rule shared with training (which implements it independently;
a test compares the two bit for bit), so they follow the written rule literally.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from distilshot.errors import ImageError
from distilshot.serve.manifest import Preprocessing

ImageSource = str | Path | bytes | Image.Image

MAX_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000
MIN_SIDE = 8
THUMBNAIL_SIDE = 256

# Decoders we accept. Restricting Pillow to common raster formats keeps exotic parsers (and EPS, which
# would run Ghostscript) away from untrusted bytes.
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM")  # JPEG includes MPO
# Modes that Pillow can convert to both "L" and "RGB" (e.g. LAB cannot become "L").
MODES = frozenset(
    {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "HSV", "I", "F"}
    | {"I;16", "I;16B", "I;16L", "I;16N"}
)
_WIDE_INT = ("I", "I;16", "I;16B", "I;16L", "I;16N")
_TRANSPARENT = ("RGBA", "LA", "PA")
RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def source_name(source: ImageSource, index: int) -> str:
    """A name for messages and results: the path as given, a PIL image's file name, or `image <n>`."""
    if isinstance(source, str | Path):
        return str(source)
    if isinstance(source, Image.Image) and getattr(source, "filename", ""):
        return str(source.filename)
    return f"image {index + 1}"


def load_image(
    source: ImageSource,
    *,
    name: str | None = None,
    max_bytes: int = MAX_BYTES,
    max_pixels: int = MAX_PIXELS,
    min_side: int = MIN_SIDE,
) -> Image.Image:
    """Reads and fully decodes an image, or raises an ImageError naming it (`name`, else the path)."""
    name = name or source_name(source, 0)
    if isinstance(source, Image.Image):
        return _checked(source, name, max_pixels, min_side)
    if isinstance(source, str | Path):
        data = _read_file(Path(source), name, max_bytes)
    elif isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        raise ImageError(f"{name}: expected a path, bytes or a PIL image, not {type(source).__name__}")
    if len(data) > max_bytes:
        raise ImageError(f"{name}: {len(data)} bytes is more than the limit of {max_bytes} bytes")
    formats = _decoders()
    try:
        # Only parses the header; pixel data is decoded in `_checked` after the size checks.
        image = Image.open(io.BytesIO(data), formats=formats)
    except UnidentifiedImageError:
        raise ImageError(
            f"{name}: not an image or not a supported format (supported: {', '.join(formats)})"
        ) from None
    except Image.DecompressionBombError as error:
        raise ImageError(f"{name}: too many pixels to decode safely (decompression bomb?): {error}") from None
    except Exception as error:  # a malformed header can make any plugin raise anything
        raise ImageError(f"{name}: corrupt image header ({error})") from None
    return _checked(image, name, max_pixels, min_side)


@functools.cache
def _decoders() -> tuple[str, ...]:
    """FORMATS that this Pillow build can read (WebP, for one, is optional)."""
    Image.init()
    return tuple(f for f in FORMATS if f in Image.OPEN)


def _read_file(path: Path, name: str, max_bytes: int) -> bytes:
    if not path.exists():
        raise ImageError(f"{name}: file not found")
    if not path.is_file():
        raise ImageError(f"{name}: not a file")
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise ImageError(f"{name}: {size} bytes is more than the limit of {max_bytes} bytes")
        with open(path, "rb") as f:
            return f.read(max_bytes + 1)  # the file may grow after stat; the caller re-checks the length
    except OSError as error:
        raise ImageError(f"{name}: cannot read the file ({error.strerror or error})") from None


def _checked(image: Image.Image, name: str, max_pixels: int, min_side: int) -> Image.Image:
    width, height = image.size
    # Our own limit, checked before decoding: Pillow's MAX_IMAGE_PIXELS only warns below twice its value.
    if width * height > max_pixels:
        raise ImageError(
            f"{name}: {width}x{height} is {width * height} pixels, more than the limit of {max_pixels} "
            "(decompression bomb?)"
        )
    if min(width, height) < min_side:
        raise ImageError(
            f"{name}: {width}x{height} is too small; both sides must be at least {min_side} pixels"
        )
    if image.mode not in MODES:
        raise ImageError(f"{name}: colour mode {image.mode!r} is not supported")
    try:
        image.load()  # lazy images decode here: a truncated or corrupt file fails now, not later
    except Exception as error:  # decoders raise OSError, SyntaxError, ValueError, ... on bad data
        raise ImageError(f"{name}: truncated or corrupt image data ({error})") from None
    try:
        image.getexif()  # parsed now (and cached) so that EXIF orientation cannot fail later
    except Exception as error:
        raise ImageError(f"{name}: corrupt EXIF metadata ({error})") from None
    return image


def flatten(image: Image.Image) -> Image.Image:
    """Steps 1-2 of the rule: EXIF orientation applied, transparency composited over white, integer and
    float modes brought to 8 bits. The result still has the source's colours (e.g. "L" stays grey)."""
    image = ImageOps.exif_transpose(image)
    if image.mode in _TRANSPARENT or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    elif image.mode in _WIDE_INT:
        values = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.rint(np.clip(values, 0, 65535) / 257).astype(np.uint8))
    elif image.mode == "F":
        # Float pixels are taken as 0..255 and rounded like the integer modes (NaN counts as 0).
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0)
        image = Image.fromarray(np.rint(np.clip(values, 0, 255)).astype(np.uint8))
    return image


def to_model_pixels(image: Image.Image, prep: Preprocessing) -> np.ndarray:
    """Steps 1-4 of the rule: uint8 [H, W, C] exactly as the model sees them before normalisation."""
    image = flatten(image).convert("L" if prep.channels == 1 else "RGB")
    if image.size != (prep.width, prep.height):
        w, h = image.size
        # Scale the side that needs the larger factor onto its target; written as in the rule
        # (round(long * target / short)) so both implementations round identically.
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


def thumbnail_png(image: Image.Image, max_side: int = THUMBNAIL_SIDE) -> bytes:
    """A PNG copy with the longest side at most `max_side`, upright and flattened, kept with support
    shots so a later model can re-embed them and a gallery can show them."""
    image = flatten(image)
    image = image.convert("L" if image.mode in ("1", "L") else "RGB")
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=False)
    return buffer.getvalue()
