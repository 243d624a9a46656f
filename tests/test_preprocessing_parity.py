"""Training and serving turn an image into model input by one rule (distilshot/core/preprocess.py), reached
through two doors: train/data/decode.py opens dataset files, serve/images.py loads untrusted input. These
tests hold the two paths to bit-identical pixels on real dataset files and on every image mode users send,
and to identical normalised input."""

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distilshot.core.manifest import Preprocessing
from distilshot.core.preprocess import normalise, to_model_pixels
from distilshot.serve.images import load_image
from distilshot.train.augment import normalize, to_float
from distilshot.train.data.decode import decode_image
from distilshot.train.data.registry import dataset_info

DATA = Path(os.environ["DISTILSHOT_DATA"])


def prep_for(size: int, channels: int) -> Preprocessing:
    return Preprocessing(size, size, channels, (0.5,) * channels, (0.25,) * channels)


def omniglot_files(count: int) -> list[Path]:
    root = DATA / "omniglot" / "images_evaluation"
    return sorted(root.glob("*/character01/*.png"))[:count]


def synthetic_images() -> dict[str, Image.Image]:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    rgba = Image.fromarray(np.dstack([rgb, rng.integers(0, 256, (37, 53), dtype=np.uint8)]), "RGBA")
    palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 3
    jpeg = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: exif_transpose must turn it upright
    Image.fromarray(rgb).save(jpeg, "JPEG", exif=exif)
    return {
        "RGB": Image.fromarray(rgb),
        "RGBA": rgba,
        "L": Image.fromarray(rgb[..., 0]),
        "1": Image.fromarray(rgb[..., 0] > 127),
        "P+transparency": palette,
        "CMYK": Image.fromarray(rgb).convert("CMYK"),
        "I;16": Image.fromarray(rng.integers(0, 65536, (37, 53), dtype=np.uint16)),
        "LA": Image.fromarray(rgb[..., 0]).convert("LA"),
        "EXIF JPEG": Image.open(io.BytesIO(jpeg.getvalue())),
    }


@pytest.mark.parametrize("size", [28, 84])
def test_real_omniglot_files_decode_identically(size: int) -> None:
    prep = prep_for(size, 1)
    for path in omniglot_files(12):
        expected = decode_image(path, size, 1)
        assert np.array_equal(to_model_pixels(load_image(path), prep), expected), path


@pytest.mark.parametrize(("size", "channels"), [(28, 1), (32, 3), (84, 3), (20, 1)])
def test_every_mode_decodes_identically(size: int, channels: int) -> None:
    prep = prep_for(size, channels)
    for mode, image in synthetic_images().items():
        buffer = io.BytesIO()
        image.save(buffer, "JPEG" if mode in ("CMYK", "EXIF JPEG") else "PNG", exif=image.getexif())
        served = to_model_pixels(load_image(buffer.getvalue()), prep)
        trained = decode_image(Image.open(io.BytesIO(buffer.getvalue())), size, channels)
        assert np.array_equal(served, trained), mode


def test_normalised_input_is_identical() -> None:
    info = dataset_info("cifar-fs")
    prep = Preprocessing(32, 32, 3, info.mean, info.std)
    pixels = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    served = normalise(pixels, prep)
    trained = normalize(to_float(pixels), info.mean, info.std).numpy()
    np.testing.assert_allclose(served, trained, rtol=0, atol=1e-6)
