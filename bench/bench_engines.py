"""Inference engines side by side: PyTorch eager, ONNX Runtime fp32 and int8, OpenVINO fp32 and int8, on
the same embedder graphs in one process: images/s at batch 64, p50/p99 latency at batch 1, FLOPs per
image and the fraction of the CPU's fp32 peak each engine reaches; then the accuracy of every engine on
the same evaluation episodes, for a trained bundle.

Speed does not depend on the weights, so the speed models are freshly initialised (seeded) embedders:
ConvNet-4 and ResNet-12 at 84 px (3 channels; no 84 px dataset ships here, so inputs and int8 calibration
are synthetic) and ConvNet-4 at the Omniglot (28 px) and CIFAR-FS (32 px) defaults (calibrated on 300
training images). Accuracy needs a trained model: the newest run under runs/ with a bundle and a
checkpoint (`make train-export` makes one), or the run folder in $BENCH_RUN.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from timing import interleaved, latencies, median, sgemm_peak, table, throughput

from distilshot.core.manifest import Graph, Manifest
from distilshot.errors import DistilshotError
from distilshot.export.bundle import write_bundle
from distilshot.export.bundle_edit import BundleEdit
from distilshot.export.engine_parity import compare_engines
from distilshot.export.int8 import FILE as INT8_FILE
from distilshot.export.int8 import ROLE as INT8_ROLE
from distilshot.export.int8 import calibration_batch, quantize_graph
from distilshot.serve.engines.onnxruntime_engine import OnnxRuntimeEngine
from distilshot.serve.engines.openvino_engine import OpenVinoEngine
from distilshot.train.checkpoint import ModelSpec, load_model
from distilshot.train.data.registry import load_split

REPO = Path(__file__).resolve().parents[1]
BATCH = 64
ENGINES = ("PyTorch eager", "ORT fp32", "ORT int8", "OpenVINO fp32", "OpenVINO int8")


@dataclass(frozen=True)
class SpeedModel:
    backbone: str
    size: int
    channels: int
    dataset: str | None = None  # None: synthetic inputs and calibration

    @property
    def label(self) -> str:
        return f"{self.backbone} {self.size} px" + (f" ({self.dataset})" if self.dataset else "")


FULL = (
    SpeedModel("convnet4", 84, 3),
    SpeedModel("resnet12", 84, 3),
    SpeedModel("convnet4", 28, 1, "omniglot"),
    SpeedModel("convnet4", 32, 3, "cifar-fs"),
)
QUICK = (SpeedModel("convnet4", 28, 1, "omniglot"), SpeedModel("convnet4", 84, 3))


def run(quick: bool) -> dict[str, Any]:
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    peak = sgemm_peak(repeats=2 if quick else 5)
    with tempfile.TemporaryDirectory() as tmp:
        speed = [
            measure_model(m, Path(tmp) / f"m{i}", peak["reference_gflops"], quick)
            for i, m in enumerate(QUICK if quick else FULL)
        ]
        try:
            accuracy = measure_accuracy(Path(tmp) / "trained", quick)
        except DistilshotError as error:  # e.g. the run's dataset is not here: keep the speed results
            accuracy = {"error": str(error)}
    return {
        "title": "Inference engines",
        "markdown": render(speed, accuracy, peak),
        "data": {"peak": peak, "speed": speed, "accuracy": accuracy},
    }


# -- speed ------------------------------------------------------------------------------------------


def onnx_flops(path: Path) -> int:
    """Multiply-adds x 2 per image of the Conv, Gemm and MatMul nodes (the rest is a rounding error)."""
    model = onnx.shape_inference.infer_shapes(onnx.load(path))
    shapes = {
        v.name: [d.dim_value or 1 for d in v.type.tensor_type.shape.dim]
        for v in [*model.graph.input, *model.graph.value_info, *model.graph.output]
    }
    weights = {i.name: list(i.dims) for i in model.graph.initializer}
    flops = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            out, kernel = shapes[node.output[0]], weights[node.input[1]]
            flops += 2 * int(np.prod(out[1:])) * int(np.prod(kernel[1:]))
        elif node.op_type in ("Gemm", "MatMul") and node.input[1] in weights:
            out = shapes[node.output[0]]
            flops += 2 * int(np.prod(out[1:])) * weights[node.input[1]][0]
    return flops


def prepare(model: SpeedModel, folder: Path) -> tuple[torch.nn.Module, Path, Manifest]:
    """A seeded embedder exported as a bundle with an int8 graph beside the fp32 one."""
    spec = ModelSpec(
        "protonet",
        model.backbone,
        64,
        model.channels,
        model.size,
        (0.5,) * model.channels,
        (0.25,) * model.channels,
        model.dataset or "synthetic",
        {},
    )
    net = spec.build(seed=0).eval()
    bundle, manifest = write_bundle(net, spec, folder / "bundle")
    calibration = calibration_batch(manifest) if model.dataset else synthetic(300, model)
    with BundleEdit(bundle) as edit:
        quantize_graph(
            bundle / manifest.embedder.file, edit.staging / INT8_FILE, calibration, manifest.embedder.input
        )
        graph = Graph(INT8_FILE, manifest.embedder.input, manifest.embedder.outputs, precision="int8")
        manifest = edit.commit({INT8_ROLE: graph})
    return net, bundle, manifest


def synthetic(count: int, model: SpeedModel, seed: int = 0) -> np.ndarray:
    return (
        np.random.default_rng(seed)
        .normal(size=(count, model.channels, model.size, model.size))
        .astype(np.float32)
    )


def engines(net: torch.nn.Module, bundle: Path, manifest: Manifest) -> dict[str, Callable[[np.ndarray], Any]]:
    def eager(x: np.ndarray) -> Any:
        with torch.inference_mode():
            return net.embed(torch.from_numpy(x))

    return {
        "PyTorch eager": eager,
        "ORT fp32": OnnxRuntimeEngine(bundle, manifest).embed,
        "ORT int8": OnnxRuntimeEngine(bundle, manifest, precision="int8").embed,
        "OpenVINO fp32": OpenVinoEngine(bundle, manifest).embed,
        "OpenVINO int8": OpenVinoEngine(bundle, manifest, precision="int8").embed,
    }


def measure_model(model: SpeedModel, folder: Path, peak_gflops: float, quick: bool) -> dict[str, Any]:
    net, bundle, manifest = prepare(model, folder)
    run = engines(net, bundle, manifest)
    x64, x1 = synthetic(BATCH, model, 1), synthetic(1, model, 2)
    seconds, rounds, calls = (0.3, 1, 20) if quick else (2.0, 3, 100)
    images_per_s = median(
        interleaved({n: partial(throughput, partial(f, x64), BATCH, seconds) for n, f in run.items()}, rounds)
    )
    per_call = interleaved({n: partial(latencies, partial(f, x1), calls) for n, f in run.items()}, rounds)
    lat = {n: np.concatenate(v) for n, v in per_call.items()}
    flops = onnx_flops(bundle / manifest.embedder.file)
    rows = {}
    for name in run:
        seconds_1 = np.asarray(lat[name])
        rows[name] = {
            "images_per_s": images_per_s[name],
            "vs_pytorch": images_per_s[name] / images_per_s["PyTorch eager"],
            "p50_ms": 1e3 * float(np.percentile(seconds_1, 50)),
            "p99_ms": 1e3 * float(np.percentile(seconds_1, 99)),
            "peak_fraction": images_per_s[name] * flops / (peak_gflops * 1e9),
        }
    return {
        "model": model.label,
        "flops_per_image": flops,
        "engines": rows,
        "batch": BATCH,
        "latency_calls": rounds * calls,
    }


# -- accuracy ---------------------------------------------------------------------------------------


class EagerEngine:
    """PyTorch's model behind the Engine interface, for the accuracy comparison."""

    name, role = "pytorch", "checkpoint"

    def __init__(self, net: torch.nn.Module) -> None:
        self.net = net.eval()

    def embed(self, x: np.ndarray) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            return {k: v.numpy() for k, v in self.net.embed(torch.from_numpy(x)).items()}


def trained_run() -> Path | None:
    if os.environ.get("BENCH_RUN"):
        return Path(os.environ["BENCH_RUN"])
    runs = [p.parent.parent for p in (REPO / "runs").glob("*/checkpoints/best.pt")]
    runs = [r for r in runs if (r / "bundle" / "manifest.json").is_file()]
    return max(runs, key=lambda r: (r / "bundle" / "manifest.json").stat().st_mtime, default=None)


def measure_accuracy(folder: Path, quick: bool) -> dict[str, Any] | None:
    from distilshot.core.manifest import load_manifest
    from distilshot.export.format_table import ExportOptions
    from distilshot.export.formats import add_formats

    source = trained_run()
    if source is None:
        return None
    if (
        not (source / "bundle" / "manifest.json").is_file()
        or not (source / "checkpoints" / "best.pt").is_file()
    ):
        raise DistilshotError(f"{source} is not a run folder with bundle/ and checkpoints/best.pt")
    episodes = 100 if quick else 1000
    bundle = folder / "bundle"
    shutil.copytree(source / "bundle", bundle)
    manifest = load_manifest(bundle)
    if manifest.role_for("int8") is None:
        # the drop is measured below
        add_formats(bundle, ["int8"], ExportOptions(episodes=20, max_drop=100.0))
        manifest = load_manifest(bundle)
    net, _, _ = load_model(source / "checkpoints" / "best.pt")
    reference = OnnxRuntimeEngine(bundle, manifest)
    candidates = {
        "PyTorch eager": EagerEngine(net),
        "ORT fp32": reference,
        "ORT int8": OnnxRuntimeEngine(bundle, manifest, precision="int8"),
        "OpenVINO fp32": OpenVinoEngine(bundle, manifest),
        "OpenVINO int8": OpenVinoEngine(bundle, manifest, precision="int8"),
    }
    data = load_split(manifest.dataset, "test", manifest.preprocessing.height)
    results = {}
    for name, engine in candidates.items():
        checks = compare_engines(reference, engine, manifest, data, ((5, 1), (5, 5)), episodes)
        results[name] = [c.to_dict() for c in checks]
    return {
        "run": str(source),
        "model": f"{manifest.method} {manifest.backbone} {manifest.dataset}",
        "episodes": episodes,
        "results": results,
    }


# -- report -----------------------------------------------------------------------------------------


def render(speed: list[dict[str, Any]], accuracy: dict[str, Any] | None, peak: dict[str, Any]) -> str:
    rows = []
    for m in speed:
        for name, r in m["engines"].items():
            rows.append(
                [
                    m["model"] if name == ENGINES[0] else "",
                    f"{m['flops_per_image'] / 1e9:.3f}" if name == ENGINES[0] else "",
                    name,
                    f"{r['images_per_s']:.0f}",
                    f"{r['vs_pytorch']:.2f}x",
                    f"{r['p50_ms']:.2f}",
                    f"{r['p99_ms']:.2f}",
                    f"{100 * r['peak_fraction']:.1f}%",
                ]
            )
    parts = [
        table(
            [
                "model",
                "GFLOPs/img",
                "engine",
                f"img/s @{BATCH}",
                "vs PyTorch",
                "p50 ms @1",
                "p99 ms @1",
                "of fp32 peak",
            ],
            rows,
        ),
        "",
    ]
    headline = [m for m in speed if m["model"].startswith("convnet4 84")]
    for m in headline:
        e = m["engines"]
        best_int8 = max(("ORT int8", "OpenVINO int8"), key=lambda n: e[n]["images_per_s"])
        best_fp32 = max(("ORT fp32", "OpenVINO fp32"), key=lambda n: e[n]["images_per_s"])
        int8_gain = e[best_int8]["images_per_s"] / e[best_fp32]["images_per_s"]
        parts.append(
            f"**{m['model']}, batch {BATCH}:** ONNX Runtime fp32 runs {e['ORT fp32']['vs_pytorch']:.2f}x "
            f"PyTorch eager (target 3x); the best int8 engine ({best_int8}) runs {int8_gain:.2f}x the best "
            f"fp32 one ({best_fp32}) (target 2x)."
        )
    how = peak["nominal_rule"] or "the measured matrix product below (no clock reported)"
    parts += [
        "",
        "Fraction of the fp32 peak: throughput x FLOPs per image (Conv/Gemm/MatMul multiply-adds x2, "
        f"counted on the ONNX graph) over {peak['reference_gflops']:.0f} GFLOP/s = {how}. The best float32 "
        f"matrix product measured in the same run reached {peak['gflops']:.0f} GFLOP/s ({peak['by']}, "
        "2048x2048, all cores). int8 engines are not bound by the fp32 peak. Latency: one image per call.",
    ]
    if accuracy is None or "error" in accuracy:
        why = (
            accuracy["error"]
            if accuracy
            else "no trained run found (run `make train-export` first, or set BENCH_RUN)"
        )
        parts += ["", f"_Accuracy not measured: {why}._"]
        return "\n".join(parts)
    acc_rows = []
    for name, (one, five) in accuracy["results"].items():
        acc_rows.append(
            [
                name,
                f"{one['candidate_accuracy']:.2f} ± {one['ci95']:.2f}",
                f"{five['candidate_accuracy']:.2f} ± {five['ci95']:.2f}",
                f"{one['drop']:+.2f}",
                f"{100 * one['agreement']:.2f}%",
                f"{one['max_abs_diff']:.1e}",
            ]
        )
    parts += [
        "",
        f"Accuracy on the same {accuracy['episodes']} evaluation episodes per setting "
        f"({accuracy['model']}, {accuracy['results']['ORT fp32'][0]['split']}, 15 queries/class, "
        f"prototype head; run {Path(accuracy['run']).name}):",
        "",
        table(
            [
                "engine",
                "5-way 1-shot %",
                "5-way 5-shot %",
                "1-shot drop vs ORT fp32",
                "same predictions",
                "max abs diff",
            ],
            acc_rows,
        ),
    ]
    return "\n".join(parts)
