"""`train-export`: train, evaluate on the held-out split, export the bundle, check its parity, calibrate
its probabilities (temperature) and its "unknown" threshold."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from distilshot.core.files import sha256_file
from distilshot.core.manifest import Calibration, Rejection
from distilshot.errors import DistilshotError
from distilshot.export.bundle import write_bundle
from distilshot.export.calibration import calibrate_temperature
from distilshot.export.parity import ParityReport, check_parity
from distilshot.serve.rejection import bundle_features, record_rejection
from distilshot.train.checkpoint import ModelSpec, load_model
from distilshot.train.data.registry import dataset_info, load_split
from distilshot.train.evaluation import EvalResult
from distilshot.train.methods import Method
from distilshot.train.pipeline import evaluate
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
    training: dict[str, object],
    parity_episodes: int = 50,
    overwrite: bool = False,
) -> ExportOutcome:
    bundle, _ = write_bundle(model, spec, out, metrics_of(results), training, overwrite=overwrite)
    test = load_split(spec.dataset, "test", spec.image_size)
    parity = check_parity(model, spec, bundle, test, episodes=parity_episodes)
    (bundle.parent / f"{bundle.name}.parity.json").write_text(json.dumps(parity.to_dict(), indent=2) + "\n")
    if not parity.faithful:
        raise DistilshotError(
            f"the exported bundle {bundle} predicts differently from PyTorch on {parity.disagreements} of "
            f"{parity.queries} parity queries beyond float32 rounding ({parity.near_ties} near ties; max abs "
            f"diff {parity.max_abs_diff})"
        )
    # Probabilities, then the "unknown" answer's threshold on logits at the fitted temperature, both on
    # held-out classes with the bundle's own engine; the diagram goes beside the parity report.
    has_val = "val" in dataset_info(spec.dataset, spec.image_size).splits
    fit = load_split(spec.dataset, "val", spec.image_size) if has_val else test
    features = bundle_features(bundle, test.images)
    plot = bundle.parent / f"{bundle.name}.reliability.png"
    calibration = calibrate_temperature(bundle, fit, test, features, plot)
    rejection = record_rejection(bundle, features, test.labels, test.name)
    return ExportOutcome(bundle, results, parity, calibration, rejection)


def export_checkpoint(
    checkpoint: Path, out: Path | None, parity_episodes: int = 50, overwrite: bool = False
) -> ExportOutcome:
    """Exports a checkpoint; metrics come from the run's eval.json, or are measured now."""
    model, spec, payload = load_model(checkpoint)
    run_dir = run_folder_of(checkpoint)
    results = load_results(run_dir)
    if results is None:
        results = evaluate(model, spec)
        save_results(run_dir, results)
    training = {"config": payload.get("config", {}), "checkpoint_sha256": sha256_file(checkpoint)}
    return export_model(model, spec, out or run_dir / "bundle", results, training, parity_episodes, overwrite)
