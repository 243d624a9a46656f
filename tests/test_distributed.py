"""Training on several processes (train/distributed.py) with 2 CPU ranks over gloo, started as torchrun
starts them (the environment variables RANK, WORLD_SIZE, ... in spawned processes) or by `distilshot
train --nproc-per-node 2` itself: every recipe trains; 2 ranks at batch b end with the weights of one
process at batch 2b; a run stopped with Ctrl-C under torchrun and resumed ends with the weights of an
uninterrupted `train-export` (which exports once, from rank 0); a rank that dies stops the others with a
message. Also the samplers' shares, the run folder's lock and the clean-up of a failed start."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from method_runs import BACKGROUND, DISTILSHOT, omniglot_folder
from torch import nn

from distilshot.errors import ConfigError
from distilshot.train import distributed
from distilshot.train.checkpoint import read_checkpoint
from distilshot.train.data.registry import load_split
from distilshot.train.methods import RECIPES
from distilshot.train.pipeline import model_spec
from distilshot.train.pipeline import train as run_training
from distilshot.train.presets import preset_config
from distilshot.train.recipes import TrainRequest
from distilshot.train.runlock import run_lock
from distilshot.train.samplers import ClassBalancedBatchSampler, EpisodeSampler, RandomBatchSampler
from distilshot.train.trainer import RunFolder, Trainer

LABELS = np.repeat(np.arange(12), 8)
# every stage in seconds on the tiny folder dataset: 6 training classes, so 2 ranks x 3 classes
TINY = {"epochs": 1, "steps_per_epoch": 2, "batch_size": 8, "n_way": 3, "k_shot": 2, "n_query": 2}
TINY |= {"image_size": 28}
TINY_VAL = {"val_episodes": 10, "device": "cpu"}


@pytest.fixture(scope="module")
def folder_dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"folder:{omniglot_folder(tmp_path_factory.mktemp('omniglot-folder'))}"


def test_two_ranks_at_batch_b_draw_one_process_batch_of_2b() -> None:
    one = RandomBatchSampler(96, 16, seed=2, batches=5)
    ranks = [RandomBatchSampler(96, 8, seed=2, batches=5, rank=r, world=2) for r in range(2)]
    for sampler in (one, *ranks):
        sampler.set_epoch(3)
    for whole, *parts in zip(one, *ranks, strict=True):
        assert np.array_equal(whole, np.concatenate(parts))
    one = ClassBalancedBatchSampler(LABELS, 6, 2, 4, seed=2)
    ranks = [ClassBalancedBatchSampler(LABELS, 3, 2, 4, seed=2, rank=r, world=2) for r in range(2)]
    for whole, *parts in zip(one, *ranks, strict=True):
        assert np.array_equal(whole, np.concatenate(parts))
        assert all(sorted(np.unique(LABELS[p], return_counts=True)[1]) == [2, 2, 2] for p in parts)


def test_episodes_differ_between_ranks_and_rank_0_draws_a_single_process_s() -> None:
    def draw(rank: int | None) -> list[list[int]]:
        sampler = EpisodeSampler(LABELS, 3, 2, 2, 6, seed=4, **({} if rank is None else {"rank": rank}))
        sampler.set_epoch(1)
        return [e.indices.tolist() for e in sampler]

    assert draw(0) == draw(None) and draw(1) == draw(1)
    assert draw(0) != draw(1) and len(draw(0)) == len(draw(1)) == 6


def test_a_running_run_is_locked_and_a_killed_ones_lock_is_not(tmp_path: Path) -> None:
    held = pytest.raises(ConfigError, match=f"being trained by process {os.getpid()}")
    with run_lock(tmp_path), held, run_lock(tmp_path):
        pass
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(ConfigError, match="being trained by"), run_lock(tmp_path):
        pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with run_lock(tmp_path):  # the lock file is still there; the dead process's lock is not
        assert (tmp_path / ".lock").is_file()


HOLD_LOCK = """
import sys, time
from pathlib import Path
from distilshot.train.runlock import run_lock
with run_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_a_failed_start_leaves_no_folder(tmp_path: Path, folder_dataset: str) -> None:
    request = TrainRequest("pretrain", dataset=folder_dataset, overrides={**TINY, "batch_size": 10_000})
    with pytest.raises(ValueError, match="larger than the"):
        run_training(request, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")  # a start killed before its first checkpoint
    run_training(TrainRequest("pretrain", dataset=folder_dataset, overrides=TINY), tmp_path / "run")
    assert (tmp_path / "run" / "checkpoints" / "best.pt").is_file()


# --- several processes ---


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_rank(rank: int, world: int, port: int, fn, args: tuple) -> None:
    """What torchrun gives each process: the environment of one rank."""
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        DISTILSHOT_DIST_TIMEOUT_S="60",
    )
    torch.set_num_threads(1)
    with distributed.process_group("cpu"):
        fn(*args)


def on_two_ranks(fn, *args) -> None:
    mp.spawn(_as_rank, args=(2, _free_port(), fn, args), nprocs=2, join=True)


def _train_every_recipe(root: Path, dataset: str) -> None:
    for method in sorted(RECIPES):
        overrides = {**TINY, "val_episodes": 10}
        run_training(TrainRequest(method, dataset, device="cpu", overrides=overrides), root / method)


def test_every_recipe_trains_on_two_ranks(tmp_path: Path, folder_dataset: str) -> None:
    on_two_ranks(_train_every_recipe, tmp_path, folder_dataset)
    for method in RECIPES:
        run = tmp_path / method
        payload = read_checkpoint(run / "checkpoints" / "best.pt")
        assert payload["world_size"] == 2, method
        stages = [p.parent.parent for p in run.rglob("last.pt")]
        for stage in stages:  # rank 0 alone wrote: one record per epoch
            assert len((stage / "metrics.jsonl").read_text().splitlines()) == 1, stage


def _frozen_batchnorm_trainer(run_dir: Path, dataset: str, batch_size: int) -> Trainer:
    """A short pretrain run whose BatchNorm stays in eval mode, an affine map: local BatchNorm normalises
    each rank's b images, not one process's 2b, and SyncBatchNorm runs on CUDA only. Without augmentation,
    whose random draws follow each rank's own stream."""
    overrides = {**TINY, **TINY_VAL, "epochs": 2, "steps_per_epoch": 3, "batch_size": batch_size}
    overrides["augment"] = "none"
    cfg = preset_config("pretrain", dataset, "quick", **overrides)
    train_set, val_set = (load_split(dataset, split, cfg.image_size) for split in ("train", "val"))
    spec = model_spec(cfg, train_set.num_classes)
    model = spec.build(cfg.seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.train = lambda mode=True, bn=module: nn.Module.train(bn, False)
    return Trainer(model, spec, cfg, train_set, val_set, RunFolder(run_dir))


def _fit_frozen_batchnorm(run_dir: Path, dataset: str, batch_size: int) -> None:
    _frozen_batchnorm_trainer(run_dir, dataset, batch_size).fit()


def test_two_ranks_at_batch_b_match_one_process_at_batch_2b(tmp_path: Path, folder_dataset: str) -> None:
    _fit_frozen_batchnorm(tmp_path / "one", folder_dataset, 16)
    on_two_ranks(_fit_frozen_batchnorm, tmp_path / "two", folder_dataset, 8)
    one = read_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")
    two = read_checkpoint(tmp_path / "two" / "checkpoints" / "last.pt")
    assert two["world_size"] == 2 and one["world_size"] == 1
    initial = _frozen_batchnorm_trainer(tmp_path / "x", folder_dataset, 16).model.state_dict()
    assert any(not torch.equal(value, initial[key]) for key, value in one["model"].items())
    for key, value in one["model"].items():
        torch.testing.assert_close(two["model"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    assert [h["train_loss"] for h in two["history"]] == pytest.approx(
        [h["train_loss"] for h in one["history"]], rel=1e-4
    )


def _die_in_second_epoch(run_dir: Path, dataset: str) -> None:
    trainer = _frozen_batchnorm_trainer(run_dir, dataset, 8)
    original = trainer._train_epoch

    def epoch(index: int, progress):
        if index == 1 and distributed.ranks().rank == 1:
            os._exit(3)
        return original(index, progress)

    trainer._train_epoch = epoch
    trainer.fit()


def _as_reporting_rank(rank: int, world: int, port: int, report: Path, fn, args: tuple) -> None:
    try:
        _as_rank(rank, world, port, fn, args)
    except distributed.RankFailure as error:
        report.write_text(str(error))
        raise


def test_a_rank_that_dies_stops_the_others_with_a_message(tmp_path: Path, folder_dataset: str) -> None:
    report = tmp_path / "rank0.txt"
    context = mp.get_context("spawn")
    port = _free_port()
    ranks = [
        context.Process(
            target=_as_reporting_rank,
            args=(r, 2, port, report, _die_in_second_epoch, (tmp_path / "run", folder_dataset)),
        )
        for r in range(2)
    ]
    for process in ranks:
        process.start()
    try:
        for process in ranks:
            process.join(timeout=240)
    finally:
        for process in ranks:
            process.kill()
    assert [p.exitcode for p in ranks] == [1, 3]
    assert "lost the other ranks" in report.read_text()


def _cli(command: str, *args: object) -> subprocess.Popen:
    return subprocess.Popen(
        [DISTILSHOT, command, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        start_new_session=True,  # its own process group, which Ctrl-C signals as a terminal's would
    )


@pytest.fixture(scope="module")
def twenty_class_dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    """protonet's quick episodes (20-way 5-shot 10-query) need 20 training classes, export's rejection
    threshold 20 test classes."""
    root = tmp_path_factory.mktemp("twenty-classes")
    for split, alphabet, characters in (("train", "Latin", range(1, 21)), ("val", "Latin", range(21, 26))):
        for i in characters:
            source = BACKGROUND / alphabet / f"character{i:02d}"
            shutil.copytree(source, root / split / source.name)
    for i in range(1, 21):
        shutil.copytree(BACKGROUND / "Greek" / f"character{i:02d}", root / "test" / f"greek{i}")
    return f"folder:{root}"


def test_ctrl_c_under_torchrun_then_resume_matches_an_uninterrupted_train_export(
    tmp_path: Path, twenty_class_dataset: str
) -> None:
    options = ["--method", "protonet", "--dataset", twenty_class_dataset, "--image-size", 28]
    options += ["--epochs", 2, "--steps-per-epoch", 12, "--device", "cpu", "--nproc-per-node", 2, "--json"]
    # the uninterrupted run is a train-export: it trains as `train` does, then rank 0 alone exports
    straight = _cli("train-export", *options, "--episodes", 20, "--run-dir", tmp_path / "straight")
    out, err = straight.communicate(timeout=600)
    assert straight.returncode == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 1, out  # --json: one summary alone on stdout, from rank 0
    assert Path(json.loads(lines[0])["bundle"]) == tmp_path / "straight" / "bundle"
    assert (tmp_path / "straight" / "bundle" / "manifest.json").is_file()

    stopped = _cli("train", *options, "--run-dir", tmp_path / "resumed")
    last = tmp_path / "resumed" / "checkpoints" / "last.pt"
    while not last.exists() and stopped.poll() is None:
        time.sleep(0.05)
    os.killpg(stopped.pid, signal.SIGINT)  # Ctrl-C: the launcher and torchrun
    _, err = stopped.communicate(timeout=120)
    assert stopped.returncode == 130, err
    assert f"continue with: distilshot train --resume {tmp_path / 'resumed'} --nproc-per-node 2" in err
    assert read_checkpoint(last)["epoch"] == 0

    resumed = _cli("train", "--resume", tmp_path / "resumed", "--nproc-per-node", 2)
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    a = read_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = read_checkpoint(last)
    assert b["epoch"] == 1 and a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
