"""Backbones by name. Each module of this package registers its classes with `@register_backbone`; every
module is imported at the end of this one, so a new file is all a new backbone needs."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from distilshot.core.choices import unknown_choice
from distilshot.errors import ConfigError
from distilshot.train.backbones.base import Backbone

BACKBONES: dict[str, Callable[[int, int], Backbone]] = {}

B = TypeVar("B", bound=type[Backbone])


def register_backbone(name: str, **options: Any) -> Callable[[B], B]:
    """Registers a Backbone class as `name`, built as cls(in_channels, image_size, **options)."""

    def register(cls: B) -> B:
        if name in BACKBONES:
            raise ConfigError(f"two backbones are registered as {name!r}")
        BACKBONES[name] = partial(cls, **options) if options else cls
        return cls

    return register


def check_backbone(name: str) -> None:
    """Raises ConfigError, naming the closest registered backbone, if none is registered as `name`."""
    if name not in BACKBONES:
        raise unknown_choice("backbone", name, BACKBONES)


def build_backbone(name: str, in_channels: int, image_size: int) -> Backbone:
    check_backbone(name)
    return BACKBONES[name](in_channels, image_size)


# every module registers its backbones as it is imported (sorted: a fixed registration order)
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")
