"""The embedder behind its own preprocessing: an ONNX graph from decoded pixels to embeddings, so an app
with only onnxruntime (onnxruntime-web, mobile) computes what the Python runtime does without
reimplementing Pillow's antialiased resize.

Input `pixels`: uint8 [N, H, W, C], rows top to bottom, channels last, as decoders and a canvas's
ImageData hand them out; all N images share H and W (one image is N = 1), any H and W of at least
serve/images.py's MIN_SIDE. C is the bundle's channel count (1 = grey, 3 = RGB), or 4 for the `rgba`
graph. Outputs: the embedder's, same names and shapes. Inside, steps 4-5 of distilshot/core/preprocess.py:

- resize size: the side needing the larger factor meets its target, the other becomes
  round(side * target / other) with Python's round (half to even), both in float64 as Python computes
  them; no resize when already that size;
- resize: ONNX Resize (opset 18) with antialias=1 and exclude_outside=1, which is Pillow's filter with
  its support widened by the downscale factor, run on uint8 so that onnxruntime takes its Pillow-style
  path: 22-bit fixed-point weights, horizontal pass first, each pass rounded to uint8 as Pillow does.
  Only onnxruntime's weights are float32 where Pillow's are float64, so some pixels differ by one level;
  "bilinear" and "bicubic" (cubic_coeff_a = -0.5, Pillow's) have this equivalent, the others do not;
- centre crop at left = (w - width) // 2, top = (h - height) // 2;
- float32 (pixels / 255 - mean) / std in NCHW, the same float32 operations as `normalise`.

What stays the app's job (steps 1-3), in Pillow's exact integer arithmetic, `>>` a right shift:
- EXIF orientation: apply it before handing the pixels over;
- transparency, over opaque white, per colour channel c with alpha a (0..255):
  c' = (c * a + 255 * (255 - a) + 127) // 255  (equal to Pillow's alpha_composite for every c and a);
- RGB to grey (Pillow "L", ITU-R 601-2 luma): L = (19595 R + 38470 G + 7471 B + 32768) >> 16;
  grey to RGB repeats L in each channel.
The `rgba` graph does the transparency and the luma step itself on [N, H, W, 4] input, which is what
canvas getImageData gives a browser app (fully opaque RGB gives a = 255, for which c' = c).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, compose, helper, numpy_helper

from distilshot.core.manifest import Preprocessing
from distilshot.errors import BundleError

PIXELS_INPUT = "pixels"
MIN_OPSET = 18  # Resize's antialias and exclude_outside with sizes as input
_PREFIX = "pixels_graph/"
# Pillow's filters that ONNX Resize computes, as Resize attributes.
_RESIZE_MODES = {
    "bilinear": {"mode": "linear"},
    "bicubic": {"mode": "cubic", "cubic_coeff_a": -0.5},
}


class _Builder:
    """Nodes and constants of one graph, every name under _PREFIX so that none clashes with the
    embedder's when the two are merged."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def const(self, name: str, value: np.ndarray | np.generic) -> str:
        """The constant `value` named `name`; asking again for a name gives the first one."""
        if all(t.name != _PREFIX + name for t in self.initializers):
            self.initializers.append(numpy_helper.from_array(np.asarray(value), _PREFIX + name))
        return _PREFIX + name

    def ops(self, op_type: str, inputs: list[str], outputs: list[str], **attributes: object) -> list[str]:
        names = [_PREFIX + o for o in outputs]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=names[0], **attributes))
        return names

    def op(self, op_type: str, inputs: list[str], output: str, **attributes: object) -> str:
        return self.ops(op_type, inputs, [output], **attributes)[0]


def preprocessing_model(
    prep: Preprocessing, output: str, *, rgba: bool = False, opset: int = MIN_OPSET
) -> onnx.ModelProto:
    """The preprocessing alone: `pixels` uint8 [N, H, W, C] (C = prep.channels, or 4 with `rgba`) ->
    `output` float32 [N, prep.channels, prep.height, prep.width], the embedder's input."""
    if prep.resample not in _RESIZE_MODES:
        raise BundleError(
            f"preprocessing.resample {prep.resample!r} has no ONNX Resize equivalent; a pixels graph "
            f"needs one of {', '.join(_RESIZE_MODES)}"
        )
    if opset < MIN_OPSET:
        raise BundleError(f"a pixels graph needs ONNX opset {MIN_OPSET} or later, not {opset}")
    b = _Builder()
    pixels = _flattened_rgba(b, prep.channels) if rgba else PIXELS_INPUT
    shape = b.op("Shape", [PIXELS_INPUT], "shape")
    batch, h, w = (
        b.op("Slice", [shape, b.const(f"axis{i}", _i64(i)), b.const(f"axis{i + 1}", _i64(i + 1))], name)
        for i, name in enumerate(("batch", "h", "w"))
    )
    target_h, target_w = b.const("target_h", _i64(prep.height)), b.const("target_w", _i64(prep.width))
    size_h, size_w = _resized_size(b, h, w, target_h, target_w)
    sizes = b.op("Concat", [batch, b.const("channels", _i64(prep.channels)), size_h, size_w], "sizes", axis=0)
    nchw = b.op("Transpose", [pixels], "nchw", perm=[0, 3, 1, 2])
    resized = b.op(
        "Resize",
        [nchw, "", "", sizes],
        "resized",
        antialias=1,
        exclude_outside=1,  # Pillow leaves pixels outside the image out of the weights
        coordinate_transformation_mode="half_pixel",
        **_RESIZE_MODES[prep.resample],
    )
    cropped = _centre_crop(b, resized, (size_h, size_w), (target_h, target_w))
    floats = b.op("Cast", [cropped], "floats", to=TensorProto.FLOAT)
    scaled = b.op("Div", [floats, b.const("255", np.float32(255))], "scaled")
    per_channel = (1, prep.channels, 1, 1)
    centred = b.op(
        "Sub", [scaled, b.const("mean", np.asarray(prep.mean, np.float32).reshape(per_channel))], "centred"
    )
    std = b.const("std", np.asarray(prep.std, np.float32).reshape(per_channel))
    b.nodes.append(helper.make_node("Div", [centred, std], [output], name=_PREFIX + "normalised"))
    shape_in = ["batch", "height", "width", 4 if rgba else prep.channels]
    graph = helper.make_graph(
        b.nodes,
        "pixels_preprocessing",
        [helper.make_tensor_value_info(PIXELS_INPUT, TensorProto.UINT8, shape_in)],
        [
            helper.make_tensor_value_info(
                output, TensorProto.FLOAT, ["batch", prep.channels, prep.height, prep.width]
            )
        ],
        b.initializers,
    )
    opsets = [helper.make_opsetid("", opset)]
    # the oldest IR version for the opset: ONNX's newest may be newer than onnxruntime reads
    model = helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(model, full_check=True)
    return model


def pixels_model(embedder: onnx.ModelProto, prep: Preprocessing, *, rgba: bool = False) -> onnx.ModelProto:
    """The preprocessing followed by `embedder` (a bundle's fp32 embedder: one NCHW float32 input):
    `pixels` uint8 [N, H, W, C] -> the embedder's outputs, same names."""
    if len(embedder.graph.input) != 1:
        raise BundleError(f"the embedder must have one input, not {len(embedder.graph.input)}")
    opset = next((o.version for o in embedder.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        raise BundleError(f"the embedder uses ONNX opset {opset}; a pixels graph needs {MIN_OPSET} or later")
    image = embedder.graph.input[0].name
    front = preprocessing_model(prep, image, rgba=rgba, opset=opset)
    front.ir_version = embedder.ir_version  # merge_models wants both the same
    model = compose.merge_models(front, embedder, io_map=[(image, image)])
    onnx.checker.check_model(model, full_check=True)
    return model


def write_pixels_graph(embedder_path: Path, prep: Preprocessing, path: Path, *, rgba: bool = False) -> Path:
    """Writes `pixels_model` of the ONNX file `embedder_path` to `path` and returns `path`."""
    onnx.save(pixels_model(onnx.load(str(embedder_path)), prep, rgba=rgba), str(path))
    return Path(path)


def _i64(value: int) -> np.ndarray:
    return np.array([value], dtype=np.int64)


def _resized_size(b: _Builder, h: str, w: str, target_h: str, target_w: str) -> tuple[str, str]:
    """distilshot/core/preprocess.py's resize size, in float64 as Python computes it there:
    `target_h / h >= target_w / w` says the height meets its target; the other side becomes
    round(side * target / other side), half to even as ONNX Round."""

    def double(name: str) -> str:
        return b.op("Cast", [name], f"{name.removeprefix(_PREFIX)}_double", to=TensorProto.DOUBLE)

    hd, wd, thd, twd = double(h), double(w), double(target_h), double(target_w)
    height_meets = b.op(
        "GreaterOrEqual",
        [b.op("Div", [thd, hd], "factor_h"), b.op("Div", [twd, wd], "factor_w")],
        "height_meets",
    )

    def scaled(side: str, target: str, other: str, name: str) -> str:
        product = double(b.op("Mul", [side, target], f"{name}_product"))  # exact in int64, then in float64
        rounded = b.op("Round", [b.op("Div", [product, other], f"{name}_exact")], f"{name}_rounded")
        return b.op("Cast", [rounded], name, to=TensorProto.INT64)

    size_h = b.op("Where", [height_meets, target_h, scaled(h, target_w, wd, "scaled_h")], "size_h")
    size_w = b.op("Where", [height_meets, scaled(w, target_h, hd, "scaled_w"), target_w], "size_w")
    return size_h, size_w


def _centre_crop(b: _Builder, nchw: str, size: tuple[str, str], target: tuple[str, str]) -> str:
    """The target-sized centre of `nchw`, offset (side - target) // 2 on each axis."""
    two = b.const("two", _i64(2))
    starts, ends = [], []
    for side, length, axis in zip(size, target, ("top", "left"), strict=True):
        start = b.op("Div", [b.op("Sub", [side, length], f"{axis}_excess"), two], axis)
        starts.append(start)
        ends.append(b.op("Add", [start, length], f"{axis}_end"))
    axes = b.const("hw_axes", np.array([2, 3], np.int64))
    first = b.op("Concat", starts, "crop_starts", axis=0)
    last = b.op("Concat", ends, "crop_ends", axis=0)
    return b.op("Slice", [nchw, first, last, axes], "cropped")


def _flattened_rgba(b: _Builder, channels: int) -> str:
    """`pixels` RGBA uint8 [N, H, W, 4] composited over white and brought to `channels` with the integer
    formulas of the module docstring, in int32: uint8 [N, H, W, channels]."""
    values = b.op("Cast", [PIXELS_INPUT], "rgba_int", to=TensorProto.INT32)
    rgb, alpha = b.ops(
        "Split", [values, b.const("rgb_alpha", np.array([3, 1], np.int64))], ["rgb", "alpha"], axis=3
    )
    i255 = b.const("i255", np.int32(255))
    paper = b.op("Mul", [i255, b.op("Sub", [i255, alpha], "transparency")], "paper")
    blend = b.op("Add", [b.op("Mul", [rgb, alpha], "ink"), paper], "blend")
    flat = b.op(
        "Div", [b.op("Add", [blend, b.const("i127", np.int32(127))], "blend_rounding"), i255], "flat_rgb"
    )
    if channels == 1:
        terms = b.op("Mul", [flat, b.const("luma", np.array([19595, 38470, 7471], np.int32))], "luma_terms")
        luma = b.op("ReduceSum", [terms, b.const("channel_axis", _i64(3))], "luma_sum", keepdims=1)
        rounded = b.op("Add", [luma, b.const("luma_half", np.int32(32768))], "luma_rounding")
        flat = b.op("Div", [rounded, b.const("i65536", np.int32(65536))], "grey")
    return b.op("Cast", [flat], "flat", to=TensorProto.UINT8)
