"""The closed vocabularies of training configs and bundle heads, as StrEnums: a member is its string
(it compares, hashes and serialises to JSON as that string), so configs and checkpoints written with
plain strings read back unchanged. `parse` is the one way a user's string becomes a member."""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from distilshot.core.choices import unknown_choice


class ConfigEnum(StrEnum):
    @classmethod
    def parse(cls, value: object, what: str) -> Self:
        """The member spelled `value`; a ConfigError naming `what` and the valid values otherwise."""
        try:
            return cls(value)
        except ValueError:
            raise unknown_choice(what, value, [m.value for m in cls]) from None


class Preset(ConfigEnum):
    QUICK = "quick"  # a few CPU minutes
    PAPER = "paper"  # the published schedule (for a GPU)


class Sampling(ConfigEnum):
    """How a method's training batches are drawn."""

    BATCHES = "batches"  # shuffled labelled batches
    EPISODES = "episodes"  # N-way K-shot Q-query episodes
    BALANCED = "balanced"  # n_way classes x k_shot images, labelled, no support/query split


class Metric(ConfigEnum):
    """How a head compares a query embedding with a class prototype."""

    EUCLIDEAN = "euclidean"  # negative squared Euclidean distance
    COSINE = "cosine"


class Optimizer(ConfigEnum):
    ADAM = "adam"
    SGD = "sgd"


class Schedule(ConfigEnum):
    """Learning-rate schedules, advanced once per step."""

    CONSTANT = "constant"
    STEP = "step"  # times gamma at every milestone epoch
    COSINE = "cosine"
    POLY = "poly"  # (1 - progress) ** 0.9


class Augment(ConfigEnum):
    NONE = "none"
    STANDARD = "standard"  # RFS-style crop with padding, colour jitter and horizontal flip
    AFFINE = "affine"  # small rotations, scalings, shears and shifts of drawn characters (train/distort.py)


class MemoryFormat(ConfigEnum):
    """Layout of weights and batches in training."""

    AUTO = "auto"  # channels_last on the CPU, contiguous elsewhere (train/trainer.py)
    CHANNELS_LAST = "channels_last"
    CONTIGUOUS = "contiguous"


class Variant(ConfigEnum):
    """Which reading of a method's loss trains, where a paper's text and its authors' code differ
    (README.md, "Methods")."""

    CODE = "code"  # the authors' code: what produced the published numbers
    PAPER_TEXT = "paper-text"  # the paper's literal reading
