"""ConvNet-4 (Vinyals et al. 2016; Snell et al. 2017): four blocks of conv3x3(64) + BN + ReLU + MaxPool2d(2).
The embedding is the flattened final map: 64-d at 28 px, 256-d at 32 px, 1600-d at 84 px.

Each block pools before its ReLU: ReLU is monotonic, so max-then-ReLU gives the same values and the same
gradients as ReLU-then-max, while the ReLU and its backward touch a quarter of the elements."""

from __future__ import annotations

from torch import nn

from distilshot.train.backbones import register_backbone
from distilshot.train.backbones.base import Backbone


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.MaxPool2d(2),
        nn.ReLU(inplace=True),
    )


@register_backbone("convnet4")
class ConvNet4(Backbone):
    def __init__(self, in_channels: int, image_size: int, width: int = 64) -> None:
        stages = [conv_block(in_channels if i == 0 else width, width) for i in range(4)]
        super().__init__(stages, pooling="flatten", in_channels=in_channels, image_size=image_size)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
