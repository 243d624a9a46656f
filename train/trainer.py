"""The training loop: seeded, device-agnostic, resumable with identical results, best-by-validation.

Every epoch re-seeds the global torch RNG, its augmentation generator and its sampler from
(seed, epoch), and the checkpoint holds model, optimiser and scheduler state, so stopping after any
epoch and resuming reproduces the uninterrupted run exactly. Under torchrun (train/distributed.py) every
rank trains and seeds its streams by its rank as well, rank 0's being those of a single process; only rank
0 validates and writes the run folder.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from distilshot.core.enums import MemoryFormat, Optimizer, Sampling, Schedule
from distilshot.errors import ConfigError
from distilshot.train.augment import Augmenter, normalize, to_float
from distilshot.train.checkpoint import ModelSpec, load_model, read_checkpoint, save_checkpoint
from distilshot.train.config import TrainConfig
from distilshot.train.data.imageset import ImageSet
from distilshot.train.distributed import Ranks, barrier, loss_function, rank_device, ranks, sum_over_ranks
from distilshot.train.evaluation import evaluate_episodes, extract_features
from distilshot.train.methods.base import Batch, Method
from distilshot.train.plots import plot_curves
from distilshot.train.samplers import (
    ClassBalancedBatchSampler,
    Episode,
    EpisodeSampler,
    RandomBatchSampler,
    rank_entropy,
)

log = logging.getLogger("distilshot.train")


def resolve_device(spec: str = "auto") -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def resolve_memory_format(spec: str, device: torch.device) -> torch.memory_format:
    """The layout of weights and batches. `auto` is channels_last on the CPU, where oneDNN's NHWC
    convolutions train ConvNet-4 and ResNet-12 faster than NCHW (bench/bench_training.py measures it), and
    contiguous elsewhere, where it has not been measured."""
    layout = MemoryFormat.parse(spec, "memory_format")
    if layout is MemoryFormat.AUTO:
        return torch.channels_last if device.type == "cpu" else torch.contiguous_format
    return torch.channels_last if layout is MemoryFormat.CHANNELS_LAST else torch.contiguous_format


def seed_everything(seed: int, epoch: int = 0, rank: int = 0) -> None:
    torch.manual_seed(np.random.SeedSequence(rank_entropy([seed, epoch], rank)).generate_state(1)[0].item())


def build_optimizer(model: Method, cfg: TrainConfig, steps_total: int) -> tuple[torch.optim.Optimizer, Any]:
    """cfg.optimizer and cfg.schedule are enum members: TrainConfig parsed them."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer is Optimizer.SGD:
        opt: torch.optim.Optimizer = torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov
        )
    else:  # Optimizer.ADAM
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    # schedules advance once per step so that short and long runs follow the same curve
    steps_per_epoch = max(1, steps_total // max(cfg.epochs, 1))
    if cfg.schedule is Schedule.CONSTANT:
        factor = lambda step: 1.0  # noqa: E731
    elif cfg.schedule is Schedule.STEP:
        milestones = [m * steps_per_epoch for m in cfg.milestones]
        gammas = cfg.gamma if isinstance(cfg.gamma, list) else [cfg.gamma] * len(milestones)
        if len(gammas) != len(milestones):
            raise ConfigError(
                f"gamma lists {len(gammas)} factors for {len(milestones)} milestones; give one per milestone"
            )
        factor = lambda step: math.prod(g for g, m in zip(gammas, milestones, strict=True) if step >= m)  # noqa: E731
    elif cfg.schedule is Schedule.COSINE:
        factor = lambda step: 0.5 * (1 + math.cos(math.pi * min(step, steps_total) / steps_total))  # noqa: E731
    else:  # Schedule.POLY
        factor = lambda step: (1 - min(step, steps_total) / steps_total) ** 0.9  # noqa: E731
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


Sampler = EpisodeSampler | ClassBalancedBatchSampler | RandomBatchSampler


def build_sampler(
    sampling: Sampling, cfg: TrainConfig, labels: np.ndarray, here: Ranks | None = None
) -> Sampler:
    """The sampler a method's `sampling` asks for, sized by the config, for rank `here.rank` of
    `here.world` (default: the only process): batch sizes and episodes are per rank (train/samplers.py)."""
    here = here or Ranks()
    sampling = Sampling.parse(sampling, "sampling")
    if sampling is Sampling.EPISODES:
        return EpisodeSampler(
            labels, cfg.n_way, cfg.k_shot, cfg.n_query, cfg.steps_per_epoch, cfg.seed, here.rank
        )
    if sampling is Sampling.BALANCED:  # n_way classes x k_shot images: every image has same-class peers
        batches = cfg.steps_per_epoch or len(labels) // (cfg.n_way * cfg.k_shot * here.world)
        return ClassBalancedBatchSampler(
            labels, cfg.n_way, cfg.k_shot, batches, cfg.seed, here.rank, here.world
        )
    return RandomBatchSampler(
        len(labels), cfg.batch_size, cfg.seed, cfg.steps_per_epoch or None, here.rank, here.world
    )


class BatchMaker:
    """Turns what a sampler yields (indices, or an episode, whose shape goes with it to the method) into
    a normalised, augmented batch on the device."""

    def __init__(
        self,
        data: ImageSet,
        spec: ModelSpec,
        augment: str,
        device: torch.device,
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> None:
        self.data, self.spec, self.device, self.memory_format = data, spec, device, memory_format
        self.augmenter = Augmenter(augment, spec.image_size)
        self.labels = torch.from_numpy(data.labels)

    def __call__(self, item: np.ndarray | Episode, generator: torch.Generator) -> Batch:
        shape = {}
        if isinstance(item, Episode):
            (n_way, k_shot), n_query = item.support.shape, item.query.shape[1]
            shape = {"n_way": n_way, "k_shot": k_shot, "n_query": n_query}
            item = item.indices
        x = self.augmenter(to_float(self.data.images[item]), generator)
        x = normalize(x.to(self.device, non_blocking=True), self.spec.mean, self.spec.std)
        x = x.contiguous(memory_format=self.memory_format)
        return Batch(x, self.labels[item].to(self.device), **shape)


@dataclass
class RunFolder:
    """Where a run writes: config.json, metrics.jsonl, train.log, curves.png, checkpoints/."""

    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    def create(self) -> None:
        (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)

    @property
    def last(self) -> Path:
        return self.path / "checkpoints" / "last.pt"

    @property
    def best(self) -> Path:
        return self.path / "checkpoints" / "best.pt"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    def attach_log(self) -> logging.Handler:
        handler = logging.FileHandler(self.path / "train.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logging.getLogger("distilshot").addHandler(handler)
        logging.getLogger("distilshot").setLevel(logging.INFO)
        return handler


class Trainer:
    def __init__(
        self,
        model: Method,
        spec: ModelSpec,
        cfg: TrainConfig,
        train_set: ImageSet,
        val_set: ImageSet,
        run: RunFolder,
        console: Console | None = None,
    ) -> None:
        """`console` shows the progress (on rank 0 only); by default stdout."""
        self.model, self.spec, self.cfg, self.run = model, spec, cfg, run
        self.ranks = ranks()
        self.device = rank_device(resolve_device(cfg.device))
        self.memory_format = resolve_memory_format(cfg.memory_format, self.device)
        self.model.to(self.device, memory_format=self.memory_format)
        self.train_set, self.val_set = train_set, val_set
        self.make_batch = BatchMaker(train_set, spec, cfg.augment, self.device, self.memory_format)
        self.sampler = build_sampler(model.sampling, cfg, train_set.labels, self.ranks)
        self.optimizer, self.scheduler = build_optimizer(model, cfg, len(self.sampler) * cfg.epochs)
        self.step_loss = loss_function(model, cfg.sync_batchnorm, self.device)
        self.console = console or Console()
        self.history: list[dict[str, Any]] = []
        self.best_val = -1.0
        self.start_epoch = 0

    def resume(self) -> bool:
        """Continues from checkpoints/last.pt if it exists; returns whether it did."""
        if not self.run.last.exists():
            return False
        payload = read_checkpoint(self.run.last)
        # checkpoints from before memory_format and sync_batchnorm existed were trained in the contiguous
        # layout, with local BatchNorm, by one process
        saved = {"memory_format": "contiguous", "sync_batchnorm": False, **payload["config"]}
        ours = self.cfg.to_dict()
        if saved != ours:
            changed = sorted(k for k in saved.keys() | ours.keys() if saved.get(k) != ours.get(k))
            raise ConfigError(
                f"{self.run.last} was written with a different configuration ({', '.join(changed)} "
                "differ); use a new run folder"
            )
        if payload.get("world_size", 1) != self.ranks.world:
            raise ConfigError(
                f"{self.run.last} was written by {payload.get('world_size', 1)} processes and this run has "
                f"{self.ranks.world}; resume with as many (torchrun --nnodes x --nproc-per-node), since "
                "each one's batches depend on their number"
            )
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.history = payload["history"]
        self.best_val = payload["best_val"]
        self.start_epoch = payload["epoch"] + 1
        log.info("resumed from %s at epoch %d", self.run.last, self.start_epoch)
        return True

    def _autocast(self) -> Any:
        # bf16 autocast on CUDA; full precision on CPU: exact (on a CPU with AVX512-BF16, bf16 autocast
        # trained ResNet-12 ~1.8x faster in a probe, but it would change every CPU result)
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")

    def _train_epoch(self, epoch: int, progress: Progress) -> dict[str, float]:
        self.model.train()
        self.model.set_progress(epoch, self.cfg.epochs)
        rank = self.ranks.rank
        seed_everything(self.cfg.seed, epoch, rank)
        generator = torch.Generator().manual_seed(
            int(np.random.SeedSequence(rank_entropy([self.cfg.seed, epoch, 1], rank)).generate_state(1)[0])
        )
        self.sampler.set_epoch(epoch)
        task = progress.add_task(
            f"epoch {epoch + 1}/{self.cfg.epochs}", total=len(self.sampler), loss=float("nan"), rate=0.0
        )
        totals: dict[str, float] = {}
        images = 0
        start = time.perf_counter()
        for step, item in enumerate(self.sampler, start=1):
            batch = self.make_batch(item, generator)
            with self._autocast():
                out = self.step_loss(batch)
            if not torch.isfinite(out.loss):
                raise FloatingPointError(
                    f"training loss became {out.loss.item()} at epoch {epoch + 1}, step {step}"
                )
            self.optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            images += len(batch.images)
            for key, value in {"loss": out.loss.item(), **out.metrics}.items():
                totals[key] = totals.get(key, 0.0) + value
            rate = images * self.ranks.world / (time.perf_counter() - start)
            progress.update(task, advance=1, loss=totals["loss"] / step, rate=rate)
        progress.remove_task(task)
        seconds = time.perf_counter() - start
        # the means of all ranks' steps, and the images all of them trained on
        totals = sum_over_ranks({**totals, "images": float(images)})
        images = int(totals.pop("images"))
        steps = len(self.sampler) * self.ranks.world
        return {
            "train_loss": totals["loss"] / steps,
            "train_acc": totals.get("acc", float("nan")) / steps,
            **{f"train_{k}": v / steps for k, v in totals.items() if k not in ("loss", "acc")},
            "seconds": seconds,
            "images_per_s": images / seconds,
        }

    def validate(self) -> Any:
        features = extract_features(
            self.model, self.val_set.images, self.spec.mean, self.spec.std, self.device
        )
        return evaluate_episodes(
            features,
            self.val_set.labels,
            split=self.val_set.name,
            n_way=self.cfg.val_n_way,
            k_shot=self.cfg.val_k_shot,
            n_query=15,
            episodes=self.cfg.val_episodes,
            head=self.model.head(),
            seed=self.cfg.seed,
        )

    def fit(self) -> Method:
        """Trains the remaining epochs and returns the model with its best validation weights loaded (on
        every rank, once rank 0 has written them)."""
        main = self.ranks.main
        if main:
            self.run.create()
        handler = self.run.attach_log() if main else logging.NullHandler()
        try:
            processes = f", {self.ranks.world} processes" if self.ranks.world > 1 else ""
            log.info(
                "training %s/%s on %s (%s preset) on %s%s",
                self.cfg.method,
                self.cfg.backbone,
                self.cfg.dataset,
                self.cfg.preset,
                self.device,
                processes,
            )
            if main and self.start_epoch < self.cfg.epochs:
                self.console.print(
                    f"training {self.cfg.method}/{self.cfg.backbone} on {self.cfg.dataset}: epochs "
                    f"{self.start_epoch + 1}-{self.cfg.epochs} of {len(self.sampler)} steps on "
                    f"{self.device}{processes} -> {self.run.path}",
                    markup=False,
                    highlight=False,
                    soft_wrap=True,
                )
            columns = (
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}  {task.fields[rate]:.0f} img/s"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
            )
            with Progress(*columns, console=self.console, transient=True, disable=not main) as progress:
                for epoch in range(self.start_epoch, self.cfg.epochs):
                    record = {"epoch": epoch + 1, **self._train_epoch(epoch, progress)}
                    if not main:
                        continue
                    val = self.validate()
                    record.update(
                        val_acc=val.mean,
                        val_ci95=val.ci95,
                        val_protocol=val.protocol,
                        lr=self.optimizer.param_groups[0]["lr"],
                    )
                    self.history.append(record)
                    improved = val.mean > self.best_val
                    if improved:
                        self.best_val = val.mean
                    self._save(epoch, improved)
                    with open(self.run.metrics, "a") as f:
                        f.write(json.dumps(record) + "\n")
                    progress.console.print(
                        f"epoch {epoch + 1}/{self.cfg.epochs}  loss {record['train_loss']:.4f}  "
                        f"val {val.mean:.2f} ± {val.ci95:.2f}%{'  *best' if improved else ''}  "
                        f"{record['images_per_s']:.0f} img/s"
                    )
                    log.info("epoch %d %s", epoch + 1, json.dumps(record))
            if main and self.history:
                plot_curves(
                    self.history,
                    self.run.path / "curves.png",
                    f"{self.cfg.method} / {self.cfg.backbone} on {self.cfg.dataset}",
                )
        finally:
            logging.getLogger("distilshot").removeHandler(handler)
            handler.close()
        barrier()  # rank 0 has written best.pt
        best, _, _ = load_model(self.run.best)
        return best.to(self.device).eval()

    def _save(self, epoch: int, improved: bool) -> None:
        state = {
            "config": self.cfg.to_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": epoch,
            "history": self.history,
            "best_val": self.best_val,
            "world_size": self.ranks.world,
        }
        # checkpoints hold contiguous weights whatever layout training uses (copies are exact)
        self.model.to(memory_format=torch.contiguous_format)
        try:
            # best before last: last.pt records best_val, so it must never claim a best.pt not yet written
            # (an interruption between the two then repeats this epoch, with identical results)
            if improved:
                save_checkpoint(self.run.best, self.spec, self.model, **state)
            save_checkpoint(self.run.last, self.spec, self.model, **state)
        finally:
            self.model.to(memory_format=self.memory_format)
