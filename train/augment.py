"""Batch image transforms in torch: uint8 HWC arrays in, normalised NCHW floats out. Random choices come
from an explicit generator so that an epoch is reproducible from its seed alone."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from distilshot.core.enums import Augment
from distilshot.train.distort import random_affine


def to_float(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 [N, H, W, C] -> float32 [N, C, H, W] in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float().div_(255.0)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by `padding` and crop back to the original size at a random offset per image."""
    n, _, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    top = torch.randint(0, 2 * padding + 1, (n,), generator=generator).tolist()
    left = torch.randint(0, 2 * padding + 1, (n,), generator=generator).tolist()
    return torch.stack(
        [padded[i, :, t : t + h, s : s + w] for i, (t, s) in enumerate(zip(top, left, strict=True))]
    )


def random_hflip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = (torch.rand(x.shape[0], generator=generator) < 0.5).to(x.device)
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def color_jitter(x: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Brightness, contrast and saturation each scaled by a factor in [1 - s, 1 + s] per image."""
    n = x.shape[0]

    def factor() -> torch.Tensor:
        return _uniform(n, 1.0 - strength, 1.0 + strength, generator).to(x.device).view(-1, 1, 1, 1)

    x = x * factor()
    gray = x.mean(dim=1, keepdim=True) if x.shape[1] == 1 else _luma(x)
    x = (x - gray.mean(dim=(2, 3), keepdim=True)) * factor() + gray.mean(dim=(2, 3), keepdim=True)
    if x.shape[1] == 3:
        gray = _luma(x)
        x = (x - gray) * factor() + gray
    return x.clamp_(0.0, 1.0)


def _luma(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return 0.299 * r + 0.587 * g + 0.114 * b


def rotate(x: torch.Tensor, quarter_turns: int) -> torch.Tensor:
    """Counter-clockwise rotation by 90 degrees times `quarter_turns` (same direction as np.rot90)."""
    return torch.rot90(x, quarter_turns, dims=(2, 3))


def with_rotations(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch followed by its 90/180/270-degree rotations, and the rotation index (0-3) of each copy."""
    rotated = torch.cat([rotate(x, k) for k in range(4)])
    index = torch.arange(4, device=x.device).repeat_interleave(x.shape[0])
    return rotated, index


class Augmenter:
    """The training augmentation of a dataset: RFS-style crop with padding, colour jitter and flip for
    natural images; for characters, whose identity a flip or crop can change, nothing or a small random
    affine distortion."""

    def __init__(self, kind: str, image_size: int) -> None:
        self.kind = Augment.parse(kind, "augment")
        self.padding = max(1, image_size // 8)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.kind is Augment.NONE:
            return x
        if self.kind is Augment.AFFINE:
            return random_affine(x, generator)
        x = random_crop(x, self.padding, generator)
        x = color_jitter(x, 0.4, generator)
        return random_hflip(x, generator)
