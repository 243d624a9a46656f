"""ResNet-12 as in RFS (Tian et al. 2020) and the SKD/BML code: four residual stages 64-160-320-640, each
three conv3x3+BN (LeakyReLU 0.1 after the first two), a 1x1 conv+BN shortcut, add, LeakyReLU, MaxPool2d(2).
Dropout 0.1 after stages 1-2, DropBlock after stages 3-4; embedding = global average pool (640-d).

Each stage pools before its final LeakyReLU: the activation is increasing, so max-then-activate gives the
same values and gradients as activate-then-max on a quarter of the elements."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distilshot.train.backbones import register_backbone
from distilshot.train.backbones.base import Backbone


class DropBlock(nn.Module):
    """DropBlock (Ghiasi et al. 2018) with the RFS schedule: the keep probability falls linearly from 1.0
    to `1 - drop_rate` over `ramp_steps` training forwards. The step counter is a buffer so that a resumed
    run continues the ramp where it stopped."""

    def __init__(self, block_size: int, drop_rate: float = 0.1, ramp_steps: int = 40_000) -> None:
        super().__init__()
        self.block_size = block_size
        self.drop_rate = drop_rate
        self.ramp_steps = ramp_steps
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_rate <= 0:
            return x
        self.steps += 1
        keep = max(1.0 - self.drop_rate * self.steps.item() / self.ramp_steps, 1.0 - self.drop_rate)
        size = x.shape[-1]
        block = min(self.block_size, size)
        # seed rate such that the expected dropped fraction is 1 - keep (Ghiasi et al., Eq. 1)
        gamma = (1.0 - keep) / block**2 * size**2 / (size - block + 1) ** 2
        n, c, h, w = x.shape
        seeds = torch.bernoulli(torch.full((n, c, h - block + 1, w - block + 1), gamma, device=x.device))
        # each seed drops the block x block square whose top-left corner it marks
        dropped = F.max_pool2d(F.pad(seeds, (block - 1,) * 4), kernel_size=block, stride=1)
        mask = 1.0 - dropped
        return x * mask * (mask.numel() / mask.sum().clamp(min=1.0))


class ResidualStage(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, regulariser: nn.Module) -> None:
        super().__init__()
        # in-place activations: BN's backward needs its input, and max pooling's its indices, not outputs
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
        )
        self.act = nn.LeakyReLU(0.1, inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.regulariser = regulariser

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.regulariser(self.act(self.pool(self.body(x) + self.shortcut(x))))


@register_backbone("resnet12")
class ResNet12(Backbone):
    def __init__(
        self,
        in_channels: int,
        image_size: int,
        widths: tuple[int, int, int, int] = (64, 160, 320, 640),
        drop_rate: float = 0.1,
        dropblock_size: int | None = None,
    ) -> None:
        # block size 5 at 84 px and 2 at 32 px in RFS; scale in between
        block = dropblock_size or (5 if image_size >= 64 else 2)
        regularisers = [nn.Dropout(drop_rate), nn.Dropout(drop_rate)] + [
            DropBlock(block, drop_rate) for _ in range(2)
        ]
        stages = []
        channels = in_channels
        for width, regulariser in zip(widths, regularisers, strict=True):
            stages.append(ResidualStage(channels, width, regulariser))
            channels = width
        super().__init__(stages, pooling="avg", in_channels=in_channels, image_size=image_size)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="leaky_relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
