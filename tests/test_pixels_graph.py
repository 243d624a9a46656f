"""export/pixels_graph.py: decoded pixels -> embeddings in one ONNX graph, against the Python runtime
(distilshot/core/preprocess.py's rule, which serve runs, then embedder.onnx) on real Omniglot drawings and
CIFAR photos at their own and other sizes.

Thresholds: the Resize runs Pillow's fixed-point arithmetic with weights onnxruntime derives in float32
where Pillow uses float64, so a sum lying within a weight's rounding of a level boundary can round the
other way: no pixel may differ by more than one level, and without a resize nothing may differ at all
(the normalisation is the same float32 operations). One level on a few pixels keeps embeddings at cosine
>= 0.9999, the issue's bar, which a plain bilinear resize (what "resample": "bilinear" suggests to an
app) misses: Pillow's filter widens with the downscale factor."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from edge_graphs import (
    CIFAR_PREP,
    OMNIGLOT_PREP,
    cifar_photos,
    conv_embedder,
    cosines,
    omniglot_drawings,
    session,
)
from PIL import Image

from distilshot.core.manifest import Preprocessing, load_manifest
from distilshot.core.preprocess import flatten, preprocess
from distilshot.errors import BundleError
from distilshot.export.pixels_graph import PIXELS_INPUT, pixels_model, preprocessing_model

BAR = 0.9999
LEVEL = 1 / 255  # one uint8 level after scaling to [0, 1]


def app_pixels(image: Image.Image, channels: int) -> np.ndarray:
    """What an app hands the graph: the decoded image in the bundle's channels, uint8 [1, H, W, C]."""
    array = np.asarray(flatten(image, "L" if channels == 1 else "RGB"))
    return array.reshape(1, image.height, image.width, channels)


def resized(images: list[Image.Image], size: tuple[int, int] | None, channels: int) -> list[Image.Image]:
    """The images as another camera or scanner would give them: resampled to `size` (w, h)."""
    if size is None:
        return images
    mode = "L" if channels == 1 else "RGB"
    return [image.convert(mode).resize(size, Image.Resampling.LANCZOS) for image in images]


def without_antialias(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with a plain bilinear Resize: the filter an app would take from the manifest's name."""
    plain = onnx.ModelProto()
    plain.CopyFrom(model)
    for node in plain.graph.node:
        if node.op_type == "Resize":
            kept = [a for a in node.attribute if a.name not in ("antialias", "exclude_outside")]
            del node.attribute[:]
            node.attribute.extend(kept)
    return plain


def embeddings(graph: onnx.ModelProto, images: list[Image.Image], channels: int) -> np.ndarray:
    run = session(graph)
    return np.concatenate([run.run(None, {PIXELS_INPUT: app_pixels(i, channels)})[0] for i in images])


def normalised_pixels(prep: Preprocessing, images: list[Image.Image], *, rgba: bool = False) -> np.ndarray:
    run = session(preprocessing_model(prep, "image", rgba=rgba))

    def pixels(image: Image.Image) -> np.ndarray:
        return np.asarray(image)[None] if rgba else app_pixels(image, prep.channels)

    return np.concatenate([run.run(None, {PIXELS_INPUT: pixels(i)})[0] for i in images])


def min_cosine(
    graph: onnx.ModelProto, embedder: onnx.ModelProto, prep: Preprocessing, images: list[Image.Image]
) -> float:
    """The smallest cosine between the embeddings of pixels graph `graph` and the Python runtime's."""
    assert [o.name for o in graph.graph.output] == [o.name for o in embedder.graph.output]
    python = session(embedder).run(None, {"image": preprocess(images, prep)})[0]
    return float(cosines(embeddings(graph, images, prep.channels), python).min())


def parity(embedder: onnx.ModelProto, prep: Preprocessing, images: list[Image.Image]) -> tuple[float, float]:
    """`min_cosine` of the pixels graph, then of the same graph resizing by plain bilinear interpolation."""
    graph = pixels_model(embedder, prep)
    return min_cosine(graph, embedder, prep, images), min_cosine(
        without_antialias(graph), embedder, prep, images
    )


CASES = [
    ("omniglot", None),  # 105 px drawings, the size they are stored at
    ("omniglot", (57, 80)),
    ("omniglot", (300, 211)),
    ("cifar", (77, 53)),  # 32 px photos upscaled to odd sizes for a 3-channel bundle
    ("cifar", (301, 157)),
    ("cifar", (33, 47)),
]


@pytest.fixture(scope="module")
def real_images() -> dict[str, tuple[Preprocessing, list[Image.Image]]]:
    return {"omniglot": (OMNIGLOT_PREP, omniglot_drawings(40)), "cifar": (CIFAR_PREP, cifar_photos(40))}


@pytest.mark.parametrize(("kind", "size"), CASES)
def test_the_pixels_graph_embeds_as_the_python_runtime(real_images, kind, size):
    prep, originals = real_images[kind]
    images = resized(originals, size, prep.channels)
    ours, plain = parity(conv_embedder(prep.channels, prep.height), prep, images)
    assert ours >= BAR > plain
    difference = np.abs(normalised_pixels(prep, images) - preprocess(images, prep))
    assert difference.max() <= 1.001 * LEVEL / min(prep.std)


@pytest.mark.parametrize("kind", ["omniglot", "cifar"])
def test_at_the_target_size_the_graph_gives_the_runtime_input_exactly(real_images, kind):
    prep, originals = real_images[kind]
    images = [image.resize((prep.width, prep.height), Image.Resampling.LANCZOS) for image in originals]
    np.testing.assert_array_equal(normalised_pixels(prep, images), preprocess(images, prep))


@pytest.mark.parametrize(
    "size",
    [
        (11, 8),  # width 11 * 28 / 8 = 38.5: Python rounds half to even (38), so must the graph
        (13, 8),  # 45.5 -> 46
        (36, 20),  # the width needs the larger factor
        (200, 41),
        (36, 28),  # already the target size
    ],
)
def test_non_square_targets_resize_and_crop_as_the_rule(real_images, size):
    prep = Preprocessing(height=28, width=36, channels=3, mean=CIFAR_PREP.mean, std=CIFAR_PREP.std)
    images = resized(real_images["cifar"][1][:8], size, 3)
    difference = np.abs(normalised_pixels(prep, images) - preprocess(images, prep))
    assert difference.max() <= 1.001 * LEVEL / min(prep.std)


def test_a_batch_of_same_sized_images_gives_each_image_its_own_embedding(real_images):
    prep, originals = real_images["cifar"]
    images = resized(originals[:5], (61, 45), 3)
    graph = session(pixels_model(conv_embedder(3, prep.height), prep))
    batch = graph.run(None, {PIXELS_INPUT: np.concatenate([app_pixels(i, 3) for i in images])})[0]
    single = np.concatenate([graph.run(None, {PIXELS_INPUT: app_pixels(i, 3)})[0] for i in images])
    np.testing.assert_allclose(batch, single, rtol=1e-5, atol=1e-6)  # only the conv's batching may differ


def with_alpha(image: Image.Image, seed: int) -> Image.Image:
    """`image` with a real alpha channel: a left-to-right ramp from transparent, plus random holes."""
    rng = np.random.default_rng(seed)
    alpha = np.broadcast_to(
        np.linspace(0, 255, image.width).astype(np.uint8), (image.height, image.width)
    ).copy()
    alpha[rng.random(alpha.shape) < 0.1] = 0
    return Image.fromarray(np.dstack([np.asarray(image.convert("RGB")), alpha]), "RGBA")


@pytest.mark.parametrize("channels", [1, 3])
def test_the_rgba_graph_composites_over_white_and_converts_as_pillow(real_images, channels):
    prep = OMNIGLOT_PREP if channels == 1 else CIFAR_PREP
    prep = Preprocessing(prep.height, prep.width, channels, prep.mean, prep.std)
    photos = real_images["cifar"][1]
    at_size = [with_alpha(p.resize((prep.width, prep.height)), i) for i, p in enumerate(photos)]
    np.testing.assert_array_equal(normalised_pixels(prep, at_size, rgba=True), preprocess(at_size, prep))
    larger = [with_alpha(p.resize((75, 90), Image.Resampling.BICUBIC), i) for i, p in enumerate(photos)]
    embedder = conv_embedder(channels, prep.height)
    python = session(embedder).run(None, {"image": preprocess(larger, prep)})[0]
    graph = session(pixels_model(embedder, prep, rgba=True))
    ours = np.concatenate([graph.run(None, {PIXELS_INPUT: np.asarray(i)[None]})[0] for i in larger])
    assert cosines(ours, python).min() >= BAR


def test_bicubic_bundles_resize_as_pillow_too(real_images):
    prep = Preprocessing(28, 28, 1, OMNIGLOT_PREP.mean, OMNIGLOT_PREP.std, resample="bicubic")
    drawings = real_images["omniglot"][1]
    embedder = conv_embedder(1, 28)
    for images in (drawings, resized(drawings, (57, 80), 1)):
        assert min_cosine(pixels_model(embedder, prep), embedder, prep, images) >= BAR


def test_filters_without_an_onnx_equivalent_and_old_opsets_are_refused():
    lanczos = Preprocessing(28, 28, 1, (0.5,), (0.5,), resample="lanczos")
    with pytest.raises(BundleError, match="'lanczos' has no ONNX Resize equivalent"):
        preprocessing_model(lanczos, "image")
    old = conv_embedder(1, 28)
    old.opset_import[0].version = 17
    with pytest.raises(BundleError, match="opset 17; a pixels graph needs 18"):
        pixels_model(old, OMNIGLOT_PREP)


@pytest.mark.parametrize("size", [None, (57, 80), (300, 211), (211, 300)])
def test_a_trained_omniglot_bundle_through_its_pixels_graph(trained_run, real_images, size):
    manifest = load_manifest(trained_run.bundle)
    embedder = onnx.load(str(trained_run.bundle / manifest.embedder.file))
    images = resized(real_images["omniglot"][1], size, manifest.preprocessing.channels)
    ours, plain = parity(embedder, manifest.preprocessing, images)
    assert ours >= BAR > plain
