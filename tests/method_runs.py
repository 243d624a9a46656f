"""Helpers shared by the method and pipeline tests: the CLI in a subprocess, a tiny image folder of real
Omniglot characters (so that every stage, a ResNet-12 one included, trains and validates in seconds), a
few optimiser steps on one batch, and the export parity check."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from distilshot.train.backbones.base import Backbone

DISTILSHOT = str(Path(sys.executable).with_name("distilshot"))
BACKGROUND = Path(os.environ["DISTILSHOT_DATA"]) / "omniglot" / "images_background"


def cli(
    *args: object, ok: bool = True, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Runs `distilshot ARGS`; `ok=False` expects a user error: status 2, one line, no traceback."""
    result = subprocess.run(
        [DISTILSHOT, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if ok:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode == 2, (result.returncode, result.stderr)
        assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    return result


def omniglot_folder(root: Path) -> Path:
    """train/val/test subfolders of 6/5/5 Latin and Greek characters, 20 drawings each."""
    characters = [BACKGROUND / "Latin" / f"character{i:02d}" for i in range(1, 12)]
    characters += [BACKGROUND / "Greek" / f"character{i:02d}" for i in range(1, 6)]
    for split, chosen in (("train", characters[:6]), ("val", characters[6:11]), ("test", characters[11:])):
        for source in chosen:
            shutil.copytree(source, root / split / f"{source.parent.name}-{source.name}")
    return root


def pixel_backbone(channels: int, size: int, mix: list[list[float]] | None = None) -> Backbone:
    """Embedding = the flattened pixels, optionally mixed across channels by a fixed 1x1 convolution."""
    if mix is None:
        return Backbone([nn.Identity()], pooling="flatten", in_channels=channels, image_size=size)
    conv = nn.Conv2d(channels, channels, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(mix).view(channels, channels, 1, 1))
    return Backbone([conv], pooling="flatten", in_channels=channels, image_size=size)


def set_linear(layer: nn.Linear, weight) -> None:
    """Sets `layer` to the matrix `weight` and a zero bias, so that a loss can be worked out by hand."""
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(np.asarray(weight), dtype=torch.float32))
        layer.bias.zero_()


def train_steps(
    model, batch, steps: int, lr: float = 1e-3, *, metric: str | None = None, optimizer=None
) -> list[float]:
    """`steps` optimiser steps (Adam at `lr` unless an `optimizer` is given) of `model` on one batch; the
    loss before each, or the loss output's `metric`."""
    optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=lr)
    values = []
    for _ in range(steps):
        out = model.loss(batch)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        values.append(out.loss.item() if metric is None else out.metrics[metric])
    return values


def assert_loss_falls(model, batch, *, metric: str | None = None) -> None:
    """15 Adam steps on one batch bring the loss (or the loss output's `metric`) below 70% of its start."""
    values = train_steps(model, batch, 15, metric=metric)
    assert values[-1] < 0.7 * values[0], values


def assert_exports_faithfully(model, spec, tmp_path: Path, test_set, **episode: int):
    """Exports `model` (in eval mode) to a bundle whose head is the model's, and checks that ONNX Runtime
    plus serving's head predict as PyTorch on real test episodes wherever float32 rounding cannot flip
    the answer. Returns (manifest, report)."""
    from distilshot.export.bundle import write_bundle
    from distilshot.export.parity import check_parity

    bundle, manifest = write_bundle(model.eval(), spec, tmp_path / "bundle")
    assert manifest.head.metric == model.head().metric
    report = check_parity(model, spec, bundle, test_set, **{"episodes": 30, **episode})
    assert report.faithful, report
    return manifest, report
