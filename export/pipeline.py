"""`export` and `train-export`: evaluate a model on the held-out split (or take its run's eval.json),
export the bundle, check its parity, calibrate its probabilities (temperature) and its "unknown"
threshold, then add the graphs apps without Python use (export/app_graphs.py). The test split is loaded
once for all of them, and the bundle is assembled in a staging folder that is published only once
everything is in its manifest (export/bundle.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distilshot.core.files import sha256_file
from distilshot.core.manifest import Calibration, Rejection
from distilshot.errors import DistilshotError
from distilshot.export.app_graphs import stage_app_graphs
from distilshot.export.bundle import stage_embedder, staged_folder
from distilshot.export.calibration import calibrate_temperature
from distilshot.export.embeddings import bundle_features
from distilshot.export.parity import ParityReport, check_parity
from distilshot.export.rejection import record_rejection
from distilshot.train.checkpoint import ModelSpec, load_model
from distilshot.train.data.imageset import ImageSet
from distilshot.train.data.registry import dataset_info, load_split
from distilshot.train.evaluation import EvalResult
from distilshot.train.methods import Method
from distilshot.train.pipeline import TrainOutcome, evaluate
from distilshot.train.recipes import TrainRequest
from distilshot.train.report import load_results, run_folder_of, save_results


@dataclass
class ExportOutcome:
    bundle: Path
    results: list[EvalResult]
    parity: ParityReport
    calibration: Calibration
    rejection: Rejection


def metrics_of(results: list[EvalResult]) -> dict[str, dict[str, object]]:
    """Manifest metrics keyed "<N>-way <K>-shot <classifier>"; the most episodes win a shared key."""
    return {f"{r.key} {r.classifier}": r.to_dict() for r in sorted(results, key=lambda r: r.episodes)}


def export_model(
    model: Method,
    spec: ModelSpec,
    out: Path,
    results: list[EvalResult],
    training: dict[str, Any],
    test: ImageSet,
    parity_episodes: int = 50,
    overwrite: bool = False,
) -> ExportOutcome:
    """Writes the bundle `out` of `model` with its parity, temperature and threshold measured on `test`
    (the model's test split); the reports and the reliability diagram go beside it."""
    out = Path(out)
    with staged_folder(out, overwrite) as staging:
        stage_embedder(model, spec, staging, metrics_of(results), training)
        parity = check_parity(model, spec, staging, test, episodes=parity_episodes)
        (out.parent / f"{out.name}.parity.json").write_text(json.dumps(parity.to_dict(), indent=2) + "\n")
        if not parity.faithful:
            raise DistilshotError(
                f"the bundle for {out} predicts differently from PyTorch on {parity.disagreements} of "
                f"{parity.queries} parity queries beyond float32 rounding ({parity.near_ties} near ties; max "
                f"abs diff {parity.max_abs_diff}); it was not written"
            )
        # Probabilities, then the "unknown" answer's threshold on logits at the fitted temperature, both on
        # held-out classes with the bundle's own engine.
        has_val = "val" in dataset_info(spec.dataset, spec.image_size).splits
        fit = load_split(spec.dataset, "val", spec.image_size) if has_val else test
        features = bundle_features(staging, test.images)
        plot = out.parent / f"{out.name}.reliability.png"
        calibration = calibrate_temperature(staging, fit, test, features, plot)
        rejection = record_rejection(staging, features, test.labels, test.name)
        stage_app_graphs(staging)
    return ExportOutcome(out, results, parity, calibration, rejection)


def evaluate_and_export(
    model: Method,
    spec: ModelSpec,
    run_dir: Path,
    training: dict[str, Any],
    *,
    results: list[EvalResult] | None = None,
    classifiers: tuple[str, ...] = ("prototype",),
    episodes: int = 1000,
    plots_dir: Path | None = None,
    out: Path | None = None,
    parity_episodes: int = 50,
    overwrite: bool = False,
) -> ExportOutcome:
    """Evaluates `model` on its test split unless `results` are given (saving them to the run's
    eval.json), then exports it to `out` (default <run_dir>/bundle) checked on the same split."""
    test = load_split(spec.dataset, "test", spec.image_size)
    if results is None:
        results = evaluate(
            model, spec, classifiers=classifiers, episodes=episodes, plots_dir=plots_dir, data=test
        )
        save_results(run_dir, results)
    bundle = out or run_dir / "bundle"
    return export_model(model, spec, bundle, results, training, test, parity_episodes, overwrite)


def export_checkpoint(
    checkpoint: Path, out: Path | None, parity_episodes: int = 50, overwrite: bool = False
) -> ExportOutcome:
    """`export CHECKPOINT`: metrics come from the run's eval.json, or are measured now."""
    model, spec, payload = load_model(checkpoint)
    run_dir = run_folder_of(checkpoint)
    training = {"config": payload.get("config", {}), "checkpoint_sha256": sha256_file(checkpoint)}
    return evaluate_and_export(
        model,
        spec,
        run_dir,
        training,
        results=load_results(run_dir),
        out=out,
        parity_episodes=parity_episodes,
        overwrite=overwrite,
    )


def export_trained(
    request: TrainRequest, outcome: TrainOutcome, classifiers: tuple[str, ...], episodes: int
) -> ExportOutcome:
    """`train-export` once training is done: evaluates (with the run's plots) and exports to its bundle/."""
    training = {
        "request": request.to_dict(),
        "stages": {s.name: s.method for s in outcome.stages},
        "seconds": round(outcome.seconds, 1),
        "checkpoint_sha256": sha256_file(outcome.run.best),
    }
    return evaluate_and_export(
        outcome.model,
        outcome.spec,
        outcome.run.path,
        training,
        classifiers=classifiers,
        episodes=episodes,
        plots_dir=outcome.run.path / "plots",
    )
