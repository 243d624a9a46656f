"""How fast does the trainer train on the CPU, and does the data pipeline hold it back?

Speed: each method's real training step (its loss, backward, optimiser step; quick preset) on batches from
the trainer's BatchMaker kept in memory, once with the trainer's choice of layout
(`resolve_memory_format`: channels_last on the CPU) and once in plain eager NCHW, side by side in one
process, round-robin; the speed-up is the median of the per-round ratios, so a slow spell of a shared
machine hits both alike. The share of the CPU's fp32 peak counts 3 x the forward FLOPs (conv, linear and
matrix products, by torch's FlopCounterMode) per image against bench/cpu.py's nominal peak.

Pipeline: the same step on batches from the real pipeline (the trainer's sampler -> indexing the decoded
split -> float conversion -> augmentation -> normalisation) and on the same kind of batches made beforehand
(target: the pipeline keeps at least 90% of the in-memory throughput)."""

from __future__ import annotations

import dataclasses
import itertools
import os
import statistics
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from cpu import cpu_isa, fp32_peak_gflops, peak_rule
from timing import interleaved, median, table, throughput
from torch.utils.flop_counter import FlopCounterMode

from distilshot.train.checkpoint import ModelSpec
from distilshot.train.cli import DEFAULT_METHOD
from distilshot.train.config import TrainConfig
from distilshot.train.data.imageset import ImageSet
from distilshot.train.data.registry import load_split
from distilshot.train.methods import METHODS
from distilshot.train.methods.base import Batch, Method
from distilshot.train.pipeline import model_spec
from distilshot.train.presets import preset_config
from distilshot.train.trainer import BatchMaker, build_optimizer, build_sampler, resolve_memory_format

CPU = torch.device("cpu")
# (backbone, dataset): ConvNet-4 at 28 px (Omniglot, 1 channel) and 32 px (CIFAR-FS), ResNet-12 at 32 px
BACKBONES = (("convnet4", "omniglot"), ("convnet4", "cifar-fs"), ("resnet12", "cifar-fs"))
SPEED_METHODS = (DEFAULT_METHOD, "protonet", "pretrain")
# quick presets: `make train-export`'s default, and the baseline on natural images
PIPELINE_SETUPS = ((DEFAULT_METHOD, "omniglot"), ("pretrain", "cifar-fs"))
KEPT_BATCHES = 4


def run(quick: bool) -> dict[str, Any]:
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    isa = cpu_isa()
    peak = fp32_peak_gflops(isa)
    splits: dict[tuple[str, bool], ImageSet] = {}
    speed = []
    for backbone, dataset in BACKBONES:
        for method in SPEED_METHODS:
            # ResNet-12 steps take seconds: one per measurement; ConvNet-4's a few ms
            steps, rounds = (1, 1) if quick else (1, 3) if backbone == "resnet12" else (5, 5)
            speed.append(measure_speed(method, dataset, backbone, steps, rounds, peak, splits))
    steps, rounds = (3, 1) if quick else (20, 3)
    pipeline = [measure_pipeline(m, d, steps, rounds, splits) for m, d in PIPELINE_SETUPS]
    markdown = "\n".join(
        [
            table(
                [
                    "method",
                    "backbone",
                    "dataset (px, images per step)",
                    "trainer layout",
                    "trainer img/s",
                    "eager NCHW img/s",
                    "speed-up",
                    "GFLOP/s (3 x forward)",
                    "share of fp32 peak",
                ],
                [
                    [
                        r["method"],
                        r["backbone"],
                        f"{r['dataset']} ({r['image_size']} px, {r['images_per_batch']:.0f})",
                        r["layout"],
                        f"{r['trainer']:.0f}",
                        f"{r['eager']:.0f}",
                        f"{r['speedup']:.2f}x",
                        f"{r['gflops']:.0f}",
                        f"{100 * r['peak_share']:.0f}%" if peak else "-",
                    ]
                    for r in speed
                ],
            ),
            "",
            f"Quick-preset training steps on the CPU from batches kept in memory; the trainer's layout and "
            f"plain eager NCHW alternate in rounds (ConvNet-4: 5 steps per measurement, 5 rounds; ResNet-12: "
            f"1 and 3); img/s are medians, the speed-up is the median of the per-round ratios. Peak: "
            f"{peak_rule(isa)}. torch.compile is not used: measured on this CPU it was slower than eager "
            f"channels_last for ConvNet-4 and needs 7-30 s to compile per model.",
            "",
            table(
                [
                    "setup",
                    "real pipeline img/s",
                    "in-memory img/s",
                    "pipeline / in-memory",
                    "batch making alone img/s",
                ],
                [
                    [
                        f"{r['method']} {r['backbone']} {r['dataset']} ({r['image_size']} px, "
                        f"{r['images_per_batch']:.0f} images per step, augment {r['augment']}, "
                        f"{r['layout']})",
                        f"{r['pipeline']:.0f}",
                        f"{r['in_memory']:.0f}",
                        f"{100 * r['ratio']:.1f}%",
                        f"{r['batches_only']:.0f}",
                    ]
                    for r in pipeline
                ],
            ),
            "",
            f"Training steps on the CPU in the trainer's layout, {steps} per measurement, median of {rounds} "
            "round-robin rounds; the last column times the pipeline without the model. Target: the pipeline "
            "keeps at least 90% of the in-memory throughput.",
        ]
    )
    return {
        "title": "Training throughput: layout speed-up and data pipeline vs in-memory",
        "markdown": markdown,
        "data": {
            "cpu": {**isa, "fp32_peak_gflops": peak},
            "speed": speed,
            "setups": pipeline,
        },
    }


def prepare(
    method: str, dataset: str, splits: dict[tuple[str, bool], ImageSet], **overrides: Any
) -> tuple[TrainConfig, ImageSet, ModelSpec]:
    cfg = preset_config(method, dataset, "quick", device="cpu", **overrides)
    key = (cfg.dataset, cfg.rotated_classes)
    if key not in splits:
        split = load_split(cfg.dataset, cfg.train_split, cfg.image_size)
        splits[key] = split.with_rotated_classes() if cfg.rotated_classes else split
    return cfg, splits[key], model_spec(cfg, splits[key].num_classes)


def kept_batches(cfg: TrainConfig, data: ImageSet, spec: ModelSpec, sampling: str) -> list[Batch]:
    make_batch = BatchMaker(data, spec, cfg.augment, CPU)
    sampler = iter(build_sampler(sampling, cfg, data.labels))
    generator = torch.Generator().manual_seed(0)
    return [make_batch(next(sampler), generator) for _ in range(KEPT_BATCHES)]


def training_step(model: Method, cfg: TrainConfig, steps: int) -> Callable[[Callable[[], Batch]], None]:
    """`steps` of the trainer's step (loss, backward, optimiser and scheduler step) on batches from a
    callable."""
    optimizer, scheduler = build_optimizer(model, cfg, 10_000)

    def step(next_batch: Callable[[], Batch]) -> None:
        for _ in range(steps):
            out = model.loss(next_batch())
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            scheduler.step()

    return step


def forward_flops(model: Method, batch: Batch) -> int:
    """FLOPs of one forward pass of the method's loss, in eval mode (the same products as in training)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval().loss(batch)
    return counter.get_total_flops()


def measure_speed(
    method: str,
    dataset: str,
    backbone: str,
    steps: int,
    rounds: int,
    peak: float,
    splits: dict[tuple[str, bool], ImageSet],
) -> dict[str, Any]:
    cfg, data, spec = prepare(method, dataset, splits, backbone=backbone)
    chosen = resolve_memory_format(cfg.memory_format, CPU)
    formats = {"trainer": chosen, "eager": torch.contiguous_format}
    batches = kept_batches(cfg, data, spec, METHODS[cfg.method].sampling)
    per_batch = float(np.mean([len(b.images) for b in batches]))
    images = round(steps * per_batch)
    candidates = {}
    for name, memory_format in formats.items():
        model = spec.build(cfg.seed).train().to(memory_format=memory_format)
        laid_out = itertools.cycle(
            [dataclasses.replace(b, images=b.images.contiguous(memory_format=memory_format)) for b in batches]
        )
        step = training_step(model, cfg, steps)
        candidates[name] = lambda step=step, laid_out=laid_out: throughput(
            lambda: step(lambda: next(laid_out)), images, 0
        )
    values = interleaved(candidates, rounds)
    result = median(values)
    flops = 3 * forward_flops(spec.build(cfg.seed), batches[0]) / len(batches[0].images)
    gflops = result["trainer"] * flops / 1e9
    return {
        "method": method,
        "dataset": dataset,
        "backbone": backbone,
        "image_size": spec.image_size,
        "images_per_batch": per_batch,
        "layout": str(chosen).removeprefix("torch."),
        **result,
        "speedup": statistics.median(t / e for t, e in zip(values["trainer"], values["eager"], strict=True)),
        "rounds_img_per_s": values,
        "train_flops_per_image": flops,
        "gflops": gflops,
        "peak_share": gflops / peak if peak else None,
        "steps": steps,
        "rounds": rounds,
        "threads": torch.get_num_threads(),
    }


def measure_pipeline(
    method: str, dataset: str, steps: int, rounds: int, splits: dict[tuple[str, bool], ImageSet]
) -> dict[str, Any]:
    cfg, data, spec = prepare(method, dataset, splits)
    memory_format = resolve_memory_format(cfg.memory_format, CPU)
    model = spec.build(cfg.seed).train().to(memory_format=memory_format)
    make_batch = BatchMaker(data, spec, cfg.augment, CPU, memory_format)
    generator = torch.Generator().manual_seed(0)
    indices = itertools.chain.from_iterable(itertools.repeat(build_sampler(model.sampling, cfg, data.labels)))
    kept = [make_batch(next(indices), generator) for _ in range(KEPT_BATCHES)]
    cycle = itertools.cycle(kept)
    step = training_step(model, cfg, steps)
    per_batch = float(np.mean([len(b.images) for b in kept]))
    images = round(steps * per_batch)
    result = median(
        interleaved(
            {
                "pipeline": lambda: throughput(
                    lambda: step(lambda: make_batch(next(indices), generator)), images, 0
                ),
                "in_memory": lambda: throughput(lambda: step(lambda: next(cycle)), images, 0),
                "batches_only": lambda: throughput(
                    lambda: [make_batch(next(indices), generator) for _ in range(steps)], images, 0
                ),
            },
            rounds,
        )
    )
    return {
        "method": method,
        "dataset": dataset,
        "backbone": cfg.backbone,
        "image_size": spec.image_size,
        "augment": cfg.augment,
        "layout": str(memory_format).removeprefix("torch."),
        **result,
        "ratio": result["pipeline"] / result["in_memory"],
        "steps": steps,
        "rounds": rounds,
        "threads": torch.get_num_threads(),
        "images_per_batch": per_batch,
    }
