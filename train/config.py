"""Training configuration: one flat, JSON-serialisable record, saved in the run folder and the checkpoint.
Its closed-vocabulary fields are parsed into enums on construction, so a mistyped optimiser or schedule
fails before any data loads."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from distilshot.core.enums import Augment, MemoryFormat, Optimizer, Preset, Schedule
from distilshot.errors import ConfigError

# What `distilshot train` trains without --method: the Makefile's METHOD (`make train-export`)
DEFAULT_METHOD = "bml"

# field -> the enum its string names
_ENUM_FIELDS = {
    "preset": Preset,
    "memory_format": MemoryFormat,
    "optimizer": Optimizer,
    "schedule": Schedule,
    "augment": Augment,
}


@dataclass
class TrainConfig:
    method: str = DEFAULT_METHOD
    dataset: str = "omniglot"
    backbone: str = "convnet4"
    preset: Preset = Preset.QUICK
    image_size: int | None = None  # None: the dataset's default
    seed: int = 0
    device: str = "auto"
    # layout of weights and batches: part of the config because it changes float rounding, so a resume
    # must match
    memory_format: MemoryFormat = MemoryFormat.AUTO
    # under torchrun: BatchNorm over the batches of all ranks (torch's SyncBatchNorm, CUDA only) instead of
    # each rank's own batch (train/distributed.py); no effect in a single process
    sync_batchnorm: bool = False
    # schedule
    epochs: int = 10
    steps_per_epoch: int = 100  # episodes or batches per epoch
    batch_size: int = 64  # for methods that sample labelled batches
    n_way: int = 20  # training episodes, for episodic methods
    k_shot: int = 5
    n_query: int = 5
    optimizer: Optimizer = Optimizer.ADAM
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    nesterov: bool = False
    schedule: Schedule = Schedule.STEP
    milestones: list[int] = field(default_factory=list)  # epochs at which a step schedule decays
    gamma: float | list[float] = 0.1  # decay factor at every milestone, or one factor per milestone
    # data
    augment: Augment = Augment.NONE
    rotated_classes: bool = False  # train on every class at 0/90/180/270 degrees as four classes
    train_split: str = "train"
    # validation (model selection)
    val_n_way: int = 5
    val_k_shot: int = 1
    val_episodes: int = 300
    method_params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, kind in _ENUM_FIELDS.items():
            setattr(self, name, kind.parse(getattr(self, name), name))

    def to_dict(self) -> dict[str, Any]:
        """Plain strings for the enum fields: checkpoints are read back with torch.load(weights_only=True),
        which unpickles no enum."""
        return {k: v.value if k in _ENUM_FIELDS else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown training options {sorted(unknown)}")
        return cls(**data)
