"""`distilshot export` and `distilshot train-export`. Heavy imports happen inside the commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from distilshot.train.cli import (
    BackboneOpt,
    DatasetOpt,
    DeviceOpt,
    EpochsOpt,
    ImageSizeOpt,
    JsonOpt,
    LrOpt,
    MethodOpt,
    ParamsOpt,
    PresetOpt,
    RunDirOpt,
    SeedOpt,
    StepsOpt,
    TeacherBackboneOpt,
    TeacherOpt,
    request_from_options,
)

app = typer.Typer(add_completion=False)


def _report(outcome: object, json_output: bool, extra: dict[str, object] | None = None) -> None:
    from rich.console import Console

    from distilshot.train.report import print_results

    summary = {
        "bundle": str(outcome.bundle),
        "results": [r.to_dict() for r in outcome.results],
        "parity": outcome.parity.to_dict(),
        **(extra or {}),
    }
    if json_output:
        typer.echo(json.dumps(summary))
        return
    console = Console()
    print_results(outcome.results, title="held-out evaluation", console=console)
    diffs = ", ".join(f"{k} {v:.2e}" for k, v in outcome.parity.max_abs_diff.items())
    console.print(
        f"parity ONNX Runtime vs PyTorch: max |diff| {diffs}; "
        f"{outcome.parity.episodes} episodes, predictions identical: {outcome.parity.identical}"
    )
    console.print(f"bundle: {outcome.bundle}")


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(help="checkpoint written by distilshot train")],
    out: Annotated[Path | None, typer.Option(help="bundle folder (default: <run>/bundle)")] = None,
    parity_episodes: Annotated[int, typer.Option(help="episodes of the parity check")] = 50,
    overwrite: Annotated[bool, typer.Option(help="replace an existing bundle folder")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Export a checkpoint to a bundle (ONNX embedder + manifest.json) and check parity on real images."""
    from distilshot.export.pipeline import export_checkpoint

    _report(export_checkpoint(checkpoint, out, parity_episodes, overwrite), json_output)


@app.command(name="train-export")
def train_export(
    method: MethodOpt = "pretrain",
    dataset: DatasetOpt = "omniglot",
    backbone: BackboneOpt = "convnet4",
    preset: PresetOpt = "quick",
    epochs: EpochsOpt = None,
    steps_per_epoch: StepsOpt = None,
    lr: LrOpt = None,
    image_size: ImageSizeOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    params: ParamsOpt = None,
    teacher_backbone: TeacherBackboneOpt = None,
    teacher: TeacherOpt = None,
    episodes: Annotated[int, typer.Option(help="evaluation episodes per setting")] = 1000,
    classifier: Annotated[str, typer.Option(help="prototype | logreg | both")] = "prototype",
    run_dir: RunDirOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Train, evaluate on the held-out classes, export a bundle and check it against PyTorch."""
    from distilshot.export.pipeline import export_model
    from distilshot.serve.manifest import sha256_file
    from distilshot.train.pipeline import default_run_dir, evaluate, train
    from distilshot.train.report import save_results

    request = request_from_options(
        method,
        dataset,
        backbone,
        preset,
        epochs,
        steps_per_epoch,
        lr,
        image_size,
        seed,
        device,
        params,
        teacher_backbone,
        teacher,
    )
    outcome = train(request, run_dir or default_run_dir(request))
    classifiers = ("prototype", "logreg") if classifier == "both" else (classifier,)
    results = evaluate(
        outcome.model,
        outcome.spec,
        classifiers=classifiers,
        episodes=episodes,
        plots_dir=outcome.run.path / "plots",
    )
    save_results(outcome.run.path, results)
    training = {
        "request": request.to_dict(),
        "stages": {s.name: s.method for s in outcome.stages},
        "seconds": round(outcome.seconds, 1),
        "checkpoint_sha256": sha256_file(outcome.run.best),
    }
    exported = export_model(outcome.model, outcome.spec, outcome.run.path / "bundle", results, training)
    _report(exported, json_output, {"run": str(outcome.run.path), "train_seconds": round(outcome.seconds, 1)})
