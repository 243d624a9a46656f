"""`make reproduce-cifar-fs`: every method at its paper schedule (`--preset paper`), ConvNet-4 at 32 px on
CIFAR-FS, each distilled model beside its own starting point. Writes reproduce/cifar-fs-convnet4-paper.md
and .json: per model its starting point, 5-way 1- and 5-shot under the prototype and the RFS
logistic-regression protocol (95% CI over 1000 episodes), wall time, the commits it trained on and the
published numbers.

Hours on 2 CPU cores. Re-running continues where it stopped: a finished job is read back from its
result.json, an interrupted run resumes from its last epoch (resumed training is bit-identical to an
uninterrupted run, tests/test_training.py), and each training session appends the commit it ran on to
the run's commits.txt, so every row says which code produced it.

    python reproduce/cifar_fs_paper.py [--only pretrain,skd,...] [--episodes 1000]

REFILLED's teacher is the converged pretrain ConvNet-4 of the first job: a converged ResNet-12 at the RFS
schedule would take about two days on 2 cores (~25 img/s measured for the quick compress run). Each
student's twin from scratch trains at the RFS schedule on the same base images; the ConvNet-4 student's
twin is that pretrain run itself.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distilshot_cli import cli
from published import PUBLISHED_PAPER_CIFAR_FS
from timing import log_span

HERE = Path(__file__).resolve().parent
RUNS = HERE / "runs" / "cifar-fs-convnet4-paper"
OUT = HERE / "cifar-fs-convnet4-paper"
# a job's own --backbone comes later and wins
COMMON = ("--dataset", "cifar-fs", "--backbone", "convnet4", "--preset", "paper")
PROTOCOLS = ("prototype", "logreg")


@dataclass(frozen=True)
class Row:
    """One model of the table: a checkpoint (optionally restricted to some outputs) and what it is
    compared with."""

    model: str
    checkpoint: str  # relative to RUNS
    starting_point: str | None = None
    outputs: str | None = None


@dataclass(frozen=True)
class Job:
    name: str
    train_args: tuple[str, ...]
    rows: tuple[Row, ...]
    needs: tuple[str, ...] = field(default=())  # jobs whose checkpoints this one reads


TEACHER = "pretrain/checkpoints/best.pt"
JOBS = (
    Job("pretrain", ("--method", "pretrain"), (Row("pretrain (RFS cross-entropy)", TEACHER),)),
    Job(
        "skd",
        ("--method", "skd"),
        (
            Row("SKD gen1", "skd/checkpoints/best.pt", "SKD gen0"),
            Row("SKD gen0", "skd/gen0/checkpoints/best.pt"),
        ),
    ),
    Job(
        "grdd",
        ("--method", "grdd"),
        (
            Row("GRDD meta-learner", "grdd/checkpoints/best.pt", "GRDD global learner"),
            Row("GRDD global learner", "grdd/global/checkpoints/best.pt"),
        ),
    ),
    Job(
        "bml",
        ("--method", "bml"),
        (
            Row("BML (fused views)", "bml/checkpoints/best.pt", "BML global view"),
            Row("BML global view", "bml/checkpoints/best.pt", outputs="global"),
            Row("BML local view", "bml/checkpoints/best.pt", outputs="local"),
        ),
    ),
    # The ConvNet-4 student's twin from scratch on the same images is the pretrain job itself.
    Job(
        "refilled-convnet4",
        ("--method", "refilled", "--teacher", "{runs}/" + TEACHER),
        (
            Row(
                "REFILLED ConvNet-4 student",
                "refilled-convnet4/checkpoints/best.pt",
                "pretrain (RFS cross-entropy)",
            ),
        ),
        needs=("pretrain",),
    ),
    Job(
        "scratch-mobilenet",
        ("--method", "pretrain", "--backbone", "mobilenet-0.5"),
        (Row("MobileNet-0.5 from scratch (RFS)", "scratch-mobilenet/checkpoints/best.pt"),),
    ),
    Job(
        "refilled-mobilenet",
        ("--method", "refilled", "--teacher", "{runs}/" + TEACHER, "--backbone", "mobilenet-0.5"),
        (
            Row(
                "REFILLED MobileNet-0.5 student",
                "refilled-mobilenet/checkpoints/best.pt",
                "MobileNet-0.5 from scratch (RFS)",
            ),
        ),
        needs=("pretrain",),
    ),
)
JOB_NAMES = (*(job.name for job in JOBS), "generators")


def commit() -> str:
    head = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, cwd=HERE
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
    )
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def record_commit(run: Path) -> list[str]:
    """Appends this session's commit to the run's commits.txt (once) and returns them all, oldest first."""
    run.mkdir(parents=True, exist_ok=True)
    path = run / "commits.txt"
    seen = path.read_text().split() if path.is_file() else []
    current = commit()
    if current not in seen:
        seen.append(current)
        path.write_text("\n".join(seen) + "\n")
    return seen


def evaluate(checkpoint: Path, outputs: str | None, episodes: int) -> list[dict[str, Any]]:
    scores = []
    for classifier in PROTOCOLS:
        args = ["eval", str(checkpoint), "--way", "5", "--shot", "1", "--way", "5", "--shot", "5"]
        args += ["--classifier", classifier, "--episodes", str(episodes), "--json"]
        for r in json.loads(cli(*args, *(["--outputs", outputs] if outputs else []))):
            scores.append(
                {
                    "protocol": classifier,
                    "shots": r["k_shot"],
                    "accuracy": r["mean"],
                    "ci95": r["ci95"],
                    "protocol_text": r["protocol"],
                }
            )
    return scores


def run_job(job: Job, episodes: int) -> list[dict[str, Any]]:
    run = RUNS / job.name
    done = run / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    for need in job.needs:
        if not (RUNS / need / "result.json").is_file():
            sys.exit(f"job {job.name} needs job {need} first")
    commits = record_commit(run)
    args = [a.replace("{runs}", str(RUNS)) for a in job.train_args]
    where = ["--resume", str(run)] if (run / "config.json").is_file() else ["--run-dir", str(run)]
    cli("train", *COMMON, *args, *where, "--json")
    seconds = round(log_span(run))
    rows = []
    for row in job.rows:
        for score in evaluate(RUNS / row.checkpoint, row.outputs, episodes):
            rows.append(
                {
                    "model": row.model,
                    "starting_point": row.starting_point,
                    **score,
                    "train_seconds": seconds,
                    "commit": commits[-1],
                    "commits": commits,
                    "command": "distilshot train " + " ".join([*COMMON, *job.train_args]),
                    "published": PUBLISHED_PAPER_CIFAR_FS.get(row.model),
                }
            )
    done.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


def run_generators(episodes: int) -> list[dict[str, Any]]:
    """Plain vs generator-augmented prototypes on the converged pretrain embedder."""
    from generators import frozen_features, generator_trial

    from distilshot.train.generator import GeneratorConfig

    run = RUNS / "generators"
    done = run / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    if not (RUNS / "pretrain" / "result.json").is_file():
        sys.exit("job generators needs job pretrain first")
    commits = record_commit(run)
    features = frozen_features(RUNS / TEACHER)
    rows = []
    for name, members in (("generator weaken-student", 1), ("generator weaken-student x 3", 3)):
        cfg = GeneratorConfig(schedule="weaken-student", k_max=features.k_max, members=members)
        elapsed, scores = generator_trial(features, cfg, episodes)
        seconds = round(elapsed)
        for k, (plain, augmented) in scores.items():
            for model_name, result, start_point in (
                ("pretrain, plain cosine prototypes", plain, None),
                (name, augmented, "pretrain, plain cosine prototypes"),
            ):
                if start_point is None and members > 1:
                    continue  # the plain row is the same episodes for both generators
                rows.append(
                    {
                        "model": model_name,
                        "starting_point": start_point,
                        "protocol": "cosine prototype",
                        "shots": k,
                        "accuracy": result.mean,
                        "ci95": result.ci95,
                        "protocol_text": result.protocol,
                        "train_seconds": seconds if start_point else None,
                        "commit": commits[-1],
                        "commits": commits,
                        "command": f"train_generators(schedule='weaken-student', members={members})",
                        "published": PUBLISHED_PAPER_CIFAR_FS.get(model_name),
                    }
                )
    done.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


def cell(rows: list[dict[str, Any]], model: str, protocol: str, shots: int) -> str:
    for r in rows:
        if (r["model"], r["protocol"], r["shots"]) == (model, protocol, shots):
            return f"{r['accuracy']:.2f} ± {r['ci95']:.2f}"
    return ""


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "CIFAR-FS test classes, ConvNet-4 at 32 px, `--preset paper`, 5-way, 15 queries per class; "
        "prototype and logistic-regression (RFS) protocols, 95% CI over the episodes.",
        "",
        "| model | starting point | 1-shot proto | 5-shot proto | 1-shot LR | 5-shot LR | train time "
        "| commit | published 1 / 5-shot |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model in dict.fromkeys(r["model"] for r in rows):
        first = next(r for r in rows if r["model"] == model)
        protocols = ("cosine prototype",) if first["protocol"] == "cosine prototype" else PROTOCOLS
        cells = [cell(rows, model, p, k) for p in protocols for k in (1, 5)]
        cells += [""] * (4 - len(cells))
        minutes = f"{first['train_seconds'] / 60:.0f} min" if first["train_seconds"] else ""
        pub = first["published"]
        published = f"{pub['1-shot']} / {pub['5-shot']} ({pub['source']})" if pub else ""
        lines.append(
            f"| {model} | {first['starting_point'] or ''} | {' | '.join(cells)} | {minutes} | "
            f"{', '.join(first['commits'])} | {published} |"
        )
    protocols = sorted({r["protocol_text"] for r in rows})
    lines += ["", "Protocols:", "", *(f"- {p}" for p in protocols), "", "Commands:", ""]
    lines += sorted({f"- `{r['command']}`" for r in rows})
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default="", help=f"comma-separated jobs, of {', '.join(JOB_NAMES)}")
    parser.add_argument("--episodes", type=int, default=1000)
    args = parser.parse_args()
    chosen = [n for n in args.only.split(",") if n] or list(JOB_NAMES)
    unknown = sorted(set(chosen) - set(JOB_NAMES))
    if unknown:
        parser.error(f"no job {unknown}; choose from {', '.join(JOB_NAMES)}")
    RUNS.mkdir(parents=True, exist_ok=True)
    for job in JOBS:
        if job.name in chosen:
            run_job(job, args.episodes)
    if "generators" in chosen:
        run_generators(args.episodes)
    finished = [RUNS / name / "result.json" for name in JOB_NAMES]
    rows = [row for path in finished if path.is_file() for row in json.loads(path.read_text())]
    OUT.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    OUT.with_suffix(".md").write_text(markdown(rows))
    print(OUT.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
