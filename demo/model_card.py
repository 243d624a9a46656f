"""The demo's model card: what is served, how accurate it is, and when it answers "unknown"."""

from __future__ import annotations

from distilshot.serve.classifier import FewShotClassifier


def model_card(classifier: FewShotClassifier) -> str:
    """Markdown from the bundle's manifest and the engine in use."""
    info = classifier.info()
    lines = [
        f"**Model** `{info['name']}` — method **{info['method']}**, backbone **{info['backbone']}**, "
        f"trained on **{info['dataset']}**; engine {info['engine']}; bundle fingerprint "
        f"`{info['fingerprint'][:12]}`",
    ]
    metrics = info["metrics"]
    if any(isinstance(v, dict) and "mean" in v for v in metrics.values()):
        shown = []
        for key, value in metrics.items():
            if isinstance(value, dict) and "mean" in value:  # percent, as export writes it
                ci = value.get("ci95")
                shown.append(f"{key}: {float(value['mean']):.2f}%" + (f" ± {float(ci):.2f}" if ci else ""))
        split = next((v.get("split") for v in metrics.values() if isinstance(v, dict) and v.get("split")), "")
        lines.append(f"**Accuracy** on held-out classes ({split}) — " + "; ".join(shown))
    rejection = info["rejection"]
    if rejection:
        lines.append(
            f"**Unknown** below logit {rejection['threshold']:.3g}: accepts "
            f"{100 * rejection['known_accepted']:.1f}% of queries of registered classes and rejects "
            f"{100 * rejection['unknown_rejected']:.1f}% of others ({rejection['protocol']})"
        )
    else:
        lines.append("**Unknown**: this bundle has no calibrated threshold, so every query gets a class")
    calibration = classifier.manifest.calibration
    if calibration is not None:
        lines.append(
            f"**Probabilities** calibrated (temperature {calibration.temperature:.3g}, fitted on "
            f"{calibration.fit_split}): expected calibration error {calibration.ece:.3f} "
            f"(uncalibrated {calibration.ece_uncalibrated:.3f}) on {calibration.eval_split}, "
            f"{calibration.protocol}"
        )
    else:
        lines.append("**Probabilities**: this bundle's temperature is not calibrated")
    return "\n\n".join(lines)
