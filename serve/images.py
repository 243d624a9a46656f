"""Turning untrusted image input into model pixels.

`load_image` is the only door for outside images: it checks size limits before decoding (pixels, and
the bytes the decoded image takes in its colour mode), forces a full decode and raises one `ImageError`
per problem, each naming the image. `decoded` does the same under a process-wide memory budget, so that
concurrent requests wait instead of multiplying the per-image limit. `to_model_pixels` and `preprocess`
implement the preprocessing rule shared with training (which implements it independently; a test
compares the two bit for bit).
"""

from __future__ import annotations

import functools
import io
import os
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from distilshot.core.manifest import Preprocessing
from distilshot.errors import DistilshotError, ImageError

ImageSource = str | Path | bytes | Image.Image

MAX_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000
# Decoded size in Pillow's memory (see `decoded_bytes`): 33.5 Mpixel of RGB, RGBA, CMYK, 32-bit or float,
# 67 Mpixel of 16-bit; grey and palette images stay under MAX_PIXELS.
MAX_DECODED_BYTES = 128 * 1024 * 1024
MIN_SIDE = 8
THUMBNAIL_SIDE = 256
# Stored copies are 8-bit PNGs of at most THUMBNAIL_SIDE^2 pixels, about 197 KB at worst uncompressed;
# twice that leaves room for any PNG Pillow writes and none for padding chunks.
MAX_STORED_COPY_BYTES = 2 * 3 * THUMBNAIL_SIDE**2
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Pixels converted at a time by `flatten`; its numpy steps take about 30 bytes per pixel of a strip.
STRIP_PIXELS = 1 << 18
DECODE_MEMORY_ENV = "DISTILSHOT_DECODE_MEMORY_MB"
DEFAULT_DECODE_MEMORY_MB = 1024

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
_ONE_BYTE = ("1", "L", "P")  # Pillow keeps 1 byte per pixel for these, 2 for "I;16*", 4 for the rest
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
    max_decoded_bytes: int = MAX_DECODED_BYTES,
    min_side: int = MIN_SIDE,
) -> Image.Image:
    """Reads and fully decodes an image, or raises an ImageError naming it (`name`, else the path)."""
    name = name or source_name(source, 0)
    image = _open(source, name, max_bytes)
    _check_header(image, name, max_pixels, max_decoded_bytes, min_side)
    _decode(image, name)
    return image


@contextmanager
def decoded(
    source: ImageSource,
    *,
    name: str | None = None,
    max_bytes: int = MAX_BYTES,
    max_pixels: int = MAX_PIXELS,
    max_decoded_bytes: int = MAX_DECODED_BYTES,
    min_side: int = MIN_SIDE,
) -> Iterator[Image.Image]:
    """`load_image` under the process-wide decode budget: the image's `decode_cost` is reserved from its
    header before its pixels are decoded (waiting while concurrent decodes hold the budget) and given
    back when the block ends, when an image decoded here is closed. Use the image only inside the block."""
    name = name or source_name(source, 0)
    image = _open(source, name, max_bytes)
    _check_header(image, name, max_pixels, max_decoded_bytes, min_side)
    with decode_budget().reserve(decode_cost(image.mode, image.size)):
        try:
            _decode(image, name)
            yield image
        finally:
            if image is not source:
                image.close()  # frees the pixels now, not when the last reference goes


def load_stored_copy(data: bytes, *, name: str) -> Image.Image:
    """Decodes a support shot's stored copy, which must be what `thumbnail_png` makes: an 8-bit grey or
    RGB PNG, one frame, longest side at most THUMBNAIL_SIDE. Anything else is refused before decoding
    (ImageError), so a store file from elsewhere cannot hand the server a large or exotic image."""
    if not isinstance(data, bytes) or not data.startswith(PNG_SIGNATURE):
        raise ImageError(f"{name}: not an image in PNG format; a stored copy must be a PNG image")
    image = _open(data, name, MAX_STORED_COPY_BYTES)
    width, height = image.size
    if image.format != "PNG" or image.mode not in ("L", "RGB") or getattr(image, "n_frames", 1) != 1:
        raise ImageError(
            f"{name}: a stored copy must be a single-frame 8-bit grey or RGB PNG, not {image.format} "
            f"{image.mode!r}" + (" (animated)" if getattr(image, "n_frames", 1) != 1 else "")
        )
    if max(width, height) > THUMBNAIL_SIDE:
        raise ImageError(
            f"{name}: a stored copy is at most {THUMBNAIL_SIDE} px on its longest side, not {width}x{height}"
        )
    _check_header(image, name, THUMBNAIL_SIDE**2, MAX_DECODED_BYTES, 1)
    _decode(image, name)
    return image


def decoded_bytes(mode: str, size: tuple[int, int]) -> int:
    """What the decoded image takes in Pillow's memory: 1 byte per pixel for "1", "L" and "P", 2 for
    16-bit, 4 for everything else (Pillow keeps RGB, LA and YCbCr in 4 bytes too)."""
    per_pixel = 1 if mode in _ONE_BYTE else 2 if mode.startswith("I;16") else 4
    return size[0] * size[1] * per_pixel


def decode_cost(mode: str, size: tuple[int, int]) -> int:
    """The most that decoding and preprocessing one image holds at once: the decoded image, two 8-bit
    copies of up to 4 bytes per pixel (the converted image and its upright or thumbnail copy) and the
    strips `flatten` converts at a time."""
    return decoded_bytes(mode, size) + 8 * size[0] * size[1] + 32 * STRIP_PIXELS


class DecodeBudget:
    """A process-wide bound on the bytes that image decodes hold at once. Each decode reserves its cost
    and gives it back when done; a reservation waits, first come first served, until it fits. A cost
    larger than the whole budget is cut to the budget: that decode runs alone."""

    def __init__(self, total: int) -> None:
        self._condition = threading.Condition()
        self._queue: deque[object] = deque()
        self._used = 0
        self.total = self._checked_total(total)

    @staticmethod
    def _checked_total(total: int) -> int:
        if isinstance(total, bool) or not isinstance(total, int) or total < 1:
            raise DistilshotError(
                f"the decode memory budget must be a positive number of bytes, not {total!r}"
            )
        return total

    def set_total(self, total: int) -> None:
        with self._condition:
            self.total = self._checked_total(total)
            self._condition.notify_all()

    @property
    def used(self) -> int:
        """Bytes reserved now."""
        with self._condition:
            return self._used

    @contextmanager
    def reserve(self, cost: int) -> Iterator[None]:
        ticket = object()
        with self._condition:
            self._queue.append(ticket)
            try:
                self._condition.wait_for(
                    lambda: self._queue[0] is ticket and self._used + min(cost, self.total) <= self.total
                )
            finally:
                self._queue.remove(ticket)
                self._condition.notify_all()  # the next in line may fit too
            held = min(cost, self.total)
            self._used += held
        try:
            yield
        finally:
            with self._condition:
                self._used -= held
                self._condition.notify_all()


_BUDGET: DecodeBudget | None = None
_BUDGET_LOCK = threading.Lock()


def decode_budget() -> DecodeBudget:
    """The process-wide budget: DISTILSHOT_DECODE_MEMORY_MB megabytes (default 1024), unless
    `set_decode_memory` chose another."""
    global _BUDGET
    with _BUDGET_LOCK:
        if _BUDGET is None:
            value = os.environ.get(DECODE_MEMORY_ENV, str(DEFAULT_DECODE_MEMORY_MB))
            try:
                megabytes = int(value)
            except ValueError:
                megabytes = 0
            if megabytes < 1:
                raise DistilshotError(
                    f"{DECODE_MEMORY_ENV} must be a positive whole number of MB, not {value!r}"
                )
            _BUDGET = DecodeBudget(megabytes * 1024 * 1024)
        return _BUDGET


def set_decode_memory(total_bytes: int) -> None:
    """Sets the process-wide decode budget (bytes); decodes waiting now see it at once."""
    global _BUDGET
    with _BUDGET_LOCK:
        if _BUDGET is None:
            _BUDGET = DecodeBudget(total_bytes)
            return
    _BUDGET.set_total(total_bytes)


def _open(source: ImageSource, name: str, max_bytes: int) -> Image.Image:
    """The image with only its header parsed (a PIL image as given)."""
    if isinstance(source, Image.Image):
        return source
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
        return Image.open(io.BytesIO(data), formats=formats)
    except UnidentifiedImageError:
        raise ImageError(
            f"{name}: not an image or not a supported format (supported: {', '.join(formats)})"
        ) from None
    except Image.DecompressionBombError as error:
        raise ImageError(f"{name}: too many pixels to decode safely (decompression bomb?): {error}") from None
    except Exception as error:  # a malformed header can make any plugin raise anything
        raise ImageError(f"{name}: corrupt image header ({error})") from None


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


def _check_header(
    image: Image.Image, name: str, max_pixels: int, max_decoded_bytes: int, min_side: int
) -> None:
    """Our own limits, checked before decoding: Pillow's MAX_IMAGE_PIXELS only warns below twice its value."""
    width, height = image.size
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
    size = decoded_bytes(image.mode, image.size)
    if size > max_decoded_bytes:
        raise ImageError(
            f"{name}: {width}x{height} in colour mode {image.mode!r} decodes to {size} bytes, more than "
            f"the limit of {max_decoded_bytes} bytes; send it smaller or in 8 bits per channel"
        )


def _decode(image: Image.Image, name: str) -> None:
    try:
        image.load()  # lazy images decode here: a truncated or corrupt file fails now, not later
    except Exception as error:  # decoders raise OSError, SyntaxError, ValueError, ... on bad data
        raise ImageError(f"{name}: truncated or corrupt image data ({error})") from None
    try:
        image.getexif()  # parsed now (and cached) so that EXIF orientation cannot fail later
    except Exception as error:
        raise ImageError(f"{name}: corrupt EXIF metadata ({error})") from None


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
    if image.mode in _WIDE_INT:
        values = np.asarray(image, dtype=np.float64)
        return Image.fromarray(np.rint(np.clip(values, 0, 65535) / 257).astype(np.uint8))
    if image.mode == "F":
        # Float pixels are taken as 0..255 and rounded like the integer modes (NaN counts as 0).
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0)
        return Image.fromarray(np.rint(np.clip(values, 0, 255)).astype(np.uint8))
    return image


def to_model_pixels(image: Image.Image, prep: Preprocessing) -> np.ndarray:
    """Steps 1-4 of the rule: uint8 [H, W, C] exactly as the model sees them before normalisation."""
    image = flatten(image, "L" if prep.channels == 1 else "RGB")
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
    grey = image.mode in ("1", "L", "F", *_WIDE_INT)  # the modes that flatten to grey
    flat = flatten(image, "L" if grey else "RGB")
    image = flat.copy() if flat is image else flat  # thumbnail() works in place
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=False)
    return buffer.getvalue()
