"""`distilshot export`, `train-export`, `generator` and `adapt`. Heavy imports (torch) happen inside the
commands; the format table is read at import, for the help of `--to`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from distilshot.export.format_table import ExportOptions
from distilshot.export.formats import BUNDLE_FORMAT, add_formats, formats_help, parse_formats
from distilshot.train.cli import (
    BackboneOpt,
    JsonOpt,
    NprocOpt,
    RunDirOpt,
    SeedOpt,
    SyncBatchnormOpt,
    launch_if_asked,
    request_from_options,
    train_ranks,
    with_training_options,
)

app = typer.Typer(add_completion=False)


def _report(outcome: object, json_output: bool, extra: dict[str, object] | None = None) -> None:
    from dataclasses import asdict

    from rich.console import Console

    from distilshot.train.report import print_results

    summary = {
        "bundle": str(outcome.bundle),
        "results": [r.to_dict() for r in outcome.results],
        "parity": outcome.parity.to_dict(),
        "calibration": asdict(outcome.calibration),
        "rejection": asdict(outcome.rejection),
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
        f"{outcome.parity.episodes} episodes: {outcome.parity.queries - outcome.parity.disagreements} of "
        f"{outcome.parity.queries} queries faithful, {outcome.parity.near_ties} near ties within float32 "
        f"rounding"
    )
    c, r = outcome.calibration, outcome.rejection
    console.print(
        f"probabilities: temperature {c.temperature:.4g} (model's {c.fitted_from:.4g}) fitted on "
        f"{c.fit_split}; "
        f"on {c.eval_split} ({c.protocol}): ECE {c.ece:.3f} (uncalibrated {c.ece_uncalibrated:.3f}), "
        f"NLL {c.nll:.3f} (uncalibrated {c.nll_uncalibrated:.3f}), accuracy {100 * c.accuracy:.2f}%",
        markup=False,
    )
    console.print(
        f"unknown below logit {r.threshold:.4g}: {100 * r.known_accepted:.1f}% of known queries accepted, "
        f"{100 * r.unknown_rejected:.1f}% of unknown rejected ({r.protocol})",
        markup=False,
    )
    console.print(f"bundle: {outcome.bundle}")


@app.command()
def export(
    checkpoint: Annotated[
        Path | None, typer.Argument(help="checkpoint written by distilshot train (or give --bundle)")
    ] = None,
    bundle: Annotated[Path | None, typer.Option(help="add formats to this existing bundle instead")] = None,
    to: Annotated[str, typer.Option(help=formats_help())] = "onnx",
    out: Annotated[Path | None, typer.Option(help="bundle folder (default: <run>/bundle)")] = None,
    parity_episodes: Annotated[int, typer.Option(help="episodes of the PyTorch parity check")] = 50,
    check_episodes: Annotated[
        int, typer.Option(help="evaluation episodes of each format's check")
    ] = ExportOptions.episodes,
    calibration_images: Annotated[
        int, typer.Option(help="training images that calibrate int8")
    ] = ExportOptions.calibration_images,
    max_int8_drop: Annotated[
        float, typer.Option(help="5-way 1-shot points int8 may lose")
    ] = ExportOptions.max_drop,
    overwrite: Annotated[bool, typer.Option(help="replace an existing bundle folder")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Export a checkpoint to a bundle (ONNX embedder + manifest.json, checked against PyTorch on real
    images) and/or add deployment formats to a bundle, each checked on the evaluation episodes.

    Example: distilshot export --bundle runs/RUN/bundle --to int8,openvino,ort
    """
    from distilshot.errors import DistilshotError

    formats = parse_formats(to)
    if (checkpoint is None) == (bundle is None):
        raise DistilshotError("give a CHECKPOINT to export, or --bundle to add formats to, not both")
    if bundle is not None and formats == [BUNDLE_FORMAT]:
        raise DistilshotError(f"{bundle} already has its ONNX graph; say which formats to add with --to")
    if check_episodes < 2 or calibration_images < 1:
        raise DistilshotError("--check-episodes must be at least 2 and --calibration-images at least 1")
    if checkpoint is not None:
        from distilshot.export.pipeline import export_checkpoint

        outcome = export_checkpoint(checkpoint, out, parity_episodes, overwrite)
        bundle = outcome.bundle
        _report(outcome, json_output)
    reports = add_formats(bundle, formats, ExportOptions(check_episodes, calibration_images, max_int8_drop))
    if reports:
        _print_formats(bundle, reports, json_output)


def _print_formats(bundle: Path, reports: list, json_output: bool) -> None:
    if json_output:
        for report in reports:
            typer.echo(json.dumps({"bundle": str(bundle), **report.to_dict()}))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"formats added to {bundle}", title_justify="left")
    for column in ("format", "files", "check", "result"):
        table.add_column(column, overflow="fold")
    for report in reports:
        rows = [_check_row(c) for c in report.checks] or [("", "")]
        for i, (check, result) in enumerate(rows):
            table.add_row(
                report.format if i == 0 else "", "\n".join(report.files) if i == 0 else "", check, result
            )
    console = Console()
    console.print(table)
    for report in reports:
        for note in report.notes:
            console.print(f"{report.format}: {note}", markup=False)


def _check_row(check: dict) -> tuple[str, str]:
    if "agreement" in check:
        return (
            f"{check['candidate']} vs {check['reference']}, {check['n_way']}-way {check['k_shot']}-shot",
            f"agree {100 * check['agreement']:.2f}%, accuracy {check['candidate_accuracy']:.2f} vs "
            f"{check['reference_accuracy']:.2f} (drop {check['drop']:+.2f}), "
            f"max |diff| {check['max_abs_diff']:.1e}",
        )
    if check.get("check") == "tensorrt-offline":
        ops = ", ".join(f"{k} x{v}" for k, v in check["operators"].items())
        return f"TensorRT ops and shapes, {check['graph']}", f"ok: {ops}" if not check[
            "problems"
        ] else "; ".join(check["problems"])
    return check.get("check", ""), ", ".join(f"{k}: {v}" for k, v in check.items() if k != "check")


@app.command(name="train-export")
@with_training_options
def train_export(
    training: dict[str, Any],
    episodes: Annotated[int, typer.Option(help="evaluation episodes per setting")] = 1000,
    classifier: Annotated[str, typer.Option(help="prototype | logreg | both")] = "prototype",
    run_dir: RunDirOpt = None,
    nproc_per_node: NprocOpt = 1,
    sync_batchnorm: SyncBatchnormOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Train, evaluate on the held-out classes, export a bundle and check it against PyTorch. Under
    torchrun (or --nproc-per-node) every process trains and rank 0 evaluates and exports.

    Example: distilshot train-export --method bml --dataset omniglot --preset quick
    """
    from distilshot.export.pipeline import export_trained
    from distilshot.train.pipeline import default_run_dir

    launch_if_asked(nproc_per_node)
    request = request_from_options(**training, sync_batchnorm=sync_batchnorm)
    classifiers = ("prototype", "logreg") if classifier == "both" else (classifier,)
    trained = train_ranks(request, run_dir or default_run_dir(request), False, json_output)
    if trained is None:  # another rank than rank 0: rank 0 evaluates and exports
        return
    exported = export_trained(request, trained, classifiers, episodes)
    _report(exported, json_output, {"run": str(trained.run.path), "train_seconds": round(trained.seconds, 1)})


@app.command()
def generator(
    bundle: Annotated[Path, typer.Option("--bundle", "-b", help="bundle to add feature generators to")],
    schedule: Annotated[
        str, typer.Option(help="weaken-student | strengthen-teacher | plain | no-distillation")
    ] = "weaken-student",
    members: Annotated[int, typer.Option(help="ensemble size (one teacher set each)")] = 1,
    iterations: Annotated[int, typer.Option(help="meta-training episodes per generator")] = 2000,
    k_max: Annotated[int | None, typer.Option(help="real examples per class of the teacher")] = None,
    n_way: Annotated[int, typer.Option(help="classes per meta-training episode")] = 5,
    episodes: Annotated[int, typer.Option(help="evaluation episodes per setting")] = 1000,
    seed: SeedOpt = 0,
    json_output: JsonOpt = False,
) -> None:
    """Train feature generators by progressive distillation on the bundle's base classes and add them to
    the bundle; `classify --augment` then completes each class with generated features.

    Example: distilshot generator --bundle runs/RUN/bundle
    """
    import numpy as np

    from distilshot.core.manifest import load_manifest
    from distilshot.export.generator_bundle import add_generators
    from distilshot.train.data.registry import load_split
    from distilshot.train.generator import GeneratorConfig
    from distilshot.train.report import print_results

    if k_max is None:  # the paper's 128, capped by what the base classes hold (Omniglot: 20 drawings)
        manifest = load_manifest(bundle, verify=False)
        labels = load_split(manifest.dataset, "train", manifest.preprocessing.height).labels
        k_max = min(128, int(np.bincount(labels).min()) - 1)
    cfg = GeneratorConfig(
        schedule=schedule, members=members, iterations=iterations, k_max=k_max, n_way=n_way, seed=seed
    )
    _, results = add_generators(bundle, cfg, episodes)
    if json_output:
        typer.echo(
            json.dumps(
                {"bundle": str(bundle), "config": cfg.to_dict(), "results": [r.to_dict() for r in results]}
            )
        )
    else:
        print_results(results, title=f"plain vs generator-augmented prototypes ({schedule}, {members})")


@app.command()
def adapt(
    bundle: Annotated[Path, typer.Option("--bundle", "-b", help="bundle whose embedder teaches")],
    store: Annotated[Path, typer.Option("--store", "-s", help="store whose classes the student learns")],
    out: Annotated[Path, typer.Option(help="folder of the new bundle")],
    backbone: BackboneOpt = "convnet4",
    steps: Annotated[int, typer.Option(help="training steps of each REFILLED step")] = 150,
    new_store: Annotated[
        Path | None, typer.Option(help="also write a store for the new bundle, its images embedded again")
    ] = None,
    start: Annotated[
        Path | None,
        typer.Option(
            help="checkpoint whose backbone the student starts from, e.g. the run the bundle was exported "
            "from (same backbone as --backbone); without it, random weights"
        ),
    ] = None,
    seed: SeedOpt = 0,
    json_output: JsonOpt = False,
) -> None:
    """REFILLED adapt mode: distil the bundle's embedder into a small student for exactly the store's
    classes; the new bundle classifies them with a fixed classifier and still accepts new classes.

    Example: distilshot adapt --bundle runs/RUN/bundle --store classes.db --out adapted/
    """
    from distilshot.core.manifest import load_manifest
    from distilshot.export.adapt_bundle import adapt as run_adapt
    from distilshot.export.adapt_bundle import restore_for
    from distilshot.train.adapt import AdaptConfig
    from distilshot.train.presets import dataset_augmentation

    manifest = load_manifest(bundle)
    augment = dataset_augmentation(manifest.dataset) if manifest.preprocessing.channels == 3 else "none"
    cfg = AdaptConfig(backbone=backbone, embed_steps=steps, classify_steps=steps, augment=augment, seed=seed)
    outcome = run_adapt(bundle, store, out, cfg, start=start)
    if new_store is not None:
        restore_for(outcome.bundle, store, new_store)
    summary = {
        "bundle": str(outcome.bundle),
        "classes": outcome.classes,
        "images": outcome.images,
        "fit_accuracy": outcome.fit_accuracy,
        "max_abs_diff": outcome.max_abs_diff,
        "store": None if new_store is None else str(new_store),
    }
    if json_output:
        typer.echo(json.dumps(summary))
    else:
        typer.echo(
            f"student bundle: {outcome.bundle} ({len(outcome.classes)} classes, {outcome.images} images, "
            f"fit accuracy {100 * outcome.fit_accuracy:.1f}%, ONNX vs PyTorch max |diff| "
            f"{outcome.max_abs_diff:.1e})"
        )
        if new_store is not None:
            typer.echo(f"store for it: {new_store}")
