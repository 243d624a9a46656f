"""Methods by name. A method is one file of this package: its `Method` classes, each registered with
`@register_method` together with its presets, and its recipe, the sequence of stages that
`distilshot train --method NAME` runs (`register_recipe`). Every module of the package is imported at
the end of this one, so a new file is all a new method needs."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from distilshot.core.choices import unknown_choice
from distilshot.core.enums import Preset
from distilshot.errors import ConfigError
from distilshot.train.backbones import Backbone
from distilshot.train.config import TrainConfig
from distilshot.train.methods.base import Method


@dataclass(frozen=True)
class MethodPresets:
    """A method's overrides of TrainConfig under each preset, and under a preset on one dataset family
    (a benchmark name, or "folder"), applied on top (train/presets.py)."""

    presets: dict[Preset, dict[str, Any]]
    datasets: dict[tuple[Preset, str], dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Stage:
    name: str
    method: str
    teacher: str | None = None  # an earlier stage whose best model is this stage's frozen teacher
    init: str | None = None  # an earlier stage whose best weights this stage starts from


@dataclass(frozen=True)
class Recipe:
    """What `distilshot train --method NAME` runs: stages in order (train/recipes.py)."""

    stages: tuple[Stage, ...]
    help: str  # one line for the CLI's --method help


METHODS: dict[str, type[Method]] = {}
PRESETS: dict[str, MethodPresets] = {}
RECIPES: dict[str, Recipe] = {}

M = TypeVar("M", bound=type[Method])
_CONFIG_FIELDS = {f.name for f in fields(TrainConfig)}


def register_method(
    name: str,
    presets: dict[str, dict[str, Any]],
    datasets: dict[tuple[str, str], dict[str, Any]] | None = None,
) -> Callable[[M], M]:
    """Registers a Method class as `name` with its presets: {preset: TrainConfig overrides} for every
    preset, and {(preset, dataset family): overrides} where a dataset needs other values."""

    def register(cls: M) -> M:
        if name in METHODS:
            raise ConfigError(f"two methods are registered as {name!r}")
        parsed = {Preset.parse(p, f"{name} preset"): v for p, v in presets.items()}
        if set(parsed) != set(Preset):
            raise ConfigError(f"{name} gives presets {sorted(parsed)}; every one of {list(Preset)} is needed")
        by_dataset = {(Preset.parse(p, f"{name} preset"), d): v for (p, d), v in (datasets or {}).items()}
        for overrides in [*parsed.values(), *by_dataset.values()]:
            unknown = sorted(set(overrides) - _CONFIG_FIELDS)
            if unknown:
                raise ConfigError(f"{name}'s presets set unknown training options {unknown}")
        cls.name = name
        METHODS[name] = cls
        PRESETS[name] = MethodPresets(parsed, by_dataset)
        return cls

    return register


def register_recipe(name: str, help: str, *stages: Stage) -> None:
    """Registers what `distilshot train --method name` runs; `help` is its line in the CLI's help."""
    if name in RECIPES:
        raise ConfigError(f"two recipes are registered as {name!r}")
    RECIPES[name] = Recipe(stages, help)


def recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise unknown_choice("method", name, sorted(RECIPES))
    return RECIPES[name]


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise unknown_choice("method", name, sorted(METHODS))
    return METHODS[name]


def method_params(name: str) -> tuple[str, ...]:
    """The parameters a method accepts beyond its backbone and number of classes."""
    signature = inspect.signature(method_class(name).__init__)
    return tuple(p for p in signature.parameters if p not in ("self", "backbone", "num_classes"))


def build_method(name: str, backbone: Backbone, num_classes: int, params: dict[str, Any]) -> Method:
    unknown = sorted(set(params) - set(method_params(name)))
    if unknown:
        raise ConfigError(f"{name} has no parameters {unknown}; it accepts {list(method_params(name))}")
    return METHODS[name](backbone, num_classes, **params)


# every module registers its methods and recipe as it is imported (sorted: a fixed registration order)
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")
