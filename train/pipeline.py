"""What `distilshot train` and `distilshot eval` do: build the model a config names, train it in a run
folder, and evaluate a trained model under the standard protocols of its dataset."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from distilshot.errors import ConfigError
from distilshot.train.augment import Augmenter
from distilshot.train.checkpoint import ModelSpec, load_model
from distilshot.train.config import TrainConfig
from distilshot.train.data.imageset import ImageSet
from distilshot.train.data.registry import dataset_info, load_split
from distilshot.train.distributed import barrier, ranks
from distilshot.train.evaluation import (
    PROTOCOLS,
    EvalResult,
    augmented_views,
    evaluate_episodes,
    extract_features,
)
from distilshot.train.methods import Method
from distilshot.train.plots import plot_confusion, plot_embedding
from distilshot.train.presets import dataset_augmentation
from distilshot.train.recipes import Stage, TrainRequest
from distilshot.train.runlock import run_lock
from distilshot.train.trainer import RunFolder, Trainer, resolve_device

# (n_way, k_shot) settings reported for each benchmark
STANDARD_SETTINGS: dict[str, tuple[tuple[int, int], ...]] = {
    "omniglot": ((5, 1), (5, 5), (20, 1)),
    "omniglot-vinyals": ((5, 1), (5, 5), (20, 1), (20, 5)),
}
DEFAULT_SETTINGS = ((5, 1), (5, 5))
# episode protocols (evaluation.PROTOCOLS) reported for each benchmark; Lake's within-alphabet one-shot
# protocol needs the alphabets and drawers that only the Lake split keeps
STANDARD_PROTOCOLS: dict[str, tuple[str, ...]] = {"omniglot": ("random", "within-alphabet")}


def standard_settings(dataset: str) -> tuple[tuple[int, int], ...]:
    return STANDARD_SETTINGS.get(dataset, DEFAULT_SETTINGS)


def standard_protocols(dataset: str) -> tuple[str, ...]:
    return STANDARD_PROTOCOLS.get(dataset, ("random",))


@dataclass
class StageOutcome:
    name: str
    method: str
    checkpoint: Path  # the stage's best checkpoint
    seconds: float  # training time spent in this call (0 when it was complete already)


@dataclass
class TrainOutcome:
    model: Method  # the final stage's best model
    spec: ModelSpec
    run: RunFolder  # the run folder; run.best is the final model
    request: TrainRequest
    stages: list[StageOutcome]

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.stages)


def default_run_dir(request: TrainRequest, root: Path = Path("runs")) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = request.dataset.replace("folder:", "folder-").replace("/", "_")
    return root / f"{stamp}-{request.method}-{name}-{request.backbone}-{request.preset}"


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


def has_checkpoints(run_dir: Path) -> bool:
    """Whether a run folder holds training to resume: a folder without (from a start that failed or was
    stopped before its first epoch ended) holds no run."""
    return any(Path(run_dir).rglob("last.pt"))


def train(
    request: TrainRequest, run_dir: Path, resume: bool = False, console: Console | None = None
) -> TrainOutcome:
    """Runs every stage of the request's method in `run_dir`; with `resume`, completed stages are kept
    and the interrupted one continues from its last checkpoint. Only one process trains a run folder at a
    time (train/runlock.py); a start that fails before the first checkpoint removes the folder it
    created. Under torchrun, every rank calls this and rank 0 writes the folder. `console` shows the
    progress (default stdout)."""
    run_dir = Path(run_dir)
    if has_checkpoints(run_dir) and not resume:
        raise ConfigError(
            f"{run_dir} already holds a run; continue it with --resume or use another --run-dir"
        )
    # Check every option before the run folder exists, so a bad request leaves nothing behind.
    configs = {stage.name: request.stage_config(stage) for stage in request.stages}
    dataset_info(request.dataset)
    main, created = ranks().main, not run_dir.exists()
    with contextlib.ExitStack() as held:
        if main:
            RunFolder(run_dir).create()
            held.enter_context(run_lock(run_dir))
            (run_dir / "config.json").write_text(json.dumps(request.to_dict(), indent=2) + "\n")
        barrier()  # the other ranks start once rank 0 holds the folder
        try:
            return _train_stages(request, configs, run_dir, resume, console)
        except BaseException:
            if main and created and not has_checkpoints(run_dir):
                shutil.rmtree(run_dir, ignore_errors=True)
            raise


def _train_stages(
    request: TrainRequest,
    configs: dict[str, TrainConfig],
    run_dir: Path,
    resume: bool,
    console: Console | None,
) -> TrainOutcome:
    run = RunFolder(run_dir)
    single = len(request.stages) == 1
    best = {name: Path(request.teacher) for name in request.skipped_stages() if request.teacher}
    outcomes = []
    for stage in request.stages:
        if stage.name in best:
            continue
        folder = run_dir if single else run_dir / stage.name
        start = time.perf_counter()
        model, spec = _train_stage(configs[stage.name], stage, folder, best, resume, console)
        best[stage.name] = RunFolder(folder).best
        outcomes.append(StageOutcome(stage.name, stage.method, best[stage.name], time.perf_counter() - start))
    if not single and ranks().main:
        shutil.copyfile(best[request.stages[-1].name], run.best)
    return TrainOutcome(model, spec, run, request, outcomes)


def start_from(model: Method, source: Method, name: str) -> None:
    """Copies `source`'s weights into `model` where names and shapes agree. The whole backbone must
    come across; heads the source lacks keep their fresh initialisation, heads it has extra are dropped."""
    target = model.state_dict()
    shared = {k: v for k, v in source.state_dict().items() if k in target and target[k].shape == v.shape}
    missing = [k for k in target if k.startswith("backbone.") and k not in shared]
    if missing:
        raise ConfigError(f"cannot start {model.name} from {name}: its backbone differs (e.g. {missing[0]})")
    model.load_state_dict(shared, strict=False)


def _train_stage(
    cfg: TrainConfig,
    stage: Stage,
    folder: Path,
    best: dict[str, Path],
    resume: bool,
    console: Console | None,
) -> tuple[Method, ModelSpec]:
    train_set = load_split(cfg.dataset, cfg.train_split, cfg.image_size)
    if cfg.rotated_classes:
        train_set = train_set.with_rotated_classes()
    val_set = load_split(cfg.dataset, "val", cfg.image_size)
    spec = model_spec(cfg, train_set.num_classes)
    model = spec.build(cfg.seed)
    if stage.init:
        start_from(model, load_model(best[stage.init])[0], str(best[stage.init]))
    if stage.teacher:
        model.set_teacher(load_model(best[stage.teacher])[0])
    elif model.needs_teacher:
        raise ConfigError(f"{stage.method} learns from a teacher, but stage {stage.name!r} names none")
    trainer = Trainer(model, spec, cfg, train_set, val_set, RunFolder(folder), console)
    if resume:
        trainer.resume()
    return trainer.fit(), spec


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
    outputs: tuple[str, ...] | None = None,
    plots_dir: Path | None = None,
    protocols: tuple[str, ...] | None = None,
    data: ImageSet | None = None,
) -> list[EvalResult]:
    """The standard settings and protocols of the dataset (or `settings`, `protocols`) on a held-out
    split: `data` when given (train-export loads the test split once for evaluation and export), else
    `split` of the model's dataset. For logreg on datasets trained with augmentation, each support image
    is tiled `support_augment` times through that augmentation (RFS). `outputs` restricts a multi-output model
    (e.g. BML's two views) to some of its embeddings."""
    protocols = protocols or standard_protocols(spec.dataset)
    unknown_protocols = set(protocols) - set(PROTOCOLS)
    if unknown_protocols:
        raise ConfigError(f"unknown protocols {sorted(unknown_protocols)}; use {', '.join(PROTOCOLS)}")
    device = resolve_device()
    model = model.to(device).eval()
    head = model.head()
    if outputs:
        unknown = set(outputs) - set(model.output_names)
        if unknown:
            raise ConfigError(
                f"{spec.method} has no outputs {sorted(unknown)}; it has {list(model.output_names)}"
            )
        head = dataclasses.replace(head, weights={k: w for k, w in head.weights.items() if k in outputs})
    if data is None:
        data = load_split(spec.dataset, split, spec.image_size)
    if "within-alphabet" in protocols and (data.class_groups is None or data.drawers is None):
        raise ConfigError(
            f"the within-alphabet protocol needs alphabets and drawers, which {data.name} does not record "
            "(only the omniglot dataset does)"
        )
    features = extract_features(model, data.images, spec.mean, spec.std, device)
    features = {k: v for k, v in features.items() if not outputs or k in outputs}
    views = None
    augment = dataset_augmentation(spec.dataset)
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
            outputs=outputs,
        )
    results = []
    for sampling in protocols:
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
                        head=head,
                        support_views=views if classifier == "logreg" else None,
                        seed=seed,
                        view=",".join(outputs) if outputs else "",
                        sampling=sampling,
                        class_groups=data.class_groups,
                        drawers=data.drawers,
                    )
                )
    if plots_dir is not None and not outputs:  # the run's plots show the served (unrestricted) head
        _plot_test_features(model, features, data, plots_dir, spec)
    return results


def _plot_test_features(
    model: Method, features: dict[str, torch.Tensor], data: ImageSet, plots_dir: Path, spec: ModelSpec
) -> None:
    """An embedding map of ten test classes and the confusion matrix of ten test classes against
    prototypes built from five shots each."""
    from distilshot.train.methods.base import prototype_logits

    plots_dir.mkdir(parents=True, exist_ok=True)
    labels = data.labels
    concatenated = torch.cat([features[k] for k in sorted(features)], 1).numpy()
    plot_embedding(
        concatenated,
        labels,
        plots_dir / "embedding.png",
        f"{spec.method}/{spec.backbone}: test classes (PCA)",
        class_names=data.class_names,
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
        matrix,
        plots_dir / "confusion.png",
        f"{len(classes)} test classes, {shots}-shot prototypes",
        class_names=[data.class_names[c] for c in classes],
    )
