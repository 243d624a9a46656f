"""Tiny bundles and images for the serving tests, built without torch.

The embedder graphs are a few ONNX ops whose results can be computed by hand:
- "single": embedding = channel means of the normalised image @ SINGLE_W  -> [N, 4]
- "two":    global = channel means @ GLOBAL_W -> [N, 4];  local = channel maxima -> [N, 3]
- "top":    embedding = channel means of the top half of the image @ SINGLE_W -> [N, 4] (sees orientation)
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from distilshot.core.files import sha256_file
from distilshot.core.manifest import Graph, Head, Manifest, Output, Preprocessing

SIZE = 16
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
# embedding = (r, g, b, r + g + b) of the channel means
SINGLE_W = np.array([[1, 0, 0, 1], [0, 1, 0, 1], [0, 0, 1, 1]], dtype=np.float32)
GLOBAL_W = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0.5]], dtype=np.float32)


def embedder_model(kind: str = "single", channels: int = 3, size: int = SIZE) -> onnx.ModelProto:
    """An ONNX embedder taking "image" [batch, channels, size, size]."""
    axes = numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes")
    nodes = [helper.make_node("ReduceMean", ["image", "axes"], ["means"], keepdims=0)]
    initializers = [axes]
    if kind == "top":
        bounds = [
            numpy_helper.from_array(np.array(v, dtype=np.int64), n)
            for n, v in (("start", [0]), ("end", [size // 2]), ("h", [2]))
        ]
        initializers += bounds
        nodes.insert(0, helper.make_node("Slice", ["image", "start", "end", "h"], ["top"]))
        nodes[1] = helper.make_node("ReduceMean", ["top", "axes"], ["means"], keepdims=0)
    if kind in ("single", "top"):
        w = SINGLE_W[:channels]
        initializers.append(numpy_helper.from_array(w, "w"))
        nodes.append(helper.make_node("MatMul", ["means", "w"], ["embedding"]))
        outputs = [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", w.shape[1]])]
    elif kind == "two":
        initializers.append(numpy_helper.from_array(GLOBAL_W, "w"))
        nodes.append(helper.make_node("MatMul", ["means", "w"], ["global"]))
        nodes.append(helper.make_node("ReduceMax", ["image", "axes"], ["local"], keepdims=0))
        outputs = [
            helper.make_tensor_value_info("global", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("local", TensorProto.FLOAT, ["batch", channels]),
        ]
    else:
        raise ValueError(kind)
    graph = helper.make_graph(
        nodes,
        "embedder",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", channels, size, size])],
        outputs,
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def make_bundle(
    folder: Path,
    kind: str = "single",
    *,
    metric: str = "euclidean",
    weights: dict[str, float] | None = None,
    temperature: float = 1.0,
    channels: int = 3,
    size: int = SIZE,
    name: str = "tiny",
) -> Path:
    """Writes a bundle (embedder.onnx + manifest.json with real sha256s) into `folder` and returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(embedder_model(kind, channels, size), folder / "embedder.onnx")
    if kind in ("single", "top"):
        outputs = (Output("embedding", 4),)
    else:
        outputs = (Output("global", 4), Output("local", channels))
    manifest = Manifest(
        name=name,
        method="protonet",
        backbone="tinynet",
        dataset="colours",
        preprocessing=Preprocessing(
            height=size, width=size, channels=channels, mean=MEAN[:channels], std=STD[:channels]
        ),
        graphs={"embedder": Graph("embedder.onnx", "image", outputs)},
        head=Head(metric, weights or {o.name: 1.0 for o in outputs}, temperature),
        metrics={"5way-1shot": {"accuracy": 0.5, "ci95": 0.01}},
        files={"embedder.onnx": sha256_file(folder / "embedder.onnx")},
        created="2024-01-01T00:00:00+0000",
    )
    manifest.save(folder)
    return folder


def expected_embedding(rgb: tuple[int, int, int]) -> np.ndarray:
    """What the "single" bundle gives for a solid-colour image."""
    means = (np.array(rgb, dtype=np.float64) / 255 - np.array(MEAN)) / np.array(STD)
    return (means @ SINGLE_W).astype(np.float32)


def encode(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def solid(rgb: tuple[int, int, int], size: tuple[int, int] = (24, 20)) -> Image.Image:
    return Image.new("RGB", size, rgb)


def noise(size: tuple[int, int] = (64, 48), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def write_image(path: Path, image: Image.Image, fmt: str = "PNG") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(image, fmt))
    return path


def png_claiming(width: int, height: int) -> bytes:
    """A valid PNG header and chunk structure claiming `width` x `height`, with almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )
