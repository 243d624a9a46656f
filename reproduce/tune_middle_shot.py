"""Learning rate of the middle-shot students that start from the teacher's weights (the fine-tuned teacher
and REFILLED), tuned as the supplement (2.3) prescribes: on 5-way tasks sampled from the validation
classes, never the test ones. Every rate sees the same tasks and seeds. Writes
reproduce/tune_middle_shot.md and .json; AdaptConfig.start_lr holds the chosen rate.

    python reproduce/tune_middle_shot.py TEACHER_CHECKPOINT [--trials 5] [--shots 1,5] [--lrs 0.05,0.01,0.002]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch.nn.functional as F
from middle_shot import QUERY_LABELS, STUDENTS, mean_ci, task_predictions

from distilshot.train.adapt import AdaptConfig
from distilshot.train.checkpoint import load_model
from distilshot.train.data.registry import load_split
from distilshot.train.evaluation import extract_features
from distilshot.train.samplers import EpisodeSampler

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("teacher", type=Path)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--shots", default="1,5")
    parser.add_argument("--lrs", default="0.05,0.01,0.002")
    args = parser.parse_args()
    teacher, spec, _ = load_model(args.teacher)
    data = load_split(spec.dataset, "val", spec.image_size)
    features = F.normalize(extract_features(teacher, data.images, spec.mean, spec.std)["embedding"], dim=1)
    students = [row for row in STUDENTS if row[2]]
    shots, lrs = [int(k) for k in args.shots.split(",")], [float(lr) for lr in args.lrs.split(",")]
    table: dict[str, dict[str, dict[str, float]]] = {}
    for lr in lrs:
        for k in shots:
            rows: dict[str, list[float]] = {}
            for trial, episode in enumerate(EpisodeSampler(data.labels, 5, k, 15, args.trials, seed=k)):
                cfg = replace(AdaptConfig(seed=trial), start_lr=lr)
                results = task_predictions(data, features, teacher, spec, episode, k, cfg, students)
                for name, pred in results.items():
                    rows.setdefault(name, []).append(100.0 * float((pred == QUERY_LABELS).mean()))
            for name, accuracies in rows.items():
                key = name if name.startswith("teacher") else f"{name}, lr {lr}"
                table.setdefault(key, {})[str(k)] = mean_ci(accuracies)
            means = ", ".join(f"{n} {np.mean(v):.1f}" for n, v in rows.items())
            print(f"lr {lr} K={k}: {means}", flush=True)
    lines = [
        f"5-way K-shot on {data.name}, {args.trials} trials per K (the same tasks for every rate), "
        f"15 queries/class; teacher {spec.method}/{spec.backbone}",
        "",
        "| classifier | " + " | ".join(f"K={k}" for k in shots) + " |",
        "|---" * (len(shots) + 1) + "|",
    ]
    for name, by_k in table.items():
        cells = [f"{by_k[str(k)]['mean']:.2f} ± {by_k[str(k)]['ci95']:.2f}" for k in shots]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    (HERE / "tune_middle_shot.json").write_text(json.dumps(table, indent=2) + "\n")
    (HERE / "tune_middle_shot.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
