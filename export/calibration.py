"""Calibrated probabilities: temperature scaling of a bundle's head (Guo et al., ICML 2017).

The rule, run at export on the bundle's own engine:
1. Episodes: 20-way 1-shot within-alphabet (Lake's one-shot protocol) where the split records alphabets
   and drawers (Omniglot), else 5-way 1-shot over any classes; 15 queries per class (fewer where classes
   have fewer images).
2. Fit on the validation split (classes the model never trained on), or on the test split where the
   dataset has none: the factor s on the head's logits that minimises the mean negative log-likelihood
   of the episode queries' classes, by golden-section search on log s (the NLL is convex in 1/s, so it
   has one minimum). The head's temperature becomes temperature * s.
3. Measure on other episodes of the test split: top-1 accuracy, NLL and the expected calibration error
   (ECE: 15 equal-width bins of the top-1 probability, each bin's |accuracy - mean probability| weighted
   by its share of queries), at the fitted temperature and at the model's own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from distilshot.core.head import PrototypeHead, softmax
from distilshot.core.manifest import Calibration, load_manifest
from distilshot.errors import DistilshotError
from distilshot.export.embeddings import bundle_features
from distilshot.export.episodes import episode_logits
from distilshot.train.data.imageset import ImageSet
from distilshot.train.evaluation import describe_episodes, episode_sampler
from distilshot.train.plots import plot_reliability

BINS = 15
EPISODES = 300
N_QUERY = 15
# the search range of the factor s on the logits, wide enough for squared distances and cosines alike
LOG_SCALE_RANGE = (math.log(1e-4), math.log(1e4))
GOLDEN_STEPS = 80  # shrinks the interval by 0.618**80 ~ 2e-17: exact to float64


@dataclass(frozen=True)
class EpisodeProtocol:
    sampling: str
    n_way: int
    k_shot: int
    n_query: int
    episodes: int

    def describe(self) -> str:
        return describe_episodes(self.sampling, self.n_way, self.k_shot, self.n_query, self.episodes)


def mean_nll(logits: np.ndarray, targets: np.ndarray, scale: float = 1.0) -> float:
    """Mean negative log-likelihood of `targets` under softmax(logits / scale), in float64."""
    z = logits.astype(np.float64) / scale
    top = z.max(axis=1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))
    return float((log_norm - z[np.arange(len(z)), targets]).mean())


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """The factor s > 0 minimising `mean_nll(logits, targets, s)`, by golden-section search on log s
    within LOG_SCALE_RANGE (a minimum beyond it is clipped to its edge)."""
    ratio = (math.sqrt(5) - 1) / 2
    lo, hi = LOG_SCALE_RANGE
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = mean_nll(logits, targets, math.exp(a)), mean_nll(logits, targets, math.exp(b))
    for _ in range(GOLDEN_STEPS):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = mean_nll(logits, targets, math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = mean_nll(logits, targets, math.exp(b))
    return math.exp((lo + hi) / 2)


def reliability_bins(
    confidence: np.ndarray, correct: np.ndarray, bins: int = BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin of the top-1 probability (bin i holds (i/bins, (i+1)/bins], the first also 0):
    the number of queries, their mean probability and their accuracy (0 for empty bins)."""
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    safe = np.maximum(counts, 1)
    mean_confidence = np.bincount(index, weights=confidence, minlength=bins) / safe
    accuracy = np.bincount(index, weights=correct.astype(np.float64), minlength=bins) / safe
    return counts, mean_confidence, accuracy


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = BINS) -> float:
    """Sum over bins of (share of queries) * |accuracy - mean top-1 probability|."""
    counts, mean_confidence, accuracy = reliability_bins(confidence, correct, bins)
    return float((counts / counts.sum() * np.abs(accuracy - mean_confidence)).sum())


def protocol_logits(
    head: PrototypeHead,
    features: Mapping[str, np.ndarray],
    data: ImageSet,
    protocol: EpisodeProtocol,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Logits [queries, n_way] of every query of the protocol's episodes on `data` under `head`, and the
    episode class of each query."""
    sampler = episode_sampler(
        protocol.sampling,
        data.labels,
        protocol.n_way,
        protocol.k_shot,
        protocol.n_query,
        protocol.episodes,
        seed,
        data.class_groups,
        data.drawers,
    )
    logits = [episode_logits(head, features, e.support, e.query.ravel()) for e in sampler]
    targets = np.repeat(np.arange(protocol.n_way), protocol.n_query)
    return np.concatenate(logits), np.tile(targets, protocol.episodes)


def calibration_protocol(*sets: ImageSet) -> EpisodeProtocol:
    """Step 1 of the rule, for episodes that each of `sets` can provide."""
    within = all(s.class_groups is not None and s.drawers is not None for s in sets)
    fewest = min(int(np.bincount(s.labels).min()) for s in sets)
    n_query = min(N_QUERY, fewest - 1)
    if n_query < 1:
        raise DistilshotError("calibrating the temperature needs at least 2 images of every held-out class")
    return EpisodeProtocol(
        "within-alphabet" if within else "random", 20 if within else 5, 1, n_query, EPISODES
    )


def calibrate_temperature(
    folder: Path | str,
    fit: ImageSet,
    test: ImageSet,
    test_features: Mapping[str, np.ndarray],
    plot: Path | None = None,
) -> Calibration:
    """Fits and measures the temperature by the rule in this module's docstring and records it in the
    head and manifest of `folder`, the bundle export is staging (export/pipeline.py); `test_features` are
    its embeddings of `test` (`fit` may be `test` itself when the dataset has no validation split).
    Draws the reliability diagram to `plot`."""
    manifest = load_manifest(folder)
    head = PrototypeHead(manifest.head)
    protocol = calibration_protocol(fit, test)
    fit_features = test_features if fit is test else bundle_features(folder, fit.images)
    try:
        fit_logits, fit_targets = protocol_logits(head, fit_features, fit, protocol, seed=0)
        logits, targets = protocol_logits(head, test_features, test, protocol, seed=1)
    except ValueError as error:
        raise DistilshotError(
            f"cannot calibrate the temperature on {fit.name} and {test.name}: {error}"
        ) from None
    scale = fit_temperature(fit_logits, fit_targets)
    measured = {}
    for name, s in (("uncalibrated", 1.0), ("calibrated", scale)):
        probabilities = softmax(logits / s)
        confidence = probabilities.max(axis=1)
        correct = probabilities.argmax(axis=1) == targets
        measured[name] = (confidence, correct, mean_nll(logits, targets, s))
    temperature = manifest.head.temperature * scale
    calibration = Calibration(
        temperature=temperature,
        fitted_from=manifest.head.temperature,
        protocol=f"{protocol.describe()}, prototype head",
        fit_split=fit.name if fit is not test else f"{fit.name} (no validation split; other episodes)",
        eval_split=test.name,
        bins=BINS,
        ece=expected_calibration_error(*measured["calibrated"][:2]),
        ece_uncalibrated=expected_calibration_error(*measured["uncalibrated"][:2]),
        nll=measured["calibrated"][2],
        nll_uncalibrated=measured["uncalibrated"][2],
        accuracy=float(measured["calibrated"][1].mean()),
    )
    replace(manifest, head=replace(manifest.head, temperature=temperature), calibration=calibration).save(
        Path(folder)
    )
    if plot is not None:
        plot_reliability(
            {
                f"temperature {temperature:.4g} (ECE {calibration.ece:.3f})": reliability_bins(
                    *measured["calibrated"][:2]
                ),
                f"uncalibrated, temperature {calibration.fitted_from:.4g} (ECE "
                f"{calibration.ece_uncalibrated:.3f})": reliability_bins(*measured["uncalibrated"][:2]),
            },
            plot,
            f"{manifest.name}: {test.name}, {protocol.describe()}",
        )
    return calibration
