"""MobileNet v1 (Howard et al. 2017): depthwise-separable convolutions, widths scaled by a multiplier
(1, 0.75, 0.5, 0.25), global average pooling to 1024 x multiplier. The small student REFILLED distils
into for edge devices. Below 64 px the stem keeps full resolution (the usual CIFAR adaptation), so a
32 px input still ends in a 2x2 map instead of 1x1."""

from __future__ import annotations

from torch import nn

from distilshot.train.backbones import register_backbone
from distilshot.train.backbones.base import Backbone

# (output channels, stride) of the depthwise-separable blocks, grouped into stages at each downsampling
_STAGES = (
    ((64, 1),),
    ((128, 2), (128, 1)),
    ((256, 2), (256, 1)),
    ((512, 2), (512, 1), (512, 1), (512, 1), (512, 1), (512, 1)),
    ((1024, 2), (1024, 1)),
)


def _conv_bn(
    in_channels: int, out_channels: int, kernel: int, stride: int, groups: int = 1
) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


def separable(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """Depthwise 3x3 then pointwise 1x1, each with BN and ReLU."""
    return nn.Sequential(
        *_conv_bn(in_channels, in_channels, 3, stride, groups=in_channels),
        *_conv_bn(in_channels, out_channels, 1, 1),
    )


# decorators apply bottom-up: the registry (and the CLI's help) lists the widest first
@register_backbone("mobilenet-0.25", width=0.25)
@register_backbone("mobilenet-0.5", width=0.5)
@register_backbone("mobilenet-0.75", width=0.75)
@register_backbone("mobilenet-1.0", width=1.0)
class MobileNet(Backbone):
    def __init__(self, in_channels: int, image_size: int, width: float = 1.0) -> None:
        def scaled(channels: int) -> int:
            return max(8, int(channels * width))

        stem_stride = 2 if image_size >= 64 else 1
        stages: list[nn.Module] = []
        channels = scaled(32)
        first: list[nn.Module] = _conv_bn(in_channels, channels, 3, stem_stride)
        for i, blocks in enumerate(_STAGES):
            layers = first if i == 0 else []
            for out, stride in blocks:
                layers.append(separable(channels, scaled(out), stride))
                channels = scaled(out)
            stages.append(nn.Sequential(*layers))
        super().__init__(stages, pooling="avg", in_channels=in_channels, image_size=image_size)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
