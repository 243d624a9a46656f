"""Does the data pipeline hold the trainer back? The same training step (the method's loss, backward,
optimiser step) on batches from the real pipeline (the trainer's sampler -> indexing the decoded split ->
float conversion -> augmentation -> normalisation, as the trainer's BatchMaker does) and on the same kind
of batches made beforehand and kept in memory. Both run side by side, round-robin, in one process; the
ratio of their images/s is the headline (target: the pipeline keeps at least 90%)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from timing import interleaved, median, table, throughput

from distilshot.train.cli import DEFAULT_METHOD
from distilshot.train.data.registry import load_split
from distilshot.train.pipeline import model_spec
from distilshot.train.presets import preset_config
from distilshot.train.trainer import BatchMaker, build_optimizer, build_sampler

# quick presets: `make train-export`'s default, and the baseline on natural images
SETUPS = ((DEFAULT_METHOD, "omniglot"), ("pretrain", "cifar-fs"))


def run(quick: bool) -> dict[str, Any]:
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    steps, rounds = (3, 1) if quick else (20, 3)
    rows, data = [], []
    for method, dataset in SETUPS:
        result = measure(method, dataset, steps, rounds)
        data.append(result)
        rows.append(
            [
                f"{method} {result['backbone']} {dataset} ({result['image_size']} px, "
                f"{result['images_per_batch']:.0f} images per step, augment {result['augment']})",
                f"{result['pipeline']:.0f}",
                f"{result['in_memory']:.0f}",
                f"{100 * result['ratio']:.1f}%",
                f"{result['batches_only']:.0f}",
            ]
        )
    markdown = "\n".join(
        [
            table(
                [
                    "setup",
                    "real pipeline img/s",
                    "in-memory img/s",
                    "pipeline / in-memory",
                    "batch making alone img/s",
                ],
                rows,
            ),
            "",
            f"Training steps on the CPU, {steps} per measurement, median of {rounds} round-robin rounds; "
            "the last column times the pipeline without the model. Target: the pipeline keeps at least 90% "
            "of the in-memory throughput.",
        ]
    )
    return {
        "title": "Training throughput: data pipeline vs in-memory",
        "markdown": markdown,
        "data": {"setups": data},
    }


def measure(method: str, dataset: str, steps: int, rounds: int) -> dict[str, Any]:
    cfg = preset_config(method, dataset, "quick", device="cpu")
    train_set = load_split(cfg.dataset, cfg.train_split, cfg.image_size)
    if cfg.rotated_classes:
        train_set = train_set.with_rotated_classes()
    spec = model_spec(cfg, train_set.num_classes)
    model = spec.build(cfg.seed).train()
    optimizer, _ = build_optimizer(model, cfg, steps * rounds * 4)
    make_batch = BatchMaker(train_set, spec, cfg.augment, torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    sampler = build_sampler(model.sampling, cfg, train_set.labels)
    indices = itertools.chain.from_iterable(itertools.repeat(sampler))
    kept = [make_batch(next(indices), generator) for _ in range(4)]
    cycle = itertools.cycle(kept)

    def step(next_batch: Callable[[], Any]) -> None:
        for _ in range(steps):
            out = model.loss(next_batch())
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()

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
        **result,
        "ratio": result["pipeline"] / result["in_memory"],
        "steps": steps,
        "rounds": rounds,
        "threads": torch.get_num_threads(),
        "images_per_batch": per_batch,
    }
