"""Training configuration: one flat, JSON-serialisable record, saved in the run folder and the checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from distilshot.errors import ConfigError


@dataclass
class TrainConfig:
    method: str = "protonet"
    dataset: str = "omniglot"
    backbone: str = "convnet4"
    preset: str = "quick"
    image_size: int | None = None  # None: the dataset's default
    seed: int = 0
    device: str = "auto"
    # layout of weights and batches: auto (channels_last on the CPU, where it is measured faster), or
    # channels_last | contiguous. Part of the config because it changes float rounding, so a resume must match
    memory_format: str = "auto"
    # schedule
    epochs: int = 10
    steps_per_epoch: int = 100  # episodes or batches per epoch
    batch_size: int = 64  # for methods that sample labelled batches
    n_way: int = 20  # training episodes, for episodic methods
    k_shot: int = 5
    n_query: int = 5
    optimizer: str = "adam"  # adam | sgd
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    nesterov: bool = False
    schedule: str = "step"  # constant | step | cosine | poly
    milestones: list[int] = field(default_factory=list)  # epochs at which a step schedule decays
    gamma: float | list[float] = 0.1  # decay factor at every milestone, or one factor per milestone
    # data
    augment: str = "none"  # none | standard
    rotated_classes: bool = False  # train on every class at 0/90/180/270 degrees as four classes
    train_split: str = "train"
    # validation (model selection)
    val_n_way: int = 5
    val_k_shot: int = 1
    val_episodes: int = 300
    method_params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown training options {sorted(unknown)}")
        return cls(**data)
