"""`distilshot train` and `distilshot eval`. The option help lists what the registries hold (methods,
backbones, datasets, presets, method parameters), so it needs the method classes and thereby torch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from distilshot.core.enums import Preset
from distilshot.train.backbones import BACKBONES
from distilshot.train.config import DEFAULT_METHOD
from distilshot.train.data.registry import DATASETS
from distilshot.train.methods import RECIPES, method_params

app = typer.Typer(add_completion=False)


def _params_help() -> str:
    """The --set keys of every method: KEY for a one-stage method, STAGE.KEY for a multi-stage one."""
    lines = []
    for name, recipe in sorted(RECIPES.items()):
        prefix = len(recipe.stages) > 1
        keys = [f"{s.name}." * prefix + p for s in recipe.stages for p in method_params(s.method)]
        lines.append(f"{name}: {', '.join(keys) or '-'}")
    return "; ".join(lines)


MethodOpt = Annotated[
    str,
    typer.Option(help=" | ".join(f"{name} ({recipe.help})" for name, recipe in sorted(RECIPES.items()))),
]
DatasetOpt = Annotated[str, typer.Option(help=" | ".join([*DATASETS, "folder:PATH"]))]
BackboneOpt = Annotated[str, typer.Option(help=" | ".join(BACKBONES))]
PresetOpt = Annotated[
    str, typer.Option(help=f"{' | '.join(Preset)} (quick: a few CPU minutes; paper: the published schedule)")
]
EpochsOpt = Annotated[int | None, typer.Option(help="override the preset's epochs")]
StepsOpt = Annotated[int | None, typer.Option(help="override episodes/batches per epoch")]
LrOpt = Annotated[float | None, typer.Option(help="override the learning rate")]
ImageSizeOpt = Annotated[int | None, typer.Option(help="override the dataset's image size")]
SeedOpt = Annotated[int, typer.Option(help="seed of initialisation, sampling and augmentation")]
DeviceOpt = Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")]
ParamsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help=f"method parameter KEY=VALUE (JSON value), e.g. --set rotation_augment=true; {_params_help()}",
    ),
]
RunDirOpt = Annotated[Path | None, typer.Option(help="run folder (default runs/<time>-<method>-...)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]


def parse_params(pairs: list[str] | None) -> dict[str, Any]:
    """--set KEY=VALUE pairs -> {KEY: VALUE}, VALUE read as JSON where it parses, else as a string."""
    params: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--set")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


TeacherBackboneOpt = Annotated[
    str | None,
    typer.Option(help="backbone of the teaching stage of a distillation method (default: --backbone)"),
]
TeacherOpt = Annotated[
    Path | None, typer.Option(help="use this checkpoint as the teacher instead of training one")
]


def request_from_options(
    method: str,
    dataset: str,
    backbone: str,
    preset: str,
    epochs: int | None,
    steps_per_epoch: int | None,
    lr: float | None,
    image_size: int | None,
    seed: int,
    device: str,
    params: list[str] | None,
    teacher_backbone: str | None = None,
    teacher: Path | None = None,
) -> Any:
    """The TrainRequest the shared training options describe."""
    from distilshot.train.recipes import TrainRequest

    overrides = {"epochs": epochs, "steps_per_epoch": steps_per_epoch, "lr": lr, "image_size": image_size}
    return TrainRequest(
        method=method,
        dataset=dataset,
        backbone=backbone,
        preset=preset,
        seed=seed,
        device=device,
        overrides={k: v for k, v in overrides.items() if v is not None},
        params=parse_params(params),
        teacher_backbone=teacher_backbone,
        teacher=None if teacher is None else str(teacher),
    )


@app.command()
def train(
    method: MethodOpt = DEFAULT_METHOD,
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
    run_dir: RunDirOpt = None,
    resume: Annotated[
        Path | None, typer.Option(help="continue the run in this folder from its last checkpoint")
    ] = None,
    json_output: JsonOpt = False,
) -> None:
    """Train a few-shot embedding network; writes checkpoints, metrics and plots to a run folder."""
    from distilshot.train.pipeline import default_run_dir
    from distilshot.train.pipeline import train as run_training
    from distilshot.train.recipes import TrainRequest

    if resume is not None:
        config_file = resume / "config.json"
        if not config_file.is_file():
            raise typer.BadParameter(f"{resume} is not a run folder (no config.json)", param_hint="--resume")
        request = TrainRequest.from_dict(json.loads(config_file.read_text()))
        folder = resume
    else:
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
        folder = run_dir or default_run_dir(request)
    outcome = run_training(request, folder, resume=resume is not None)
    summary = {
        "run": str(outcome.run.path),
        "checkpoint": str(outcome.run.best),
        "stages": {s.name: str(s.checkpoint) for s in outcome.stages},
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
    protocol: Annotated[
        list[str] | None,
        typer.Option(
            help="episode protocol, repeatable: random (any classes of the split) | within-alphabet (one "
            "Omniglot alphabet per episode, support and query by disjoint drawers); default: the "
            "dataset's standard ones (omniglot: both)"
        ),
    ] = None,
    outputs: Annotated[
        str | None,
        typer.Option(help="evaluate only these embedding outputs, comma-separated (e.g. one BML view)"),
    ] = None,
    json_output: JsonOpt = False,
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
        outputs=tuple(outputs.split(",")) if outputs else None,
        plots_dir=run_folder_of(checkpoint) / "plots",
        protocols=tuple(protocol) if protocol else None,
    )
    save_results(run_folder_of(checkpoint), results)
    if json_output:
        typer.echo(json.dumps(results_to_json(results)))
    else:
        print_results(results, title=f"{spec.method}/{spec.backbone} on {spec.dataset}")
