"""INT8: static quantization of the fp32 graph into Q/DQ form with ONNX Runtime's quantizer, as TensorRT
wants it (symmetric int8 activations and weights, i.e. zero points 0; per-channel weights; float biases),
calibrated on a few hundred training-split images of the base classes; then the accuracy of the int8 graph
against the fp32 one on the same evaluation episodes. The same graph runs on ONNX Runtime, OpenVINO and
TensorRT."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx

from distilshot.core.manifest import Graph, Manifest
from distilshot.core.preprocess import normalise
from distilshot.errors import DistilshotError
from distilshot.export.engine_parity import compare_engines
from distilshot.export.format_table import Checked, FormatJob, Staged, export_format
from distilshot.serve.engines.onnxruntime_engine import OnnxRuntimeEngine
from distilshot.train.data.registry import load_split

ROLE = "embedder-int8"
FILE = "embedder-int8.onnx"
CALIBRATION_IMAGES = 300
CALIBRATION_BATCH = 50


def calibration_batch(manifest: Manifest, count: int = CALIBRATION_IMAGES, seed: int = 0) -> np.ndarray:
    """`count` images of the training split (base classes, never the evaluation ones), normalised."""
    data = load_split(manifest.dataset, "train", manifest.preprocessing.height)
    rows = np.sort(np.random.default_rng(seed).choice(len(data.labels), min(count, len(data.labels)), False))
    return normalise(data.images[rows], manifest.preprocessing)


def quantize_graph(source: Path, target: Path, calibration: np.ndarray, input_name: str) -> None:
    """Writes the Q/DQ int8 version of the ONNX graph `source` to `target`."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches: Iterator[np.ndarray] = iter(
                calibration[i : i + CALIBRATION_BATCH] for i in range(0, len(calibration), CALIBRATION_BATCH)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {input_name: batch}

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared))  # shape inference + graph clean-up, as ORT advises
        quantize_static(
            str(prepared),
            str(target),
            Batches(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={
                "ActivationSymmetric": True,  # TensorRT takes zero points of 0 only
                "WeightSymmetric": True,
                "QuantizeBias": False,  # TensorRT dequantizes int8 only, not int32 biases
            },
        )
    onnx.checker.check_model(str(target), full_check=True)


SERVED_BY = ("onnxruntime", "openvino", "tensorrt", "cuda")  # serve backends that run what it adds


def build(job: FormatJob) -> Staged:
    """The int8 graph of the bundle's fp32 one, calibrated on `options.calibration_images` training images."""
    manifest, embedder, count = job.edit.manifest, job.edit.manifest.embedder, job.options.calibration_images
    quantize_graph(
        job.edit.dir / embedder.file,
        job.edit.staging / FILE,
        calibration_batch(manifest, count),
        embedder.input,
    )
    return Staged(
        graphs={ROLE: Graph(FILE, embedder.input, embedder.outputs, precision="int8")},
        notes=[f"calibrated on {count} {manifest.dataset}/train images (MinMax, symmetric)"],
    )


@export_format("int8", adds=ROLE, precisions=("int8",), extra="cpu", backends=SERVED_BY, build=build)
def check(job: FormatJob, preview: Manifest, staged: Staged) -> Checked:
    """Refuses the int8 graph if it loses more than `options.max_drop` points of 5-way 1-shot accuracy
    against the fp32 graph on the evaluation episodes."""
    fp32 = OnnxRuntimeEngine(job.edit.dir, preview)
    int8 = OnnxRuntimeEngine(job.edit.dir, preview, precision="int8")
    checks = compare_engines(fp32, int8, preview, job.evaluation(), episodes=job.options.episodes)
    if checks[0].drop > job.options.max_drop:
        raise DistilshotError(
            f"the int8 graph loses {checks[0].drop:.2f} points of 5-way 1-shot accuracy "
            f"({checks[0].candidate_accuracy:.2f}% vs {checks[0].reference_accuracy:.2f}% fp32), more "
            f"than the allowed {job.options.max_drop}; the bundle is unchanged"
        )
    return Checked(comparisons=checks)
