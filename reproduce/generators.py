"""Plain vs generator-augmented prototypes (progressive-KD generator, Table 2 of the paper) on Omniglot and
CIFAR-FS: the same frozen embedder (the quick `pretrain` run of `make results`), the same 5-way episodes,
generators trained without distillation, with plain distillation, with progressive distillation
("weakening the student") and as an ensemble. Writes reproduce/generators.md and .json.

    python reproduce/generators.py [--iterations 2000] [--members 3] [--datasets omniglot,cifar-fs]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distilshot.train.checkpoint import ModelSpec, load_model
from distilshot.train.data.imageset import ImageSet
from distilshot.train.data.registry import load_split
from distilshot.train.evaluation import EvalResult, extract_features
from distilshot.train.generator import GeneratorConfig, evaluate_generators, train_generators

HERE = Path(__file__).resolve().parent
PUBLISHED = {  # Table 2, miniImageNet, ResNet-18 "baseline" features, cosine classifier, 1000 tasks
    "plain prototypes": (51.99, 74.32),
    "no-distillation": (57.88, 75.95),
    "plain": (59.20, 76.36),
    "weaken-student": (59.56, 76.57),
    "weaken-student x ensemble": (60.21, 77.52),
}


@dataclass(frozen=True)
class FrozenFeatures:
    """A checkpoint's train and test splits embedded by its frozen model, and the largest k_max every
    training class can fill (at most 128)."""

    spec: ModelSpec
    train: ImageSet
    base: np.ndarray
    test: ImageSet
    held_out: np.ndarray
    k_max: int


def frozen_features(checkpoint: Path) -> FrozenFeatures:
    model, spec, _ = load_model(checkpoint)
    train = load_split(spec.dataset, "train", spec.image_size)
    test = load_split(spec.dataset, "test", spec.image_size)
    base = extract_features(model, train.images, spec.mean, spec.std)["embedding"]
    held_out = extract_features(model, test.images, spec.mean, spec.std)["embedding"]
    k_max = min(128, int(np.bincount(train.labels).min()) - 1)
    return FrozenFeatures(spec, train, base, test, held_out, k_max)


def generator_trial(
    f: FrozenFeatures, cfg: GeneratorConfig, episodes: int
) -> tuple[float, dict[int, tuple[EvalResult, EvalResult]]]:
    """Trains generators on the base embeddings and scores plain vs augmented prototypes at 1 and 5 shots
    (5-way): the training seconds and, per shot count, (plain, augmented)."""
    start = time.perf_counter()
    trained, _ = train_generators(f.base, f.train.labels, cfg)
    seconds = time.perf_counter() - start
    scores = {
        k: evaluate_generators(
            trained,
            f.held_out,
            f.test.labels,
            split=f.test.name,
            n_way=5,
            k_shot=k,
            k_max=cfg.k_max,
            episodes=episodes,
        )
        for k in (1, 5)
    }
    return seconds, scores


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--datasets", default="omniglot,cifar-fs")
    args = parser.parse_args()
    report = {}
    lines = []
    for dataset in args.datasets.split(","):
        checkpoint = HERE / "runs" / f"{dataset}-pretrain" / "checkpoints" / "best.pt"
        features = frozen_features(checkpoint)
        spec, k_max = features.spec, features.k_max
        rows = {}
        variants = [
            ("no-distillation", 1),
            ("plain", 1),
            ("weaken-student", 1),
            ("weaken-student", args.members),
        ]
        for schedule, members in variants:
            name = schedule if members == 1 else f"{schedule} x ensemble"
            cfg = GeneratorConfig(schedule=schedule, iterations=args.iterations, k_max=k_max, members=members)
            seconds, scores = generator_trial(features, cfg, args.episodes)
            for k, (plain, augmented) in scores.items():
                rows.setdefault("plain prototypes", {})[k] = plain.to_dict()
                rows.setdefault(name, {})[k] = augmented.to_dict() | {"train_seconds": round(seconds)}
            print(dataset, name, {k: round(v["mean"], 2) for k, v in rows[name].items()}, flush=True)
        report[dataset] = rows
        lines += [
            f"### {dataset}: frozen {spec.method}/{spec.backbone} embedder, k_max {k_max}, {args.iterations} "
            f"iterations per generator, {args.episodes} episodes, 15 queries/class",
            "",
            "| prototypes | 5-way 1-shot | 5-way 5-shot | generator training | published (miniImageNet) |",
            "|---|---|---|---|---|",
        ]
        for name, by_k in rows.items():
            label = f"+ generator ({name.replace(' x ensemble', f', ensemble of {args.members}')})"
            seconds = by_k[1].get("train_seconds")
            pub = " / ".join(map(str, PUBLISHED.get(name, ())))
            lines.append(
                f"| {name if name == 'plain prototypes' else label} | "
                + " | ".join(f"{by_k[k]['mean']:.2f} ± {by_k[k]['ci95']:.2f}" for k in (1, 5))
                + f" | {'' if seconds is None else f'{seconds} s'} | {pub} |"
            )
        lines.append("")
    (HERE / "generators.json").write_text(json.dumps(report, indent=2) + "\n")
    (HERE / "generators.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
