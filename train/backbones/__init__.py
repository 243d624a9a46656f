"""Backbones by name."""

from __future__ import annotations

from distilshot.errors import ConfigError
from distilshot.train.backbones.base import Backbone
from distilshot.train.backbones.convnet import ConvNet4
from distilshot.train.backbones.resnet12 import ResNet12

BACKBONES = {"convnet4": ConvNet4, "resnet12": ResNet12}


def build_backbone(name: str, in_channels: int, image_size: int) -> Backbone:
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name](in_channels=in_channels, image_size=image_size)
