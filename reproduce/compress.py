"""REFILLED's compress mode on CIFAR-FS with the quick budget: a ResNet-12 teacher distilled into a
ConvNet-4 student (and any other students named, e.g. mobilenet-0.5), each beside the same student
trained from scratch for as many images. Reports 5-way accuracy and the exported embedder's size and
ONNX Runtime latency on this CPU. Writes reproduce/compress.md and .json; re-running reuses finished runs
and resumes interrupted ones.

    python reproduce/compress.py [--students convnet4,mobilenet-0.5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from distilshot.export.bundle import write_bundle
from distilshot.train.checkpoint import load_model
from distilshot.train.pipeline import evaluate

HERE = Path(__file__).resolve().parent
RUNS = HERE / "runs"
DISTILSHOT = str(Path(sys.executable).with_name("distilshot"))
COMMON = ["--dataset", "cifar-fs", "--preset", "quick"]
# supplement Table 1 (CUB, "Easy" split): many-way accuracy of MobileNet students, from scratch vs REFILLED
PUBLISHED = {
    "mobilenet-1.0": (70.04, 72.48),
    "mobilenet-0.5": (66.44, 71.35),
    "mobilenet-0.25": (64.63, 67.87),
}


def train(run: Path, *args: str) -> None:
    """Trains into `run`; a run that exists resumes, which ends at once if it finished (checkpoints/best.pt
    alone does not tell: a single-stage run writes it at every improvement)."""
    where = ["--resume", str(run)] if (run / "config.json").is_file() else ["--run-dir", str(run)]
    command = [DISTILSHOT, "train", *args, *COMMON, *where, "--json"]
    print("$", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def latency(checkpoint: Path) -> dict[str, float]:
    """Size of the exported embedder, p50 latency at batch 1 and images/s at batch 64 (ONNX Runtime)."""
    model, spec, _ = load_model(checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        bundle, _ = write_bundle(model, spec, Path(tmp) / "b")
        graph = bundle / "embedder.onnx"
        session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
        one = np.zeros((1, spec.channels, spec.image_size, spec.image_size), np.float32)
        many = np.zeros((64, *one.shape[1:]), np.float32)
        for _ in range(20):
            session.run(None, {"image": one})
        times = []
        for _ in range(200):
            start = time.perf_counter()
            session.run(None, {"image": one})
            times.append(time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(10):
            session.run(None, {"image": many})
        throughput = 640 / (time.perf_counter() - start)
        size = graph.stat().st_size
    params = sum(p.numel() for p in model.backbone.parameters())
    return {
        "params": params,
        "onnx_mb": size / 2**20,
        "p50_ms": 1000 * float(np.median(times)),
        "images_per_s": throughput,
    }


def accuracy(checkpoint: Path) -> dict[int, str]:
    model, spec, _ = load_model(checkpoint)
    results = evaluate(model, spec, settings=((5, 1), (5, 5)), episodes=1000)
    return {r.k_shot: f"{r.mean:.2f} ± {r.ci95:.2f}" for r in results}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--students",
        default="convnet4",
        help="student backbones, comma-separated (e.g. convnet4,mobilenet-0.5)",
    )
    students = parser.parse_args().students.split(",")
    rows = []
    first = RUNS / "compress-convnet4"
    train(first, "--method", "refilled", "--backbone", "convnet4", "--teacher-backbone", "resnet12")
    teacher = first / "teacher" / "checkpoints" / "best.pt"
    rows.append(("ResNet-12 teacher (pretrain)", teacher))
    for student in students:
        run = RUNS / f"compress-{student}"
        if student != "convnet4":
            train(run, "--method", "refilled", "--backbone", student, "--teacher", str(teacher))
        rows.append((f"{student} student, REFILLED", run / "checkpoints" / "best.pt"))
        scratch = RUNS / f"compress-{student}-scratch"
        # as many training images as the two REFILLED steps see (2 x 6 x 100 x 128)
        train(
            scratch,
            "--method",
            "pretrain",
            "--backbone",
            student,
            "--epochs",
            "12",
            "--steps-per-epoch",
            "200",
        )
        rows.append((f"{student} from scratch (pretrain)", scratch / "checkpoints" / "best.pt"))
    report, lines = (
        [],
        [
            "CIFAR-FS, quick budget, 5-way, prototype head of each model, 1000 episodes; latency of the "
            "exported embedder in ONNX Runtime on this CPU (p50 at batch 1, throughput at batch 64).",
            "",
            "| model | 1-shot | 5-shot | backbone params | ONNX MB | p50 ms | img/s |",
            "|---|---|---|---|---|---|---|",
        ],
    )
    for name, checkpoint in rows:
        acc, lat = accuracy(checkpoint), latency(checkpoint)
        report.append({"model": name, "accuracy": acc, **lat})
        lines.append(
            f"| {name} | {acc[1]} | {acc[5]} | {lat['params']:,} | {lat['onnx_mb']:.2f} | "
            f"{lat['p50_ms']:.2f} | {lat['images_per_s']:.0f} |"
        )
    lines += [
        "",
        "Published (supplement Table 1: CUB, 100 student classes, many-way accuracy, not 5-way episodes), "
        "student from scratch -> REFILLED: "
        + ", ".join(f"{name} {a} -> {b}" for name, (a, b) in PUBLISHED.items())
        + ".",
    ]
    (HERE / "compress.json").write_text(json.dumps(report, indent=2) + "\n")
    (HERE / "compress.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
