"""`distilshot info` for people: the model card of `FewShotClassifier.info()` as labelled lines of text."""

from __future__ import annotations

from typing import Any

LABEL_WIDTH = 14


def model_card_lines(info: dict[str, Any]) -> list[str]:
    """One labelled line per subject (accuracy: one per measured setting), values in words."""
    rows = [
        (
            "model",
            f"{info['name']}: {info['method']}, backbone {info['backbone']}, trained on {info['dataset']}",
        ),
        *(("accuracy", line) for line in _metric_lines(info["metrics"])),
        ("unknown", _rejection_line(info["rejection"])),
        ("probabilities", _calibration_line(info["calibration"])),
        ("engine", _engine_line(info)),
        ("embeddings", _embeddings_line(info["outputs"], info["head"])),
        ("input", _input_line(info["preprocessing"])),
        ("fingerprint", info["fingerprint"]),
        ("bundle", f"{info['bundle']} (created {info['created'] or 'at an unknown time'})"),
    ]
    if "store" in info:
        rows.append(("store", f"{info['store']}: {info['classes']} classes"))
    lines, previous = [], None
    for label, text in rows:
        lines.append(f"{'' if label == previous else label:<{LABEL_WIDTH}}{text}")
        previous = label
    return lines


def _metric_lines(metrics: dict[str, Any]) -> list[str]:
    if not metrics:
        return ["not measured"]
    return [f"{key}: {_metric(value)}" for key, value in metrics.items()]


def _metric(value: Any) -> str:
    """An evaluation result as export records it (mean and ci95 in percent, its protocol), or any other
    measurement as its fields."""
    if isinstance(value, dict) and "mean" in value:
        ci = f" ± {float(value['ci95']):.2f}" if value.get("ci95") is not None else ""
        protocol = f" ({value['protocol']})" if value.get("protocol") else ""
        return f"{float(value['mean']):.2f}%{ci}{protocol}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return str(value)


def _rejection_line(rejection: dict[str, Any] | None) -> str:
    if rejection is None:
        return "no calibrated threshold: every query gets a class (classify --threshold sets one)"
    return (
        f"below logit {rejection['threshold']:.4g}: accepts {100 * rejection['known_accepted']:.1f}% of "
        f"queries of registered classes, rejects {100 * rejection['unknown_rejected']:.1f}% of others "
        f"({rejection['protocol']})"
    )


def _calibration_line(calibration: dict[str, Any] | None) -> str:
    if calibration is None:
        return "softmax at the head's temperature, not calibrated"
    return (
        f"calibrated: temperature {calibration['temperature']:.4g} fitted on {calibration['fit_split']}; "
        f"on {calibration['eval_split']} ECE {calibration['ece']:.3f} (uncalibrated "
        f"{calibration['ece_uncalibrated']:.3f}), NLL {calibration['nll']:.3f} (uncalibrated "
        f"{calibration['nll_uncalibrated']:.3f}) ({calibration['protocol']})"
    )


def _engine_line(info: dict[str, Any]) -> str:
    providers = ", ".join(info["providers"]) or "none"
    return f"{info['engine']} ({providers}), graph {info['graph']} in {info['precision']}"


def _embeddings_line(outputs: dict[str, int], head: dict[str, Any]) -> str:
    dims = ", ".join(f"{name} ({dim})" for name, dim in outputs.items())
    weights = ", ".join(f"{name} x{weight:g}" for name, weight in head["weights"].items())
    return f"{dims}; {head['metric']} head, weights {weights}, temperature {head['temperature']:.4g}"


def _input_line(prep: dict[str, Any]) -> str:
    channels = {1: "grey", 3: "RGB"}.get(prep["channels"], f"{prep['channels']} channels")
    numbers = ", ".join(f"{v:g}" for v in prep["mean"]), ", ".join(f"{v:g}" for v in prep["std"])
    return (
        f"{prep['width']}x{prep['height']} {channels} ({prep['resize']}, {prep['resample']}), "
        f"mean {numbers[0]}, std {numbers[1]}"
    )
