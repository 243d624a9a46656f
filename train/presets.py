"""Named presets. `paper` is the published schedule (for a GPU); `quick` fits a few CPU minutes.
A preset is a set of overrides on TrainConfig, layered: preset -> dataset -> method."""

from __future__ import annotations

from typing import Any

from distilshot.errors import ConfigError
from distilshot.train.config import TrainConfig

PRESETS = ("quick", "paper")

# Natural-image datasets get the RFS augmentation; characters are not flipped or cropped.
_DATASET = {
    "omniglot": {"augment": "none", "rotated_classes": True},
    "omniglot-vinyals": {"augment": "none"},
    "cifar-fs": {"augment": "standard"},
    "fc100": {"augment": "standard"},
    "mini-imagenet": {"augment": "standard"},
}

_METHOD: dict[tuple[str, str], dict[str, Any]] = {
    # Snell et al. 2017: Adam 1e-3 halved every 2000 episodes; 60-way (Omniglot) / 30-way training.
    ("protonet", "paper"): {
        "optimizer": "adam",
        "lr": 1e-3,
        "schedule": "step",
        "gamma": 0.5,
        "epochs": 20,
        "steps_per_epoch": 1000,
        "milestones": [2, 4, 6, 8, 10, 12, 14, 16, 18],
        "n_way": 60,
        "k_shot": 5,
        "n_query": 5,
    },
    ("protonet", "quick"): {
        "optimizer": "adam",
        "lr": 1e-3,
        "schedule": "cosine",
        "epochs": 8,
        "steps_per_epoch": 100,
        "n_way": 30,
        "k_shot": 5,
        "n_query": 5,
    },
    # RFS (Tian et al. 2020): SGD 0.05, momentum 0.9, wd 5e-4, batch 64, 100 epochs, x0.1 at 60 and 80.
    ("pretrain", "paper"): {
        "optimizer": "sgd",
        "lr": 0.05,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "batch_size": 64,
        "schedule": "step",
        "epochs": 100,
        "steps_per_epoch": 0,
        "milestones": [60, 80],
    },
    ("pretrain", "quick"): {
        "optimizer": "sgd",
        "lr": 0.05,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "batch_size": 64,
        "schedule": "cosine",
        "epochs": 8,
        "steps_per_epoch": 150,
    },
}


def preset_config(method: str, dataset: str, preset: str, **overrides: Any) -> TrainConfig:
    """The config for a method on a dataset under a preset, then explicit overrides (None = keep)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {PRESETS}")
    values: dict[str, Any] = {"method": method, "dataset": dataset, "preset": preset}
    family = "folder" if dataset.startswith("folder:") else dataset
    values.update(_DATASET.get(family, {"augment": "standard"}))
    if (method, preset) not in _METHOD:
        raise ConfigError(f"method {method!r} has no {preset!r} preset")
    values.update(_METHOD[(method, preset)])
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(values)
