"""Random affine distortion of drawn characters (Koch et al.'s Siamese-network augmentation for Omniglot:
small rotations, scalings, shears and shifts that keep a character's identity, unlike a flip or a
quarter turn). One matrix per image, drawn from an explicit generator so an epoch is reproducible."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def affine_matrices(
    n: int,
    generator: torch.Generator,
    rotation: float = 0.2,
    scale: tuple[float, float] = (0.85, 1.15),
    shear: float = 0.2,
    shift: float = 0.1,
) -> torch.Tensor:
    """[n, 2, 3] matrices for `F.affine_grid` (output to input pixels, so a drawing scales by 1 / s):
    rotation in +-`rotation` rad, isotropic scale s in `scale`, horizontal shear in +-`shear`, shift in
    +-`shift` of the image side, each uniform per image."""
    u = torch.rand(n, 5, generator=generator, dtype=torch.float64)
    angle = (2 * u[:, 0] - 1) * rotation
    s = scale[0] + (scale[1] - scale[0]) * u[:, 1]
    k = (2 * u[:, 2] - 1) * shear
    cos, sin = torch.cos(angle), torch.sin(angle)
    # rotation @ shear @ scale; affine_grid maps output to input coordinates in [-1, 1], so a shift of
    # `shift` of the side is 2 * shift there
    a = torch.stack([cos * s, (cos * k - sin) * s, sin * s, (sin * k + cos) * s], dim=1).view(n, 2, 2)
    t = (2 * u[:, 3:5] - 1) * (2 * shift)
    return torch.cat([a, t.unsqueeze(-1)], dim=2).float()


def random_affine(x: torch.Tensor, generator: torch.Generator, background: float = 1.0) -> torch.Tensor:
    """Distorts each image of [N, C, H, W] floats in [0, 1] by its own random affine map; what moves in
    from outside the image is `background` (1.0: the white paper of a drawing)."""
    theta = affine_matrices(x.shape[0], generator).to(x.device)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # sample the distance from the background, so that zero padding means background
    ink = F.grid_sample(background - x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return background - ink
