"""Scoring query embeddings against the registered classes, one scorer per kind of head.

Every scorer turns a snapshot of the registered classes and the queries' embeddings into `Scores`:
softmax probabilities, logits, and the rejection threshold its rule applies. What a scorer derives from
the classes (prepared prototypes, generated features) it keeps for the snapshot's `version`, so the work
is done once per change of the store, whoever made the change.

- PrototypeScorer: the bundle's prototype head; "unknown" below the explicit threshold, else below the
  bundle's calibrated one.
- AugmentedScorer: each class completed with the bundle's generated features (serve/extra_heads.py), the
  generators' students averaged; the calibrated threshold belongs to the plain head, so only an explicit
  threshold applies.
- FixedScorer: the bundle's fixed classifier, for exactly the classes it was trained on; only an explicit
  threshold applies.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import numpy as np

from distilshot.core.head import PrototypeHead, softmax
from distilshot.serve.extra_heads import FixedClassifierHead, GeneratorEnsemble, ensemble_logits

T = TypeVar("T")


@dataclass(frozen=True)
class ClassSnapshot:
    """The registered classes at one moment: names (sorted) and, per output, their prototypes [K, dim].
    `version` changes whenever the store does."""

    version: int
    labels: list[str]
    means: dict[str, np.ndarray]


@dataclass(frozen=True)
class Scores:
    probabilities: np.ndarray  # [N, K], rows sum to 1
    logits: np.ndarray  # [N, K]; "unknown" compares the best with `threshold`
    threshold: float | None  # None: never unknown


class Scorer(Protocol):
    def score(
        self, classes: ClassSnapshot, queries: Mapping[str, np.ndarray], threshold: float | None
    ) -> Scores:
        """Scores of `queries` (per output, [N, dim]) against `classes`; `threshold` is the caller's
        explicit one (None: the scorer's default)."""
        ...


class _PerVersion(Generic[T]):
    """One value derived from a class snapshot, kept until the snapshot's version changes."""

    def __init__(self, derive: Callable[[ClassSnapshot], T]) -> None:
        self._derive = derive
        self._kept: tuple[int, T] | None = None

    def get(self, classes: ClassSnapshot) -> T:
        kept = self._kept  # one read: concurrent calls may each derive, never see a torn pair
        if kept is None or kept[0] != classes.version:
            kept = (classes.version, self._derive(classes))
            self._kept = kept
        return kept[1]


class PrototypeScorer:
    def __init__(self, head: PrototypeHead, calibrated: float | None) -> None:
        self.head = head
        self.calibrated = calibrated  # the bundle's rejection threshold, if it has one
        self._prototypes = _PerVersion(lambda classes: head.prepare(classes.labels, classes.means))

    def score(
        self, classes: ClassSnapshot, queries: Mapping[str, np.ndarray], threshold: float | None
    ) -> Scores:
        logits = self.head.logits(queries, self._prototypes.get(classes))
        return Scores(softmax(logits), logits, self.calibrated if threshold is None else threshold)


class AugmentedScorer:
    """`shot_embeddings(label)` gives a class's support embeddings per output, [k, dim]."""

    def __init__(
        self,
        head: PrototypeHead,
        generators: GeneratorEnsemble,
        shot_embeddings: Callable[[str], Mapping[str, np.ndarray]],
    ) -> None:
        self.head = head
        self.generators = generators
        self._shot_embeddings = shot_embeddings
        # the generated noise is a function of each class, so the member means are one per version
        self._member_means = _PerVersion(self._derive_member_means)

    def _derive_member_means(self, classes: ClassSnapshot) -> list[dict[str, np.ndarray]]:
        shots = {label: self._shot_embeddings(label) for label in classes.labels}
        return self.generators.member_means(classes.labels, shots)

    def score(
        self, classes: ClassSnapshot, queries: Mapping[str, np.ndarray], threshold: float | None
    ) -> Scores:
        member_means = self._member_means.get(classes)
        probabilities, logits = ensemble_logits(self.head, classes.labels, member_means, queries)
        return Scores(probabilities, logits, threshold)


class FixedScorer:
    def __init__(self, fixed: FixedClassifierHead) -> None:
        self.fixed = fixed

    def applies_to(self, labels: list[str]) -> bool:
        """Whether the registered classes are exactly those the classifier was trained on."""
        return self.fixed.applies_to(labels)

    def score(
        self, classes: ClassSnapshot, queries: Mapping[str, np.ndarray], threshold: float | None
    ) -> Scores:
        logits = self.fixed.logits(queries, classes.labels)
        return Scores(softmax(logits), logits, threshold)
