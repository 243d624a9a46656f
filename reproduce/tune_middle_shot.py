"""Learning rate of the middle-shot students that start from the teacher's weights (the fine-tuned teacher
and REFILLED), tuned as the supplement (2.3) prescribes: on 5-way tasks sampled from the validation
classes, never the test ones. Every rate sees the same tasks and seeds. Writes
reproduce/tune_middle_shot.md and .json; AdaptConfig.start_lr holds the chosen rate.

    python reproduce/tune_middle_shot.py TEACHER_CHECKPOINT [--trials 5] [--shots 1,5] [--lrs 0.05,0.01,0.002]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from middle_shot import STUDENTS, frozen_teacher, k_shot_trials, shot_table

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("teacher", type=Path)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--shots", default="1,5")
    parser.add_argument("--lrs", default="0.05,0.01,0.002")
    args = parser.parse_args()
    teacher, spec, data, features = frozen_teacher(args.teacher, "val")
    students = [row for row in STUDENTS if row[2]]
    shots, lrs = [int(k) for k in args.shots.split(",")], [float(lr) for lr in args.lrs.split(",")]
    table: dict[str, dict[str, dict[str, float]]] = {}
    for lr in lrs:
        for k in shots:
            for name, result in k_shot_trials(
                teacher, spec, data, features, k, args.trials, lr, students
            ).items():
                key = name if name.startswith("teacher") else f"{name}, lr {lr}"
                table.setdefault(key, {})[str(k)] = result
    lines = [
        f"5-way K-shot on {data.name}, {args.trials} trials per K (the same tasks for every rate), "
        f"15 queries/class; teacher {spec.method}/{spec.backbone}",
        "",
        *shot_table(table, shots),
    ]
    (HERE / "tune_middle_shot.json").write_text(json.dumps(table, indent=2) + "\n")
    (HERE / "tune_middle_shot.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
