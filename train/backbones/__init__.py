"""Backbones by name."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from distilshot.errors import ConfigError
from distilshot.train.backbones.base import Backbone
from distilshot.train.backbones.convnet import ConvNet4
from distilshot.train.backbones.mobilenet import WIDTHS, MobileNet
from distilshot.train.backbones.resnet12 import ResNet12

BACKBONES: dict[str, Callable[[int, int], Backbone]] = {
    "convnet4": ConvNet4,
    "resnet12": ResNet12,
    **{f"mobilenet-{w}": partial(MobileNet, width=w) for w in WIDTHS},
}


def build_backbone(name: str, in_channels: int, image_size: int) -> Backbone:
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name](in_channels, image_size)
