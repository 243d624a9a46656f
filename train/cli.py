"""`distilshot train` and `distilshot eval`. The option help lists what the registries hold (methods,
backbones, datasets, presets, method parameters), so it needs the method classes and thereby torch."""

from __future__ import annotations

import functools
import inspect
import json
import os
from collections.abc import Callable
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
NprocOpt = Annotated[
    int,
    typer.Option(
        help="train with this many processes on this machine (runs torchrun --standalone; one GPU each "
        "on CUDA); batch sizes and episodes are per process"
    ),
]
SyncBatchnormOpt = Annotated[
    bool,
    typer.Option(
        help="with several processes on CUDA, BatchNorm over all their batches (default: each its own)"
    ),
]


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
    *,
    sync_batchnorm: bool = False,
) -> Any:
    """The TrainRequest the shared training options describe. Its parameters before the `*` are those
    options as the commands take them (see `with_training_options`)."""
    from distilshot.train.recipes import TrainRequest

    overrides = {"epochs": epochs, "steps_per_epoch": steps_per_epoch, "lr": lr, "image_size": image_size}
    if sync_batchnorm:  # only when asked, so that other requests keep their config.json
        overrides["sync_batchnorm"] = True
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


def with_training_options(command: Callable[..., None]) -> Callable[..., None]:
    """`command` with the shared training options (request_from_options's) ahead of its own, declared
    once for every command that trains; it is called with their values in one dict, `training`, so that
    `request_from_options(**training)` is the request they describe."""
    shared = [
        p
        for p in inspect.signature(request_from_options, eval_str=True).parameters.values()
        if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    ]
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "training"]

    @functools.wraps(command)
    def with_options(**values: Any) -> None:
        command(training={p.name: values.pop(p.name) for p in shared}, **values)

    # typer reads the options from the signature and their types from the annotations
    parameters = [*shared, *own]
    with_options.__signature__ = inspect.Signature(parameters, return_annotation=None)  # type: ignore[attr-defined]
    with_options.__annotations__ = {p.name: p.annotation for p in parameters}
    return with_options


@app.command()
@with_training_options
def train(
    training: dict[str, Any],
    run_dir: RunDirOpt = None,
    resume: Annotated[
        Path | None, typer.Option(help="continue the run in this folder from its last checkpoint")
    ] = None,
    nproc_per_node: NprocOpt = 1,
    sync_batchnorm: SyncBatchnormOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Train a few-shot embedding network; writes checkpoints, metrics and plots to a run folder. Under
    torchrun every process trains and rank 0 writes; progress goes to stderr with --json.

    Example: distilshot train --method skd --dataset cifar-fs --preset quick
    """
    from distilshot.train.pipeline import default_run_dir
    from distilshot.train.recipes import TrainRequest

    launch_if_asked(nproc_per_node)
    if resume is not None:
        config_file = resume / "config.json"
        if not config_file.is_file():
            raise typer.BadParameter(f"{resume} is not a run folder (no config.json)", param_hint="--resume")
        request = TrainRequest.from_dict(json.loads(config_file.read_text()))
        folder = resume
    else:
        request = request_from_options(**training, sync_batchnorm=sync_batchnorm)
        folder = run_dir or default_run_dir(request)
    outcome = train_ranks(request, folder, resume is not None, json_output)
    if outcome is None:
        return
    summary = {
        "run": str(outcome.run.path),
        "checkpoint": str(outcome.run.best),
        "stages": {s.name: str(s.checkpoint) for s in outcome.stages},
        "seconds": round(outcome.seconds, 1),
    }
    typer.echo(json.dumps(summary) if json_output else f"best checkpoint: {outcome.run.best}")


def launch_if_asked(nproc_per_node: int) -> None:
    """With --nproc-per-node N > 1, runs this command again as N ranks under torchrun and exits with its
    status; the ranks torchrun starts have RANK set and go on."""
    from distilshot.train import distributed

    if nproc_per_node > 1 and "RANK" not in os.environ:
        raise typer.Exit(distributed.launch(nproc_per_node))


def train_ranks(request: Any, folder: Path, resume: bool, json_output: bool) -> Any | None:
    """Trains in this process, or as one rank of a torchrun job: the outcome on the process that writes
    (rank 0), None on the others. Ctrl-C says how to continue."""
    from distilshot.train import distributed

    with distributed.process_group(request.device) as here:
        try:
            outcome = _train_recorded(request, folder, resume, json_output)
        except KeyboardInterrupt:
            if here.main:
                typer.echo(interrupted_message(folder, here.world), err=True)
            raise typer.Exit(130) from None
    return outcome if here.main else None


def _train_recorded(request: Any, folder: Path, resume: bool, json_output: bool) -> Any:
    """Trains; under torchrun an exception is also recorded for torchrun's failure summary."""
    from rich.console import Console

    from distilshot.train.distributed import launched
    from distilshot.train.pipeline import train as run_training

    if launched():
        from torch.distributed.elastic.multiprocessing.errors import record

        run_training = record(run_training)
    console = Console(stderr=json_output)  # --json keeps stdout for the summary
    return run_training(request, folder, resume=resume, console=console)


def interrupted_message(folder: Path, world: int) -> str:
    """What Ctrl-C prints: how to continue, or that nothing was kept."""
    from distilshot.train.pipeline import has_checkpoints

    if not has_checkpoints(folder):
        return "interrupted before the first checkpoint; nothing was kept"
    command = f"distilshot train --resume {folder}"
    if world > 1 and os.environ.get("LOCAL_WORLD_SIZE") == str(world):  # all ranks on this machine
        command += f" --nproc-per-node {world}"
    elif world > 1:
        command += f" (under the same torchrun command: {world} processes on all machines)"
    return f"interrupted; continue with: {command}"


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
    """Evaluate a checkpoint: N-way K-shot episodes, mean accuracy ± 95% CI, protocol named.

    Example: distilshot eval runs/RUN/checkpoints/best.pt --way 5 --shot 1 --classifier both
    """
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
    path, dropped = save_results(run_folder_of(checkpoint), results)
    note = f"results saved to {path}"
    if dropped:
        counts = sorted({f"{r.episodes} episodes, {r.n_query} queries/class" for r in dropped})
        note += f" (replacing {len(dropped)} earlier results of {' and '.join(counts)})"
    if json_output:
        typer.echo(json.dumps(results_to_json(results)))
    else:
        print_results(results, title=f"{spec.method}/{spec.backbone} on {spec.dataset}")
    typer.echo(note, err=json_output)
