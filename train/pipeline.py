"""What `distilshot train` and `distilshot eval` do: build the model a config names, train it in a run
folder, and evaluate a trained model under the standard protocol of its dataset."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from distilshot.train.augment import Augmenter
from distilshot.train.checkpoint import ModelSpec
from distilshot.train.config import TrainConfig
from distilshot.train.data.registry import dataset_info, load_split
from distilshot.train.evaluation import EvalResult, augmented_views, evaluate_episodes, extract_features
from distilshot.train.methods import Method
from distilshot.train.plots import plot_confusion, plot_embedding
from distilshot.train.trainer import RunFolder, Trainer, resolve_device

# (n_way, k_shot) settings reported for each benchmark
STANDARD_SETTINGS: dict[str, tuple[tuple[int, int], ...]] = {
    "omniglot": ((5, 1), (5, 5), (20, 1)),
    "omniglot-vinyals": ((5, 1), (5, 5), (20, 1), (20, 5)),
}
DEFAULT_SETTINGS = ((5, 1), (5, 5))


def standard_settings(dataset: str) -> tuple[tuple[int, int], ...]:
    return STANDARD_SETTINGS.get(dataset, DEFAULT_SETTINGS)


@dataclass
class TrainOutcome:
    model: Method
    spec: ModelSpec
    run: RunFolder
    config: TrainConfig
    seconds: float


def default_run_dir(cfg: TrainConfig, root: Path = Path("runs")) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = cfg.dataset.replace("folder:", "folder-").replace("/", "_")
    return root / f"{stamp}-{cfg.method}-{name}-{cfg.backbone}-{cfg.preset}"


def model_spec(cfg: TrainConfig, num_classes: int) -> ModelSpec:
    info = dataset_info(cfg.dataset, cfg.image_size)
    return ModelSpec(
        method=cfg.method,
        backbone=cfg.backbone,
        num_classes=num_classes,
        channels=info.channels,
        image_size=info.image_size,
        mean=tuple(info.mean),
        std=tuple(info.std),
        dataset=cfg.dataset,
        method_params=dict(cfg.method_params),
    )


def train(cfg: TrainConfig, run_dir: Path, resume: bool = False) -> TrainOutcome:
    """Trains in `run_dir`; with `resume`, continues from its last checkpoint."""
    torch.set_num_threads(max(1, torch.get_num_threads()))
    train_set = load_split(cfg.dataset, cfg.train_split, cfg.image_size)
    if cfg.rotated_classes:
        train_set = train_set.with_rotated_classes()
    val_set = load_split(cfg.dataset, "val", cfg.image_size)
    spec = model_spec(cfg, train_set.num_classes)
    run = RunFolder(run_dir)
    (run.path / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    trainer = Trainer(spec.build(cfg.seed), spec, cfg, train_set, val_set, run)
    if resume:
        trainer.resume()
    start = time.perf_counter()
    model = trainer.fit()
    return TrainOutcome(model, spec, run, cfg, time.perf_counter() - start)


def evaluate(
    model: Method,
    spec: ModelSpec,
    split: str = "test",
    settings: tuple[tuple[int, int], ...] | None = None,
    classifiers: tuple[str, ...] = ("prototype",),
    episodes: int = 1000,
    n_query: int = 15,
    seed: int = 0,
    support_augment: int = 5,
    plots_dir: Path | None = None,
) -> list[EvalResult]:
    """The standard protocol on a held-out split. For logreg on datasets trained with augmentation,
    each support image is tiled `support_augment` times through that augmentation (RFS)."""
    device = resolve_device()
    model = model.to(device).eval()
    data = load_split(spec.dataset, split, spec.image_size)
    features = extract_features(model, data.images, spec.mean, spec.std, device)
    views = None
    augment = "standard" if dataset_info(spec.dataset, spec.image_size).channels == 3 else "none"
    if "logreg" in classifiers and support_augment > 0 and augment == "standard":
        views = augmented_views(
            model,
            data.images,
            spec.mean,
            spec.std,
            Augmenter(augment, spec.image_size),
            support_augment,
            seed,
            device,
        )
    results = []
    for classifier in classifiers:
        for n_way, k_shot in settings or standard_settings(spec.dataset):
            results.append(
                evaluate_episodes(
                    features,
                    data.labels,
                    split=data.name,
                    n_way=n_way,
                    k_shot=k_shot,
                    n_query=n_query,
                    episodes=episodes,
                    classifier=classifier,
                    head=model.head(),
                    support_views=views if classifier == "logreg" else None,
                    seed=seed,
                )
            )
    if plots_dir is not None:
        _plot_test_features(model, features, data.labels, plots_dir, spec)
    return results


def _plot_test_features(
    model: Method, features: dict[str, torch.Tensor], labels: np.ndarray, plots_dir: Path, spec: ModelSpec
) -> None:
    """An embedding map of ten test classes and the confusion matrix of ten test classes against
    prototypes built from five shots each."""
    from distilshot.train.methods.base import prototype_logits

    plots_dir.mkdir(parents=True, exist_ok=True)
    concatenated = torch.cat([features[k] for k in sorted(features)], 1).numpy()
    plot_embedding(
        concatenated,
        labels,
        plots_dir / "embedding.png",
        f"{spec.method}/{spec.backbone}: test classes (PCA)",
    )
    rng = np.random.default_rng(0)
    classes = rng.choice(labels.max() + 1, size=min(10, labels.max() + 1), replace=False)
    shots = 5
    support, query, truth = [], [], []
    for i, c in enumerate(classes):
        idx = rng.permutation(np.flatnonzero(labels == c))
        support.append(idx[:shots])
        query.append(idx[shots:])
        truth += [i] * len(idx[shots:])
    s, q = np.concatenate(support), np.concatenate(query)
    logits = prototype_logits(
        {k: v[s] for k, v in features.items()},
        {k: v[q] for k, v in features.items()},
        len(classes),
        shots,
        model.head(),
    )
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(matrix, (np.array(truth), logits.argmax(1).numpy()), 1)
    plot_confusion(
        matrix, plots_dir / "confusion.png", f"{len(classes)} test classes, {shots}-shot prototypes"
    )
