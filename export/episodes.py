"""Scoring an episode the way serve does: prototypes are the class means of support rows (core.head's
class_mean), queries get the numpy prototype head's logits against them. Parity, engine comparison,
temperature calibration and the rejection threshold all score their episodes here."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from distilshot.core.head import PrototypeHead, class_mean


def episode_logits(
    head: PrototypeHead, features: Mapping[str, np.ndarray], support: np.ndarray, query: np.ndarray
) -> np.ndarray:
    """Logits [len(query), ways] of the rows `query` of `features` (per output, [N, dim]) against the
    prototypes of `support` ([ways, shots] row indices), class c being support row c."""
    means = {o: np.stack([class_mean(v[row]) for row in support]) for o, v in features.items()}
    prototypes = head.prepare([str(c) for c in range(len(support))], means)
    return head.logits({o: v[query] for o, v in features.items()}, prototypes)
