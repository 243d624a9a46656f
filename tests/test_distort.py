"""train/distort.py: the identity parameters leave an image as it is, each image gets its own map, the
map is the one drawn (a shift moves the ink by that share of the side), and the paper stays white."""

from __future__ import annotations

import torch

from distilshot.train.augment import Augmenter
from distilshot.train.distort import affine_matrices, random_affine


def _ink_centre(x: torch.Tensor) -> torch.Tensor:
    """The centroid (row, column) of the ink (1 - x) of one [1, H, W] image."""
    ink = 1 - x[0]
    rows, cols = torch.meshgrid(torch.arange(ink.shape[0]), torch.arange(ink.shape[1]), indexing="ij")
    return torch.stack([(ink * rows).sum(), (ink * cols).sum()]) / ink.sum()


def test_zero_ranges_give_the_identity() -> None:
    theta = affine_matrices(3, torch.Generator().manual_seed(0), rotation=0, scale=(1, 1), shear=0, shift=0)
    assert torch.equal(theta, torch.tensor([[1.0, 0, 0], [0, 1, 0]]).expand(3, 2, 3))


def test_matrices_stay_in_their_ranges_and_differ_per_image() -> None:
    theta = affine_matrices(500, torch.Generator().manual_seed(1)).double()
    a = theta[:, :, :2]
    det = torch.linalg.det(a)  # rotation and shear keep the area; the scale squares into it
    assert det.min() >= 0.85**2 - 1e-6 and det.max() <= 1.15**2 + 1e-6
    assert theta[:, :, 2].abs().max() <= 0.2 + 1e-6 and theta[:, :, 2].abs().max() > 0.18
    assert len({tuple(t.flatten().tolist()) for t in theta}) == 500
    same = affine_matrices(500, torch.Generator().manual_seed(1))
    assert torch.equal(same, theta.float())


def test_a_shift_moves_the_ink_by_that_share_of_the_side() -> None:
    x = torch.ones(1, 1, 40, 40)
    x[0, 0, 16:24, 16:24] = 0.0  # a black square on white paper, centred at 19.5
    g = torch.Generator().manual_seed(0)
    theta = affine_matrices(1, g, rotation=0, scale=(1, 1), shear=0, shift=0)
    theta[0, :, 2] = torch.tensor([0.2, -0.1])  # sample 10% of the side to the right, 5% up
    grid = torch.nn.functional.affine_grid(theta, [1, 1, 40, 40], align_corners=False)
    moved = 1 - torch.nn.functional.grid_sample(1 - x, grid, align_corners=False)
    centre = _ink_centre(moved[0])
    # sampling from the right moves the content left: column 19.5 - 4, row 19.5 + 2
    assert torch.allclose(centre, torch.tensor([21.5, 15.5]), atol=1e-3)


def test_random_affine_keeps_the_paper_white_and_the_ink() -> None:
    x = torch.ones(64, 1, 28, 28)
    x[:, :, 10:18, 6:22] = 0.0
    out = random_affine(x, torch.Generator().manual_seed(3))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1 + 1e-6
    assert torch.allclose(out[:, :, 0, :], torch.ones(64, 1, 28), atol=1e-6)  # the corners come from paper
    ink = (1 - out).sum(dim=(1, 2, 3)) / (1 - x).sum(dim=(1, 2, 3))
    # the grid maps output to input pixels, so the drawing's area scales by 1 / s^2
    assert ink.min() > 1 / 1.15**2 - 0.05 and ink.max() < 1 / 0.85**2 + 0.05
    assert ink.min() < 0.85 and ink.max() > 1.25
    assert not torch.allclose(out[0], out[1])
    alone = random_affine(x[:1], torch.Generator().manual_seed(3))
    assert torch.equal(alone, out[:1])


def test_the_affine_augmentation_is_this_distortion() -> None:
    x = torch.ones(8, 1, 28, 28)
    x[:, :, 8:20, 12:16] = 0.0
    augmented = Augmenter("affine", 28)(x, torch.Generator().manual_seed(5))
    assert torch.equal(augmented, random_affine(x, torch.Generator().manual_seed(5)))
    assert not torch.equal(augmented, x)
