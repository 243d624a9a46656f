"""Named presets. `paper` is the published schedule (for a GPU); `quick` fits a few CPU minutes. Each
method declares its values beside its class (`@register_method` in train/methods/*.py); the trials behind
the quick values are in reproduce/PRESET-LOG.md. A config is resolved in layers, each overriding the one
before: the dataset's training defaults (train/data/registry.py), the method's preset, the method's preset
for that dataset family, then the caller's explicit overrides (`method_params` merged key by key).

SKD generation 1, BML and REFILLED's step 1 train with the losses of the authors' code in both presets
(`variant="code"`, the effective values that produced the published numbers; README.md, "Methods");
`--set variant=paper-text` gives the papers' literal reading."""

from __future__ import annotations

import copy
from typing import Any

from distilshot.core.choices import unknown_choice
from distilshot.core.enums import Augment, Preset
from distilshot.train.config import TrainConfig
from distilshot.train.data.registry import dataset_family, training_defaults
from distilshot.train.methods import PRESETS


def dataset_augmentation(dataset: str) -> Augment:
    """The training augmentation a dataset uses."""
    return training_defaults(dataset)["augment"]


def preset_config(method: str, dataset: str, preset: str, **overrides: Any) -> TrainConfig:
    """The config for a method on a dataset under a preset, then explicit overrides (None = keep)."""
    preset = Preset.parse(preset, "preset")
    if method not in PRESETS:
        raise unknown_choice("method", method, sorted(PRESETS))
    family = dataset_family(dataset)
    values: dict[str, Any] = {"method": method, "dataset": dataset, "preset": preset}
    values.update(training_defaults(dataset))
    for layer in (
        PRESETS[method].presets[preset],
        PRESETS[method].datasets.get((preset, family), {}),
        {k: v for k, v in overrides.items() if v is not None},
    ):
        params = {**values.get("method_params", {}), **layer.get("method_params", {})}
        values.update(layer)
        if params:
            values["method_params"] = params
    return TrainConfig.from_dict(copy.deepcopy(values))  # presets share lists and dicts: never alias them
