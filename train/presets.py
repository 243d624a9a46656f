"""Named presets. `paper` is the published schedule (for a GPU); `quick` fits a few CPU minutes.
A preset is a set of overrides on TrainConfig, applied in order: dataset defaults, the method's
preset, the method's preset for that dataset family, then the caller's explicit overrides."""

from __future__ import annotations

from typing import Any

from distilshot.errors import ConfigError
from distilshot.train.config import TrainConfig

PRESETS = ("quick", "paper")

# Natural images get the RFS augmentation; characters are neither flipped nor cropped. Omniglot trains
# on every character at four rotations as four classes (Vinyals et al.; the Vinyals split has them built in).
_DATASET: dict[str, dict[str, Any]] = {
    "omniglot": {"augment": "none", "rotated_classes": True},
    "omniglot-vinyals": {"augment": "none"},
    "cifar-fs": {"augment": "standard"},
    "fc100": {"augment": "standard"},
    "mini-imagenet": {"augment": "standard"},
    "folder": {"augment": "standard"},
}

_SGD_RFS = {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4}

_METHOD: dict[tuple[str, str], dict[str, Any]] = {
    # Snell et al. 2017: Adam 1e-3 halved every 2000 episodes; 60-way training on Omniglot, 30-way else.
    ("protonet", "paper"): {
        "optimizer": "adam",
        "lr": 1e-3,
        "schedule": "step",
        "gamma": 0.5,
        "epochs": 20,
        "steps_per_epoch": 1000,
        "milestones": [2, 4, 6, 8, 10, 12, 14, 16, 18],
        "n_way": 30,
        "k_shot": 5,
        "n_query": 15,
    },
    # measured on Omniglot at equal budget: 60-way 1-shot beat 30-way 5-shot (88.4 vs 86.0% 20-way 1-shot)
    ("protonet", "quick"): {
        "optimizer": "adam",
        "lr": 1e-3,
        "schedule": "cosine",
        "epochs": 8,
        "steps_per_epoch": 100,
        "n_way": 60,
        "k_shot": 1,
        "n_query": 5,
    },
    # RFS (Tian et al. 2020): SGD 0.05, momentum 0.9, wd 5e-4, batch 64, 100 epochs, x0.1 at 60 and 80.
    ("pretrain", "paper"): {
        **_SGD_RFS,
        "lr": 0.05,
        "batch_size": 64,
        "schedule": "step",
        "epochs": 100,
        "steps_per_epoch": 0,
        "milestones": [60, 80],
    },
    ("pretrain", "quick"): {
        **_SGD_RFS,
        "lr": 0.05,
        "batch_size": 64,
        "schedule": "cosine",
        "epochs": 8,
        "steps_per_epoch": 150,
    },
    # BML (Zhou et al. 2021, section 4.2): SGD 0.1, momentum 0.9, wd 5e-4, 100 epochs, lr -> 6e-3 at 50 and
    # -> 1.2e-4 at 70; every step one uniformly drawn 15-way 5-shot 7-query episode, 500 per epoch (the
    # authors' sampler). Loss weights 4:2:1 and alpha1/alpha2 5.5/0.1 are the method's defaults.
    ("bml", "paper"): {
        **_SGD_RFS,
        "lr": 0.1,
        "schedule": "step",
        "milestones": [50, 70],
        "gamma": [0.06, 0.02],
        "epochs": 100,
        "steps_per_epoch": 500,
        "n_way": 15,
        "k_shot": 5,
        "n_query": 7,
    },
    # the paper's schedule shape over 10 x 100 episodes of 180 images: ~4 CPU minutes on CIFAR-FS at 32 px
    ("bml", "quick"): {
        **_SGD_RFS,
        "lr": 0.1,
        "schedule": "step",
        "milestones": [5, 7],
        "gamma": [0.06, 0.02],
        "epochs": 10,
        "steps_per_epoch": 100,
        "n_way": 15,
        "k_shot": 5,
        "n_query": 7,
    },
}

# Dataset-specific schedules, where the general one does not fit.
_METHOD_DATASET: dict[tuple[str, str, str], dict[str, Any]] = {
    ("protonet", "paper", "omniglot"): {"n_way": 60, "n_query": 5},
    ("protonet", "paper", "omniglot-vinyals"): {"n_way": 60, "n_query": 5},
    # 12 x 300 x 128 = 460k images: about 6.5 CPU minutes at 28 px; 3,260 rotated classes need the larger
    # batch and learning rate to get far in that budget.
    ("pretrain", "quick", "omniglot"): {"lr": 0.1, "batch_size": 128, "epochs": 12, "steps_per_epoch": 300},
}


def dataset_augmentation(dataset: str) -> str:
    """The training augmentation a dataset uses ("none" or "standard")."""
    family = "folder" if dataset.startswith("folder:") else dataset
    return _DATASET.get(family, {}).get("augment", "standard")


def preset_config(method: str, dataset: str, preset: str, **overrides: Any) -> TrainConfig:
    """The config for a method on a dataset under a preset, then explicit overrides (None = keep)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {PRESETS}")
    if (method, preset) not in _METHOD:
        methods = sorted({m for m, _ in _METHOD})
        raise ConfigError(f"unknown method {method!r}; choose one of {methods}")
    family = "folder" if dataset.startswith("folder:") else dataset
    values: dict[str, Any] = {"method": method, "dataset": dataset, "preset": preset}
    values.update(_DATASET.get(family, {}))
    values.update(_METHOD[(method, preset)])
    values.update(_METHOD_DATASET.get((method, preset, family), {}))
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(values)
