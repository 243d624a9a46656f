"""What every backbone offers: a list of stages (so methods such as BML can split the trunk) and an
embedding made from the last feature map by flattening or global average pooling."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from distilshot.errors import ConfigError


class Backbone(nn.Module):
    def __init__(self, stages: Sequence[nn.Module], pooling: str, in_channels: int, image_size: int) -> None:
        super().__init__()
        if pooling not in ("flatten", "avg"):
            raise ConfigError(f"pooling must be 'flatten' or 'avg', not {pooling!r}")
        self.stages = nn.ModuleList(stages)
        self.pooling = pooling
        self.in_channels = in_channels
        self.image_size = image_size
        # probe the output shape in eval mode: no BN statistics or DropBlock steps are touched
        self.eval()
        try:
            with torch.no_grad():
                shape = self.feature_map(torch.zeros(1, in_channels, image_size, image_size)).shape
        except RuntimeError:
            shape = torch.Size((0, 0, 0, 0))
        self.train()
        if min(shape[1:], default=0) < 1:
            raise ConfigError(f"image size {image_size} is too small for this backbone")
        self.map_shape: tuple[int, int, int] = (shape[1], shape[2], shape[3])
        self.embedding_dim = shape[1] * (shape[2] * shape[3] if pooling == "flatten" else 1)

    def feature_map(self, x: torch.Tensor, stages: slice = slice(None)) -> torch.Tensor:
        for stage in self.stages[stages]:
            x = stage(x)
        return x

    def pool(self, feature_map: torch.Tensor) -> torch.Tensor:
        if self.pooling == "flatten":
            return feature_map.flatten(1)
        return feature_map.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.feature_map(x))
