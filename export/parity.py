"""Does the bundle reproduce the PyTorch model? Embeddings of real images through ONNX Runtime vs
PyTorch (max absolute difference), and the predictions of the same episodes made by PyTorch's prototype
head vs serve's numpy head on ONNX Runtime embeddings (they must be identical)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distilshot.serve.engines.registry import open_engine
from distilshot.serve.head import PrototypeHead
from distilshot.serve.manifest import load_manifest
from distilshot.train.augment import normalize, to_float
from distilshot.train.checkpoint import ModelSpec
from distilshot.train.data.imageset import ImageSet
from distilshot.train.methods import Method
from distilshot.train.methods.base import prototype_logits
from distilshot.train.samplers import EpisodeSampler


@dataclass(frozen=True)
class ParityReport:
    backend: str
    images: int
    max_abs_diff: dict[str, float]
    episodes: int
    queries: int
    agreement: float  # fraction of queries where both predict the same class

    @property
    def identical(self) -> bool:
        return self.agreement == 1.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "identical": self.identical}


@torch.no_grad()
def check_parity(
    model: Method,
    spec: ModelSpec,
    bundle_dir: Path,
    data: ImageSet,
    n_way: int = 5,
    k_shot: int = 1,
    n_query: int = 15,
    episodes: int = 50,
    seed: int = 0,
    backend: str = "onnxruntime",
) -> ParityReport:
    manifest = load_manifest(bundle_dir)
    engine = open_engine(bundle_dir, manifest, backend=backend)
    head = PrototypeHead(manifest.head)
    model = model.cpu().eval()
    sampler = EpisodeSampler(data.labels, n_way, k_shot, n_query, episodes, seed)
    used = np.unique(np.concatenate([e.indices for e in sampler]))
    x = normalize(to_float(data.images[used]), spec.mean, spec.std)
    theirs = engine.embed(x.numpy())
    ours = {k: v.numpy() for k, v in model.embed(x).items()}
    diffs = {k: float(np.abs(ours[k] - theirs[k]).max()) for k in ours}
    position = {int(index): row for row, index in enumerate(used)}
    agree = total = 0
    for episode in sampler:
        s = [position[int(i)] for i in episode.support.ravel()]
        q = [position[int(i)] for i in episode.query.ravel()]
        torch_pred = (
            prototype_logits(
                {k: torch.from_numpy(v[s]) for k, v in ours.items()},
                {k: torch.from_numpy(v[q]) for k, v in ours.items()},
                n_way,
                k_shot,
                model.head(),
            )
            .argmax(1)
            .numpy()
        )
        means = {k: v[s].reshape(n_way, k_shot, -1).mean(1) for k, v in theirs.items()}
        protos = head.prepare([str(c) for c in range(n_way)], means)
        serve_pred = head.logits({k: v[q] for k, v in theirs.items()}, protos).argmax(1)
        agree += int((torch_pred == serve_pred).sum())
        total += len(q)
    return ParityReport(engine.name, len(used), diffs, episodes, total, agree / total)
