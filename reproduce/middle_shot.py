"""REFILLED's middle-shot table (supplement Table 3) on CIFAR-FS with the quick budget: 5-way K-shot tasks
from the test classes, K = 1, 5, 10, 30, 15 queries per class. For every task: the teacher's 1-NN and
prototype classifiers (no training), and three ConvNet-4 students trained on the task: from scratch by
cross-entropy, the teacher fine-tuned by cross-entropy, and REFILLED's two steps from the teacher's
weights. Writes reproduce/middle_shot.md and .json; re-running keeps the K already finished with the same
teacher, students, trial count and learning rate.

    python reproduce/middle_shot.py TEACHER_CHECKPOINT [--trials 10]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from distilshot.train.adapt import AdaptConfig, student_logits, train_task_student
from distilshot.train.checkpoint import ModelSpec, load_model
from distilshot.train.data.imageset import ImageSet
from distilshot.train.data.registry import load_split
from distilshot.train.evaluation import extract_features
from distilshot.train.methods.base import Method
from distilshot.train.samplers import EpisodeSampler

HERE = Path(__file__).resolve().parent
PUBLISHED = {  # supplement Table 3: miniImageNet, ConvNet-4 student (84 px), 600 trials
    "teacher 1-NN": {1: 49.73, 5: 63.11, 10: 66.56, 30: 69.80},
    "fine-tuned teacher": {1: 45.89, 5: 68.61, 10: 74.95, 30: 78.62},
    "REFILLED (ConvNet teacher)": {1: 53.44, 5: 70.60, 10: 75.37, 30: 78.94},
}
# (row, learns from the teacher, starts from the teacher's weights)
STUDENTS = (
    ("student from scratch", False, False),
    ("fine-tuned teacher", False, True),
    ("REFILLED (ConvNet teacher)", True, True),
)

QUERY_LABELS = np.repeat(np.arange(5), 15)  # EpisodeSampler's order: 15 queries of class 0, then class 1...


def mean_ci(accuracies: list[float]) -> dict[str, float]:
    return {
        "mean": float(np.mean(accuracies)),
        "ci95": float(1.96 * np.std(accuracies, ddof=1) / math.sqrt(len(accuracies))),
    }


def frozen_teacher(checkpoint: Path, split: str) -> tuple[Method, ModelSpec, ImageSet, torch.Tensor]:
    """The teacher, its spec, the split, and the teacher's normalised embedding of every image in it: the
    teacher is frozen, so the split is embedded once and every trial indexes it."""
    teacher, spec, _ = load_model(checkpoint)
    data = load_split(spec.dataset, split, spec.image_size)
    features = F.normalize(extract_features(teacher, data.images, spec.mean, spec.std)["embedding"], dim=1)
    return teacher, spec, data, features


def k_shot_trials(
    teacher: Method,
    spec: ModelSpec,
    data: ImageSet,
    features: torch.Tensor,
    k: int,
    trials: int,
    start_lr: float,
    students=STUDENTS,
) -> dict[str, dict[str, float]]:
    """Accuracy (mean, 95% CI) of every classifier over `trials` 5-way K-shot tasks of the split; the
    tasks depend on K alone, so every setting compared sees the same ones."""
    rows: dict[str, list[float]] = {}
    for trial, episode in enumerate(EpisodeSampler(data.labels, 5, k, 15, trials, seed=k)):
        cfg = replace(AdaptConfig(seed=trial), start_lr=start_lr)
        for name, pred in task_predictions(data, features, teacher, spec, episode, k, cfg, students).items():
            rows.setdefault(name, []).append(100.0 * float((pred == QUERY_LABELS).mean()))
        accuracies = ", ".join(f"{n} {v[-1]:.1f}" for n, v in rows.items())
        print(f"K={k} start_lr {start_lr} trial {trial + 1}/{trials}: {accuracies}", flush=True)
    return {name: mean_ci(accuracies) for name, accuracies in rows.items()}


def shot_table(
    by_name: dict[str, dict[str, dict[str, float]]], shots: list[int], published: dict[str, str] | None = None
) -> list[str]:
    """The markdown lines of a table with a row per classifier and its "mean ± ci95" for each K in
    `shots`; with `published`, a last column of the published figures by classifier name."""
    header = ["classifier", *(f"K={k}" for k in shots)]
    if published is not None:
        header.append("published (miniImageNet, 600 trials)")
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for name, by_k in by_name.items():
        row = [name, *(f"{by_k[str(k)]['mean']:.2f} ± {by_k[str(k)]['ci95']:.2f}" for k in shots)]
        if published is not None:
            row.append(published[name])
        lines.append("| " + " | ".join(row) + " |")
    return lines


def task_predictions(
    data, features: torch.Tensor, teacher, spec, episode, k: int, cfg: AdaptConfig, students=STUDENTS
) -> dict[str, np.ndarray]:
    """Query predictions on one 5-way K-shot task of the teacher's 1-NN and prototype classifiers (on its
    `features` of the split) and of each student trained on the task's support images."""
    support, query = episode.support.ravel(), episode.query.ravel()
    s_labels = np.repeat(np.arange(5), k)
    t_s, t_q = features[support], features[query]
    protos = F.normalize(t_s.reshape(5, k, -1).mean(1), dim=1)
    results = {
        "teacher 1-NN": s_labels[(t_q @ t_s.T).argmax(1).numpy()],
        "teacher prototype": (t_q @ protos.T).argmax(1).numpy(),
    }
    for name, distil, from_teacher in students:
        student = train_task_student(
            data.images[support],
            s_labels,
            spec.mean,
            spec.std,
            cfg,
            teacher if distil else None,
            teacher if from_teacher else None,
        )
        results[name] = student_logits(student, data.images[query], spec.mean, spec.std).argmax(1).numpy()
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("teacher", type=Path)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--shots", default="1,5,10,30")
    args = parser.parse_args()
    teacher, spec, data, features = frozen_teacher(args.teacher, "test")
    out = HERE / "middle_shot.json"
    # finished K are kept, so an interrupted run continues with the next K
    setting = {
        "teacher": str(args.teacher),
        "trials": args.trials,
        "students": [row[0] for row in STUDENTS],
        "start_lr": AdaptConfig().start_lr,
    }
    done = json.loads(out.read_text()) if out.is_file() else {}
    summary: dict[str, dict[str, dict]] = (
        done.get("classifiers", {}) if done.get("setting") == setting else {}
    )
    seconds: dict[str, float] = done.get("seconds", {}) if summary else {}
    for k in map(int, args.shots.split(",")):
        if str(k) in seconds:
            continue
        start = time.perf_counter()
        trials = k_shot_trials(teacher, spec, data, features, k, args.trials, AdaptConfig().start_lr)
        for name, result in trials.items():
            summary.setdefault(name, {})[str(k)] = result
        seconds[str(k)] = time.perf_counter() - start
        out.write_text(
            json.dumps({"setting": setting, "classifiers": summary, "seconds": seconds}, indent=2) + "\n"
        )
    shots = sorted(map(int, seconds))
    published = {
        name: " / ".join(str(v) for v in PUBLISHED.get(name, {}).values()) or "n/a" for name in summary
    }
    lines = [
        f"5-way K-shot on {data.name}, {args.trials} trials per K, 15 queries/class; teacher "
        f"{spec.method}/{spec.backbone}; ConvNet-4 students (lr {AdaptConfig().lr} from scratch, "
        f"{AdaptConfig().start_lr} from the teacher's weights)",
        "",
        *shot_table(summary, shots, published),
    ]
    (HERE / "middle_shot.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
