"""Checkpoints: a plain dict of tensors and JSON-like values, written atomically and read only with
`torch.load(weights_only=True)`, so a file that is not ours can never run code on load."""

from __future__ import annotations

import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from distilshot.errors import CheckpointError
from distilshot.train.backbones import build_backbone
from distilshot.train.methods import build_method
from distilshot.train.methods.base import Method

FORMAT = "distilshot-checkpoint"
VERSION = 1


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a trained model and feed it: architecture plus input normalisation."""

    method: str
    backbone: str
    num_classes: int
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    dataset: str
    method_params: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        return cls(**{**data, "mean": tuple(data["mean"]), "std": tuple(data["std"])})

    def build(self, seed: int | None = None) -> Method:
        """A freshly initialised model; with `seed`, the initial weights are a function of it."""
        if seed is not None:
            torch.manual_seed(seed)
        backbone = build_backbone(self.backbone, self.channels, self.image_size)
        return build_method(self.method, backbone, self.num_classes, dict(self.method_params))


def save_checkpoint(path: Path, spec: ModelSpec, model: Method, **state: Any) -> Path:
    """Writes {format, version, spec, model, **state} to a temporary file and renames it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "spec": spec.to_dict(),
        "model": model.state_dict(),
        **state,
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_checkpoint(path: Path | str) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError) as error:
        raise CheckpointError(
            f"{path} is not a distilshot checkpoint or is corrupted (safe loading refused it: "
            f"{str(error).splitlines()[0]})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a distilshot checkpoint (no '{FORMAT}' marker)")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {payload.get('version')}; expected {VERSION}")
    return payload


def load_model(path: Path | str) -> tuple[Method, ModelSpec, dict[str, Any]]:
    """The model of a checkpoint in eval mode, its spec, and the whole payload."""
    payload = read_checkpoint(path)
    try:
        spec = ModelSpec.from_dict(payload["spec"])
        model = spec.build()
        model.load_state_dict(payload["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(
            f"checkpoint {path} does not match its own model description: {error}"
        ) from None
    return model.eval(), spec, payload
