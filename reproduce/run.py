"""`make results`: train every method with the quick preset on Omniglot and CIFAR-FS (ConvNet-4), evaluate
5-way 1-/5-shot under both protocols, and write reproduce/results.md + results.json with the wall time and
exact command of every run, the distilled models beside their own starting points, and published numbers.

Re-running continues where it stopped: finished runs are read back, interrupted ones resume.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from distilshot_cli import cli
from published import PUBLISHED
from timing import log_span

from distilshot.train.methods import RECIPES

HERE = Path(__file__).resolve().parent
RUNS = HERE / "runs"
DATASETS = ("omniglot", "cifar-fs")
METHODS = ("pretrain", "protonet", "skd", "grdd", "bml")
PROTOCOLS = (("prototype", 1000), ("logreg", 600))


def evaluate(checkpoint: Path, outputs: str | None = None) -> dict[str, dict]:
    scores = {}
    for classifier, episodes in PROTOCOLS:
        args = [
            "eval",
            str(checkpoint),
            "--way",
            "5",
            "--shot",
            "1",
            "--way",
            "5",
            "--shot",
            "5",
            "--classifier",
            classifier,
            "--protocol",
            "random",  # the published tables' protocol; keyed by shot below
            "--episodes",
            str(episodes),
            "--json",
        ]
        for r in json.loads(cli(*args, *(["--outputs", outputs] if outputs else []))):
            scores[f"{r['k_shot']}-shot {classifier}"] = {
                "mean": r["mean"],
                "ci95": r["ci95"],
                "protocol": r["protocol"],
            }
    return scores


def comparisons(method: str, run: Path) -> list[tuple[str, Path, str | None]]:
    """(row label, checkpoint, outputs) of the final model and what it is compared with."""
    stages = RECIPES[method].stages
    rows = [(method, run / "checkpoints" / "best.pt", None)]
    if len(stages) > 1:
        first = stages[0]
        rows.append(
            (
                f"{method}: {first.name} stage (starting point)",
                run / first.name / "checkpoints" / "best.pt",
                None,
            )
        )
    if method == "bml":
        rows += [
            ("bml: global view only", rows[0][1], "global"),
            ("bml: local view only", rows[0][1], "local"),
        ]
    return rows


def run_one(dataset: str, method: str) -> dict:
    run = RUNS / f"{dataset}-{method}"
    result_file = run / "result.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    command = [
        "train",
        "--method",
        method,
        "--dataset",
        dataset,
        "--backbone",
        "convnet4",
        "--preset",
        "quick",
    ]
    resume = (run / "config.json").is_file()
    start = time.perf_counter()
    cli(*command, *(["--resume", str(run)] if resume else ["--run-dir", str(run)]), "--json")
    seconds = time.perf_counter() - start
    rows = [
        {"label": label, "outputs": outputs, "scores": evaluate(ckpt, outputs)}
        for label, ckpt, outputs in comparisons(method, run)
    ]
    result = {
        "dataset": dataset,
        "method": method,
        "command": "distilshot " + " ".join(command),
        "train_seconds": round(log_span(run) if resume else seconds),
        "rows": rows,
    }
    result_file.write_text(json.dumps(result, indent=2) + "\n")
    return result


def cell(scores: dict, key: str) -> str:
    s = scores.get(key)
    return f"{s['mean']:.2f} ± {s['ci95']:.2f}" if s else "n/a"


def markdown(results: list[dict]) -> str:
    lines = []
    for dataset in DATASETS:
        lines += [
            f"### {dataset} (ConvNet-4, quick preset, 5-way)",
            "",
            "| model | 1-shot proto | 5-shot proto | 1-shot LR | 5-shot LR | train time | published |",
            "|---|---|---|---|---|---|---|",
        ]
        for result in (r for r in results if r["dataset"] == dataset):
            published = PUBLISHED.get((dataset, result["method"]))
            for i, row in enumerate(result["rows"]):
                s = row["scores"]
                minutes = (
                    f"{result['train_seconds'] / 60:.1f} min" if i == 0 and result["train_seconds"] else ""
                )
                pub = ""
                if i == 0 and published:
                    pub = f"{published['1-shot']} / {published['5-shot']} ({published['backbone']}; "
                    pub += f"{published['source']})"
                lines.append(
                    f"| {row['label']} | {cell(s, '1-shot prototype')} | {cell(s, '5-shot prototype')} | "
                    f"{cell(s, '1-shot logreg')} | {cell(s, '5-shot logreg')} | {minutes} | {pub} |"
                )
        lines.append("")
    scores = [v for r in results for row in r["rows"] for v in row["scores"].values()]
    protocols = sorted({v["protocol"].split(", ", 1)[1] for v in scores})
    lines += ["Protocols (5-way; [view]: one of BML's views alone):", ""]
    lines += [f"- {p}" for p in protocols]
    lines += [
        "",
        "Commands (each followed by `distilshot eval` of the checkpoints listed):",
        "",
    ]
    lines += [f"- `{r['command']}`" for r in results]
    return "\n".join(lines) + "\n"


def main() -> None:
    RUNS.mkdir(exist_ok=True)
    results = [run_one(dataset, method) for dataset in DATASETS for method in METHODS]
    (HERE / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (HERE / "results.md").write_text(markdown(results))
    print((HERE / "results.md").read_text())


if __name__ == "__main__":
    main()
