"""`distilshot generator`: meta-train feature generators on the base-class embeddings a bundle produces,
measure plain vs generator-augmented prototypes on the held-out classes, and add the generators to the
bundle as small ONNX graphs (checked against PyTorch)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from distilshot.core.manifest import Generators, Manifest, load_manifest
from distilshot.errors import DistilshotError
from distilshot.export.bundle_edit import BundleEdit
from distilshot.serve.engines.registry import open_engine
from distilshot.serve.extra_heads import GeneratorEnsemble
from distilshot.train.augment import normalize, to_float
from distilshot.train.data.registry import load_split
from distilshot.train.evaluation import EvalResult
from distilshot.train.generator import (
    FeatureGenerator,
    GeneratorConfig,
    GeneratorMember,
    evaluate_generators,
    train_generators,
)


def bundle_features(
    bundle: Path, manifest: Manifest, split: str, output: str
) -> tuple[torch.Tensor, np.ndarray]:
    """The bundle's fp32 embeddings (output `output`) of a split of its own dataset, through ONNX Runtime."""
    prep = manifest.preprocessing
    data = load_split(manifest.dataset, split, prep.height)
    engine = open_engine(bundle, manifest, "onnxruntime")
    parts = [
        engine.embed(normalize(to_float(data.images[i : i + 256]), prep.mean, prep.std).numpy())[output]
        for i in range(0, len(data.images), 256)
    ]
    return torch.from_numpy(np.concatenate(parts)), data.labels


def export_generator(generator: FeatureGenerator, path: Path) -> None:
    """G(x, z, q) -> "feature" as ONNX, one dynamic batch axis shared by the three inputs."""
    d, n = generator.dim, generator.noise_dim
    example = (torch.zeros(2, d), torch.zeros(2, n), torch.zeros(2, d))
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        program = torch.onnx.export(
            generator.eval(),
            example,
            input_names=["x", "z", "q"],
            output_names=["feature"],
            dynamic_shapes=({0: batch}, {0: batch}, {0: batch}),
            opset_version=18,
            dynamo=True,
            verbose=False,
        )
    program.save(str(path))
    onnx.checker.check_model(str(path), full_check=True)


def add_generators(
    bundle: Path, cfg: GeneratorConfig, episodes: int = 1000, tolerance: float = 1e-4
) -> tuple[Manifest, list[EvalResult]]:
    """Trains `cfg.members` generators on the bundle's base classes, evaluates them against plain
    prototypes on the same test episodes (5-way 1- and 5-shot) and adds them to the bundle."""
    manifest = load_manifest(bundle)
    if len(manifest.embedder.outputs) != 1:
        raise DistilshotError("feature generators work on one embedding; this bundle's embedder has several")
    output = manifest.embedder.outputs[0]
    features, labels = bundle_features(bundle, manifest, "train", output.name)
    members, _ = train_generators(features, labels, cfg)
    test, test_labels = bundle_features(bundle, manifest, "test", output.name)
    results = []
    for k_shot in (1, 5):
        results += evaluate_generators(
            members,
            test,
            test_labels,
            split=f"{manifest.dataset}/test",
            n_way=5,
            k_shot=k_shot,
            k_max=cfg.k_max,
            episodes=episodes,
        )
    spec = Generators(
        files=tuple(f"generators/{i}.onnx" for i in range(len(members))),
        output=output.name,
        dim=output.dim,
        noise_dim=members[0].generator.noise_dim,
        k_max=cfg.k_max,
        schedule=cfg.schedule,
    )
    with BundleEdit(bundle) as edit:
        (edit.staging / "generators").mkdir()
        for member, file in zip(members, spec.files, strict=True):
            export_generator(member.generator, edit.staging / file)
        check_parity(members, GeneratorEnsemble(edit.staging, spec), tolerance)
        # plain prototypes and augmented ones, measured on the same episodes
        metrics = {
            f"{r.key} {r.classifier} [{'baseline' if i % 2 == 0 else cfg.schedule}]": r.to_dict()
            for i, r in enumerate(results)
        }
        manifest = edit.commit(generators=spec, metrics=metrics)
    return manifest, results


@torch.no_grad()
def check_parity(members: list[GeneratorMember], staged: GeneratorEnsemble, tolerance: float) -> None:
    """ONNX Runtime's generated features must match PyTorch's for the same inputs."""
    rng = np.random.default_rng(0)
    d, n = members[0].generator.dim, members[0].generator.noise_dim
    x, z, q = (rng.standard_normal((7, k)).astype(np.float32) for k in (d, n, d))
    for member, session in zip(members, staged.sessions, strict=True):
        ours = member.generator(torch.from_numpy(x), torch.from_numpy(z), torch.from_numpy(q)).numpy()
        theirs = session.run(["feature"], {"x": x, "z": z, "q": q})[0]
        if not np.abs(ours - theirs).max() <= tolerance:
            raise DistilshotError(
                f"the exported generator differs from PyTorch by {np.abs(ours - theirs).max():.2e}"
            )
