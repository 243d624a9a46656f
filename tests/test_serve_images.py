"""Loading untrusted images (one ImageError per problem) and the preprocessing rule, pixel by pixel."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from serve_fixtures import encode, noise, png_claiming, solid

from distilshot.errors import ImageError
from distilshot.serve.images import (
    load_image,
    normalise,
    preprocess,
    thumbnail_png,
    to_model_pixels,
)
from distilshot.serve.manifest import Preprocessing


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
    with pytest.raises(ImageError, match="expected a path, bytes or a PIL image"):
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
