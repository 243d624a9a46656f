"""`distilshot train` and `distilshot eval`. Heavy imports (torch) happen inside the commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False)

MethodOpt = Annotated[str, typer.Option(help="pretrain | protonet")]
DatasetOpt = Annotated[
    str, typer.Option(help="omniglot | omniglot-vinyals | cifar-fs | fc100 | mini-imagenet | folder:PATH")
]


@app.command()
def train(
    method: MethodOpt = "pretrain",
    dataset: DatasetOpt = "omniglot",
    backbone: Annotated[str, typer.Option(help="convnet4 | resnet12")] = "convnet4",
    preset: Annotated[str, typer.Option(help="quick (CPU minutes) | paper (published schedule)")] = "quick",
    epochs: Annotated[int | None, typer.Option(help="override the preset's epochs")] = None,
    steps_per_epoch: Annotated[int | None, typer.Option(help="override episodes/batches per epoch")] = None,
    lr: Annotated[float | None, typer.Option(help="override the learning rate")] = None,
    image_size: Annotated[int | None, typer.Option(help="override the dataset's image size")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    run_dir: Annotated[
        Path | None, typer.Option(help="run folder (default runs/<time>-<method>-...)")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help="continue the run in this folder from its last checkpoint")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="print a JSON summary")] = False,
) -> None:
    """Train a few-shot embedding network; writes checkpoints, metrics and plots to a run folder."""
    from distilshot.train.config import TrainConfig
    from distilshot.train.pipeline import default_run_dir
    from distilshot.train.pipeline import train as run_training
    from distilshot.train.presets import preset_config

    if resume is not None:
        config_file = resume / "config.json"
        if not config_file.is_file():
            raise typer.BadParameter(f"{resume} is not a run folder (no config.json)", param_hint="--resume")
        cfg = TrainConfig.from_dict(json.loads(config_file.read_text()))
        folder = resume
    else:
        cfg = preset_config(
            method,
            dataset,
            preset,
            backbone=backbone,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            lr=lr,
            image_size=image_size,
            seed=seed,
            device=device,
        )
        folder = run_dir or default_run_dir(cfg)
    outcome = run_training(cfg, folder, resume=resume is not None)
    summary = {
        "run": str(outcome.run.path),
        "checkpoint": str(outcome.run.best),
        "seconds": round(outcome.seconds, 1),
    }
    typer.echo(json.dumps(summary) if json_output else f"best checkpoint: {outcome.run.best}")


@app.command(name="eval")
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="a checkpoint (.pt) written by distilshot train")],
    split: Annotated[str, typer.Option(help="held-out split to evaluate on")] = "test",
    classifier: Annotated[str, typer.Option(help="prototype | logreg | both")] = "prototype",
    episodes: Annotated[int, typer.Option(help="episodes per setting")] = 1000,
    way: Annotated[list[int] | None, typer.Option(help="N of N-way K-shot (repeat with --shot)")] = None,
    shot: Annotated[list[int] | None, typer.Option(help="K of N-way K-shot")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    json_output: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Evaluate a checkpoint: N-way K-shot episodes, mean accuracy ± 95% CI, protocol named."""
    from distilshot.train.checkpoint import load_model
    from distilshot.train.pipeline import evaluate as run_evaluation
    from distilshot.train.report import print_results, results_to_json, run_folder_of, save_results

    if len(way or []) != len(shot or []):
        raise typer.BadParameter("give --way and --shot the same number of times")
    settings = tuple(zip(way, shot, strict=True)) if way and shot else None
    classifiers = ("prototype", "logreg") if classifier == "both" else (classifier,)
    model, spec, _ = load_model(checkpoint)
    results = run_evaluation(
        model,
        spec,
        split=split,
        settings=settings,
        classifiers=classifiers,
        episodes=episodes,
        seed=seed,
        plots_dir=run_folder_of(checkpoint) / "plots",
    )
    save_results(run_folder_of(checkpoint), results)
    if json_output:
        typer.echo(json.dumps(results_to_json(results)))
    else:
        print_results(results, title=f"{spec.method}/{spec.backbone} on {spec.dataset}")
