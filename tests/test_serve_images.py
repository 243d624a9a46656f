"""Loading untrusted images (one ImageError per problem) and the preprocessing rule, pixel by pixel."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps
from serve_fixtures import encode, noise, png_claiming, solid

from distilshot.core import preprocess as rule
from distilshot.core.manifest import Preprocessing
from distilshot.core.preprocess import normalise, preprocess, to_model_pixels
from distilshot.errors import DistilshotError, ImageError
from distilshot.serve.images import (
    DecodeBudget,
    decode_budget,
    decode_cost,
    decoded,
    decoded_bytes,
    load_image,
    load_stored_copy,
    thumbnail_png,
)
from distilshot.train.data.decode import decode_image


def prep(height: int, width: int | None = None, channels: int = 3, **kw: object) -> Preprocessing:
    return Preprocessing(
        height=height,
        width=width or height,
        channels=channels,
        mean=(0.5,) * channels,
        std=(0.25,) * channels,
        **kw,  # type: ignore[arg-type]
    )


# -- load_image -------------------------------------------------------------------------------------


def test_load_path_bytes_and_pil(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(encode(noise()))
    from_path = load_image(path)
    from_bytes = load_image(path.read_bytes())
    from_pil = load_image(noise())
    assert from_path.size == from_bytes.size == from_pil.size == (64, 48)
    assert np.array_equal(np.asarray(from_path), np.asarray(from_pil))
    assert load_image(encode(noise(), "JPEG")).format == "JPEG"


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(ImageError, match=r"nope\.png: file not found"):
        load_image(tmp_path / "nope.png")


def test_folder_is_not_an_image(tmp_path):
    with pytest.raises(ImageError, match="not a file"):
        load_image(tmp_path)


def test_text_file_is_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("hello, I am text\n")
    with pytest.raises(ImageError, match=r"notes\.png: not an image"):
        load_image(path)


def test_caller_supplied_name_is_used():
    with pytest.raises(ImageError, match=r"^upload\.jpg: not an image"):
        load_image(b"GIF? no", name="upload.jpg")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image(fmt):
    data = encode(noise(), fmt)
    with pytest.raises(ImageError, match="q: truncated or corrupt"):
        load_image(data[: len(data) // 2], name="q")


def test_corrupt_png_data():
    data = bytearray(encode(noise()))
    start = data.index(b"IDAT") + 40
    data[start : start + 60] = b"\x00" * 60
    with pytest.raises(ImageError, match="truncated or corrupt"):
        load_image(bytes(data), name="q")


def test_corrupt_jpeg_tables():
    data = bytearray(encode(noise(), "JPEG"))
    start = data.index(b"\xff\xc4") + 4  # inside the Huffman table
    data[start : start + 26] = b"\xff" * 26
    with pytest.raises(ImageError, match=r"q: .*corrupt"):
        load_image(bytes(data), name="q")


def test_corrupt_exif():
    with pytest.raises(ImageError, match="q: corrupt EXIF"):
        load_image(encode(noise(), exif=b"Exif\x00\x00garbage"), name="q")


def test_bomb_beyond_pillows_own_limit():
    with pytest.raises(ImageError, match="bomb"):
        load_image(png_claiming(100_000, 100_000), name="bomb.png")


def test_bomb_caught_by_our_limit_before_decoding():
    # 64 Mpx is under Pillow's limits, and the pixel data is missing: only our header check can
    # produce a "bomb" error here (a decode would have reported truncated data instead).
    with pytest.raises(ImageError, match=r"bomb\.png: 8000x8000 is 64000000 pixels.*bomb"):
        load_image(png_claiming(8000, 8000), name="bomb.png")
    with pytest.raises(ImageError, match="more than the limit of 1000"):
        load_image(noise(), max_pixels=1000)


def test_too_many_bytes(tmp_path):
    data = encode(noise())
    path = tmp_path / "big.png"
    path.write_bytes(data)
    with pytest.raises(ImageError, match=r"big\.png: \d+ bytes is more than the limit of 100 bytes"):
        load_image(path, max_bytes=100)
    with pytest.raises(ImageError, match="more than the limit of 100 bytes"):
        load_image(data, max_bytes=100)


def test_too_small():
    with pytest.raises(ImageError, match=r"tiny: 7x20 is too small"):
        load_image(encode(solid((1, 2, 3), (7, 20))), name="tiny")
    assert load_image(encode(solid((1, 2, 3), (8, 8)))).size == (8, 8)


def test_unsupported_mode_and_type():
    with pytest.raises(ImageError, match="colour mode 'LAB'"):
        load_image(Image.new("LAB", (10, 10)), name="lab")
    with pytest.raises(ImageError, match="expected a path, bytes, a PIL image or a numpy array"):
        load_image(42)  # type: ignore[arg-type]


# -- to_model_pixels --------------------------------------------------------------------------------


def test_exact_size_passes_through_unchanged():
    image = noise((16, 16))
    assert np.array_equal(to_model_pixels(image, prep(16)), np.asarray(image))


def test_exif_orientation_is_applied():
    image = Image.fromarray(np.arange(8 * 16 * 3, dtype=np.uint8).reshape(8, 16, 3))  # 16 wide, 8 high
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    loaded = load_image(encode(image, exif=exif))
    pixels = to_model_pixels(loaded, prep(16, 8))
    assert np.array_equal(pixels, np.rot90(np.asarray(image), k=-1))


def test_transparency_is_composited_over_white():
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[0, :, 3] = 255  # opaque row
    rgba[1, :, 3] = 0  # transparent row
    rgba[2:, :, 3] = 128
    pixels = to_model_pixels(load_image(encode(Image.fromarray(rgba, "RGBA"))), prep(8))
    assert (pixels[0] == (10, 20, 30)).all()
    assert (pixels[1] == 255).all()
    half = np.array([10, 20, 30]) * 128 / 255 + 255 * 127 / 255
    assert np.abs(pixels[2:].astype(float) - half).max() <= 1


def test_la_pa_and_palette_transparency():
    la = Image.fromarray(np.dstack([np.full((8, 8), 40, np.uint8), np.zeros((8, 8), np.uint8)]), "LA")
    assert (to_model_pixels(la, prep(8, channels=1)) == 255).all()
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    palette.putpixel((0, 0), 0)
    palette.info["transparency"] = 0
    pixels = to_model_pixels(load_image(encode(palette)), prep(8))
    assert tuple(pixels[0, 0]) == (255, 255, 255) and tuple(pixels[1, 1]) == (200, 100, 50)
    pa = palette.convert("PA")
    assert np.array_equal(to_model_pixels(pa, prep(8)), pixels)


def test_sixteen_bit_and_integer_modes_are_scaled_by_257():
    values = np.array([[0, 257, 300, 400, 32896, 65535, 514, 1000]], dtype=np.uint16)
    expected = np.array([0, 1, 1, 2, 128, 255, 2, 4], dtype=np.uint8)  # round(v / 257)
    rows = np.repeat(values, 8, axis=0)
    for mode, dtype in (("I;16", "<u2"), ("I;16L", "<u2"), ("I;16B", ">u2"), ("I;16N", "=u2")):
        image = Image.frombytes(mode, (8, 8), rows.astype(dtype).tobytes())
        pixels = to_model_pixels(image, prep(8, channels=1))
        assert np.array_equal(pixels[0, :, 0], expected), mode
    png = load_image(encode(Image.frombytes("I;16", (8, 8), rows.astype("<u2").tobytes())))
    assert np.array_equal(to_model_pixels(png, prep(8))[0, :, 1], expected)
    wide = np.array([[-5, 0, 70000, 514, 65535, 257, 128, 129]], dtype=np.int32)
    image = Image.fromarray(np.repeat(wide, 8, axis=0), "I")
    pixels = to_model_pixels(image, prep(8, channels=3))
    assert np.array_equal(pixels[0, :, 0], [0, 0, 255, 2, 255, 1, 0, 1])
    assert (pixels[..., 0] == pixels[..., 2]).all()


def test_float_mode_is_clipped_to_0_255_and_rounded():
    row = np.array([[-3.0, 0.4, 0.6, 254.7, 300.0, np.nan, 127.5, 100.0]], dtype=np.float32)
    image = Image.fromarray(np.repeat(row, 8, axis=0), "F")
    pixels = to_model_pixels(image, prep(8, channels=1))
    assert np.array_equal(pixels[0, :, 0], [0, 0, 1, 255, 255, 0, 128, 100])


@pytest.mark.parametrize("mode", ["1", "L", "P", "CMYK", "YCbCr", "RGBX"])
def test_other_modes_use_pillow_convert(mode):
    source = noise((8, 8)).convert(mode)
    for channels, target in ((3, "RGB"), (1, "L")):
        expected = np.asarray(source.convert(target)).reshape(8, 8, channels)
        assert np.array_equal(to_model_pixels(source, prep(8, channels=channels)), expected)


def test_shorter_side_resize_uses_python_round_then_center_crop():
    image = noise((15, 4))  # 15 wide, 4 high -> long side 15 * 6 / 4 = 22.5, round() gives 22
    expected = image.resize((22, 6), Image.Resampling.BILINEAR).crop((8, 0, 14, 6))
    assert np.array_equal(to_model_pixels(image, prep(6)), np.asarray(expected))
    tall = noise((10, 25), seed=1)  # shorter side is the width
    expected = tall.resize((4, 10), Image.Resampling.BILINEAR).crop((0, 3, 4, 7))
    assert np.array_equal(to_model_pixels(tall, prep(4)), np.asarray(expected))


def test_non_square_target_and_other_resample():
    image = noise((10, 10))  # to 4 high x 8 wide: scale = max(4/10, 8/10), so 8x8, then crop rows 2..6
    expected = image.resize((8, 8), Image.Resampling.BICUBIC).crop((0, 2, 8, 6))
    pixels = to_model_pixels(image, prep(4, 8, resample="bicubic"))
    assert pixels.shape == (4, 8, 3)
    assert np.array_equal(pixels, np.asarray(expected))


# -- normalisation ----------------------------------------------------------------------------------


def test_normalisation_by_hand():
    rgb = np.array([[[0, 255, 51], [102, 0, 0]], [[255, 255, 255], [0, 51, 102]]], dtype=np.uint8)
    p = Preprocessing(height=2, width=2, channels=3, mean=(0.5, 0.2, 0.0), std=(0.25, 0.2, 1.0))
    x = preprocess([Image.fromarray(rgb)], p)
    assert x.dtype == np.float32 and x.shape == (1, 3, 2, 2) and x.flags.c_contiguous
    # red: (v/255 - 0.5) / 0.25; green: (v/255 - 0.2) / 0.2; blue: v/255
    assert np.allclose(x[0, 0], [[-2.0, -0.4], [2.0, -2.0]], atol=1e-6)
    assert np.allclose(x[0, 1], [[4.0, -1.0], [4.0, 0.0]], atol=1e-6)
    assert np.allclose(x[0, 2], [[0.2, 0.0], [1.0, 0.4]], atol=1e-6)


def test_preprocess_batch_matches_pixels_and_empty_batch():
    images = [noise((30, 20), seed=s) for s in range(3)]
    p = prep(8)
    x = preprocess(images, p)
    assert x.shape == (3, 3, 8, 8)
    assert np.array_equal(x, normalise(np.stack([to_model_pixels(i, p) for i in images]), p))
    assert preprocess([], p).shape == (0, 3, 8, 8)
    grey = preprocess([images[0]], prep(8, channels=1))
    assert grey.shape == (1, 1, 8, 8)


def test_thumbnail_is_small_upright_png():
    image = noise((600, 300))
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90 degrees counter-clockwise to display
    thumb = Image.open(__import__("io").BytesIO(thumbnail_png(load_image(encode(image, exif=exif)))))
    assert thumb.format == "PNG" and thumb.size == (128, 256)


# -- memory: decoded bytes, lean conversion, the decode budget ------------------------------------------


def test_decoded_bytes_count_the_mode_and_are_limited_before_decoding():
    assert decoded_bytes("L", (100, 10)) == decoded_bytes("P", (100, 10)) == 1000
    assert decoded_bytes("I;16B", (100, 10)) == 2000
    assert decoded_bytes("F", (100, 10)) == decoded_bytes("RGB", (100, 10)) == 4000
    grey = encode(Image.new("L", (100, 100)))
    sixteen = encode(Image.new("I;16", (100, 100)))
    floats = encode(Image.new("F", (100, 100)), "TIFF")
    assert load_image(grey, max_decoded_bytes=20_000).size == (100, 100)
    assert load_image(sixteen, max_decoded_bytes=20_000).mode == "I;16"
    with pytest.raises(ImageError, match=r"f.tif: 100x100 in colour mode 'F' decodes to 40000 bytes.*20000"):
        load_image(floats, name="f.tif", max_decoded_bytes=20_000)
    with pytest.raises(ImageError, match="decodes to 40000 bytes"):
        load_image(encode(Image.new("RGB", (100, 100))), max_decoded_bytes=20_000)


def peak_rss_mb(script: str, *args: object) -> float:
    """Peak resident memory (MB) that `script` adds in a fresh interpreter beyond its imports (or beyond
    the peak when it resets `base`); `args` become its sys.argv[1:]."""
    # VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's (pytest's) peak.
    prologue = """
        import sys
        import numpy as np
        from PIL import Image
        from distilshot.serve.images import load_image, thumbnail_png
        from distilshot.core.preprocess import to_model_pixels
        from distilshot.core.manifest import Preprocessing
        def hwm():
            status = open("/proc/self/status").read()
            return int(status.split("VmHWM:")[1].split()[0])  # kB
        base = hwm()
    """
    epilogue = "\nprint((hwm() - base) / 1024)\n"
    code = textwrap.dedent(prologue) + textwrap.dedent(script) + epilogue
    # A fixed mmap threshold makes glibc return freed image memory at once, so the peak measures what the
    # code holds rather than what per-thread malloc arenas happened to keep.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    result = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stderr
    return float(result.stdout.split()[-1])


def float_tiff_file(path: Path, size: tuple[int, int]) -> Path:
    """A deflate-compressed float TIFF of one grey: a few hundred KB on disk, 4 bytes per pixel decoded."""
    Image.new("F", size, 7.0).save(path, "TIFF", compression="tiff_adobe_deflate")
    return path


def test_a_small_float_tiff_of_6000x6600_is_refused_before_it_is_decoded(tmp_path):
    # 254 KB on disk, 158 MB decoded and over 1 GB while converted before the decoded-bytes limit
    path = float_tiff_file(tmp_path / "float.tif", (6000, 6600))
    assert path.stat().st_size < 300_000
    added = peak_rss_mb(
        """
        from distilshot.errors import ImageError
        try:
            load_image(sys.argv[1])
            sys.exit("accepted")
        except ImageError as error:
            assert "6000x6600 in colour mode 'F' decodes to 158400000 bytes" in str(error), error
        """,
        path,
    )
    assert added < 10, added


@pytest.mark.parametrize("mode", ["F", "I;16", "RGBA"])
def test_converting_wide_and_transparent_modes_holds_little_more_than_the_image(mode):
    """The float or 16-bit image and its 8-bit conversion, not 8-byte numpy copies of it (a float image
    used to peak at 8 times its size)."""
    width, height = 4000, 3000
    added = peak_rss_mb(f"""
        image = Image.new({mode!r}, ({width}, {height}), 200 if {mode!r} != "RGBA" else (1, 2, 3, 100))
        base = hwm()
        for channels in (1, 3):
            to_model_pixels(image, Preprocessing(84, 84, channels, (0.5,) * channels, (0.25,) * channels))
        thumbnail_png(image)
    """)
    # the RGB conversion (4 bytes per pixel) plus strips; the image itself exists already
    assert added < 4 * width * height / 2**20 + 20, added


def strip_parity_images() -> dict[str, Image.Image]:
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (23, 37, 3), dtype=np.uint8)
    palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 3
    rgba = Image.fromarray(np.dstack([rgb, rng.integers(0, 256, (23, 37), dtype=np.uint8)]), "RGBA")
    floats = rng.uniform(-20, 280, (23, 37)).astype(np.float32)
    floats[3, 4] = np.nan
    return {
        "RGB": Image.fromarray(rgb),
        "RGBA": rgba,
        "LA": rgba.convert("LA"),
        "PA": palette.convert("PA"),
        "P+transparency": palette,
        "P": Image.fromarray(rgb).convert("P"),
        "L": Image.fromarray(rgb[..., 0]),
        "1": Image.fromarray(rgb[..., 0] > 127),
        "CMYK": Image.fromarray(rgb).convert("CMYK"),
        "YCbCr": Image.fromarray(rgb).convert("YCbCr"),
        "I;16": Image.fromarray(rng.integers(0, 65536, (23, 37), dtype=np.uint16)),
        "I": Image.fromarray(rng.integers(-70000, 140000, (23, 37), dtype=np.int32), "I"),
        "F": Image.fromarray(floats, "F"),
    }


def whole_image_rule(image: Image.Image, size: int, channels: int) -> np.ndarray:
    """Steps 1-4 of distilshot/core/preprocess.py's rule written out independently, on the whole image
    and with the orientation applied first (as training implemented it before the rule had one home)."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    elif image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        values = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.rint(np.clip(values, 0, 65535) / 257).astype(np.uint8))
    elif image.mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0)
        image = Image.fromarray(np.rint(np.clip(values, 0, 255)).astype(np.uint8))
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


@pytest.mark.parametrize("orientation", range(1, 9))
def test_strip_by_strip_conversion_matches_the_whole_image_rule(monkeypatch, orientation):
    monkeypatch.setattr(rule, "STRIP_PIXELS", 50)  # a strip of one row: 23 strips per image
    for name, image in strip_parity_images().items():
        image.getexif()[0x0112] = orientation
        for size, channels in ((16, 1), (16, 3), (9, 3)):
            expected = whole_image_rule(image, size, channels)
            served = to_model_pixels(image, prep(size, channels=channels))
            assert np.array_equal(served, expected), (name, orientation, size)
            assert np.array_equal(decode_image(image, size, channels), expected), (name, orientation, size)
        thumb = Image.open(io.BytesIO(thumbnail_png(image)))
        upright = (37, 23) if orientation < 5 else (23, 37)
        assert thumb.size == upright and thumb.mode in ("L", "RGB"), name


def test_decoded_holds_its_cost_from_the_budget_until_the_block_ends():
    data = encode(noise((40, 30)))
    before = decode_budget().used
    with decoded(data, name="q") as image:
        assert decode_budget().used - before == decode_cost("RGB", (40, 30))
        assert to_model_pixels(image, prep(8)).shape == (8, 8, 3)
    assert decode_budget().used == before
    with pytest.raises(ImageError, match="q: not an image"), decoded(b"nope", name="q"):
        pass
    assert decode_budget().used == before


def test_the_budget_makes_decodes_wait_first_come_first_served():
    budget = DecodeBudget(100)
    order: list[str] = []
    release = threading.Event()

    def hold(label: str, cost: int) -> None:
        with budget.reserve(cost):
            order.append(label)
            release.wait(5)

    first = threading.Thread(target=hold, args=("big", 80))
    first.start()
    while budget.used != 80:
        time.sleep(0.001)
    later = [
        threading.Thread(target=hold, args=(label, cost)) for label, cost in (("also big", 60), ("small", 10))
    ]
    for thread in later:
        thread.start()
        time.sleep(0.05)
    assert order == ["big"] and budget.used == 80  # "small" would fit but waits its turn
    release.set()
    for thread in [first, *later]:
        thread.join(5)
    assert order == ["big", "also big", "small"] and budget.used == 0
    with budget.reserve(10**12):  # more than the whole budget: runs alone instead of never
        assert budget.used == 100
    with pytest.raises(DistilshotError, match="positive number of bytes"):
        DecodeBudget(0)


def test_concurrent_decodes_do_not_add_up_beyond_the_budget(tmp_path):
    """Four threads decoding a 48 MB float image: with the budget for one decode, the peak stays within
    that one decode's cost, not four decodes'."""
    script = """
        import threading
        from distilshot.serve.images import decode_cost, decoded, set_decode_memory
        data = open(sys.argv[2], "rb").read()
        set_decode_memory(decode_cost("F", (4000, 3000)) if sys.argv[1] == "one" else 10**12)
        prep = Preprocessing(84, 84, 3, (0.5,) * 3, (0.25,) * 3)
        start, decoded_all = threading.Barrier(4), threading.Barrier(4)
        def work():
            start.wait()
            with decoded(data) as image:
                to_model_pixels(image, prep)
                if sys.argv[1] != "one":
                    decoded_all.wait(30)  # all four images at once, whatever the scheduling
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads: t.start()
        for t in threads: t.join()
    """
    path = float_tiff_file(tmp_path / "float.tif", (4000, 3000))
    peaks = {budget: peak_rss_mb(script, budget, path) for budget in ("one", "unlimited")}
    assert peaks["one"] < decode_cost("F", (4000, 3000)) / 2**20 + 20, peaks  # what the budget allows
    assert peaks["unlimited"] > 4 * 4 * 4000 * 3000 / 2**20, peaks  # without it, four images add up


def test_stored_copies_must_be_small_8_bit_pngs():
    assert load_stored_copy(encode(noise((256, 100))), name="s").size == (256, 100)
    assert load_stored_copy(encode(noise((20, 9)).convert("L")), name="s").mode == "L"
    cases = {
        encode(noise((257, 100))): "at most 256 px on its longest side, not 257x100",
        encode(noise((64, 48)), "JPEG"): "must be a PNG",
        encode(noise((64, 48)), "TIFF"): "must be a PNG",
        encode(Image.new("I;16", (64, 48))): "8-bit grey or RGB PNG, not PNG 'I;16'",
        encode(noise((64, 48)).convert("RGBA")): "not PNG 'RGBA'",
        encode(noise((64, 48)).convert("P")): "not PNG 'P'",
        png_claiming(6000, 6600): "not 6000x6600",
        encode(noise((64, 48)), pnginfo=_big_text_chunk()): "more than the limit",
    }
    for data, match in cases.items():
        with pytest.raises(ImageError, match=match):
            load_stored_copy(data, name="shot 3")


def _big_text_chunk() -> object:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("padding", "x" * 500_000)
    return info


@pytest.mark.parametrize(
    ("shape", "mode"), [((12, 10), "L"), ((12, 10, 1), "L"), ((12, 10, 3), "RGB"), ((12, 10, 4), "RGBA")]
)
def test_uint8_arrays_are_images_of_their_channels(shape, mode):
    pixels = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    image = load_image(pixels)
    assert image.mode == mode and image.size == (10, 12)
    assert np.array_equal(np.asarray(image), pixels.reshape(image.size[1], image.size[0], -1).squeeze())
    with decoded(pixels[::-1]) as flipped:  # a view with negative strides is copied, not misread
        assert np.array_equal(np.asarray(flipped), pixels[::-1].squeeze())
    assert decode_budget().used == 0


def test_arrays_get_the_limits_of_files():
    for pixels, message in [
        (np.zeros((12, 10, 2), np.uint8), r"HxW, HxWx1, HxWx3 or HxWx4, not of shape \(12, 10, 2\)"),
        (np.zeros((2, 12, 10, 3), np.uint8), "not of shape"),
        (np.zeros((12, 10), np.float32), "uint8 pixels .* not float32"),
        (np.zeros((12, 10), bool), "not bool"),
        (np.zeros((4, 30), np.uint8), "30x4 is too small"),
    ]:
        with pytest.raises(ImageError, match=message):
            load_image(pixels, name="arr")
    huge = np.lib.stride_tricks.as_strided(
        np.zeros(1, np.uint8), (8000, 6000), (0, 0)
    )  # 48 Mpixel, no memory
    with pytest.raises(ImageError, match="more than the limit of 40000000"):
        load_image(huge)
