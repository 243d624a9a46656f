"""Untrusted image input: decoding it within limits, and the stored copies of support shots.

`load_image` is the only door for outside images: it checks size limits before decoding (pixels, and
the bytes the decoded image takes in its colour mode), forces a full decode and raises one `ImageError`
per problem, each naming the image. `decoded` does the same under a process-wide memory budget, so that
concurrent requests wait instead of multiplying the per-image limit. `thumbnail_png` makes the stored
copy of a support shot. What a loaded image becomes as model input is distilshot/core/preprocess.py's rule.
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

from distilshot.core.preprocess import STRIP_PIXELS, WIDE_INT_MODES, flatten
from distilshot.errors import DistilshotError, ImageError

ImageSource = str | Path | bytes | Image.Image | np.ndarray

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
DECODE_MEMORY_ENV = "DISTILSHOT_DECODE_MEMORY_MB"
DEFAULT_DECODE_MEMORY_MB = 1024

# Decoders we accept. Restricting Pillow to common raster formats keeps exotic parsers (and EPS, which
# would run Ghostscript) away from untrusted bytes.
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM")  # JPEG includes MPO
# uint8 pixel arrays by their channels (None: HxW): grey, grey, RGB, RGBA
ARRAY_CHANNELS = (None, 1, 3, 4)
# Modes that Pillow can convert to both "L" and "RGB" (e.g. LAB cannot become "L").
MODES = frozenset(
    {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "HSV", "I", "F"}
    | {"I;16", "I;16B", "I;16L", "I;16N"}
)
_ONE_BYTE = ("1", "L", "P")  # Pillow keeps 1 byte per pixel for these, 2 for "I;16*", 4 for the rest


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
def decoded(source: ImageSource, *, name: str | None = None) -> Iterator[Image.Image]:
    """`load_image` with its default limits, under the process-wide decode budget: the image's
    `decode_cost` is reserved from its header before its pixels are decoded (waiting while concurrent
    decodes hold the budget) and given back when the block ends, when an image decoded here is closed.
    Use the image only inside the block."""
    name = name or source_name(source, 0)
    image = _open(source, name, MAX_BYTES)
    _check_header(image, name, MAX_PIXELS, MAX_DECODED_BYTES, MIN_SIDE)
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
    """The image with only its header parsed (a PIL image as given, an array wrapped)."""
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        return _from_array(source, name)
    if isinstance(source, str | Path):
        data = _read_file(Path(source), name, max_bytes)
    elif isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        raise ImageError(
            f"{name}: expected a path, bytes, a PIL image or a numpy array, not {type(source).__name__}"
        )
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


def _from_array(array: np.ndarray, name: str) -> Image.Image:
    """A PIL image over a copy of a uint8 HxW, HxWx1, HxWx3 or HxWx4 array (grey, RGB, RGBA). Its size
    is checked against the pixel limits before the copy, as a file's header is."""
    channels = array.shape[2] if array.ndim == 3 else None
    if array.ndim not in (2, 3) or channels not in ARRAY_CHANNELS:
        raise ImageError(
            f"{name}: an image array must be HxW, HxWx1, HxWx3 or HxWx4, not of shape {array.shape}"
        )
    if array.dtype != np.uint8:
        raise ImageError(f"{name}: an image array must hold uint8 pixels (0-255), not {array.dtype}")
    height, width = array.shape[:2]
    if height * width > MAX_PIXELS:
        raise ImageError(
            f"{name}: {width}x{height} is {height * width} pixels, more than the limit of {MAX_PIXELS}"
        )
    pixels = array[:, :, 0] if channels == 1 else array
    return Image.fromarray(np.ascontiguousarray(pixels))  # uint8: L, RGB or RGBA by its shape


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


def thumbnail_png(image: Image.Image, max_side: int = THUMBNAIL_SIDE) -> bytes:
    """A PNG copy with the longest side at most `max_side`, upright and flattened, kept with support
    shots so a later model can re-embed them and a gallery can show them."""
    grey = image.mode in ("1", "L", "F", *WIDE_INT_MODES)  # the modes that flatten to grey
    flat = flatten(image, "L" if grey else "RGB")
    image = flat.copy() if flat is image else flat  # thumbnail() works in place
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=False)
    return buffer.getvalue()
