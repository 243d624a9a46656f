"""Training on several processes. torchrun (or `distilshot train --nproc-per-node N`, which runs it) starts
one process per rank and describes the job in environment variables (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT); each process joins the process group (gloo on the CPU, nccl on CUDA, one GPU
per rank), trains a DistributedDataParallel copy of the model on its own share of every step (samplers:
train/samplers.py) and only rank 0 writes the run folder.

BatchNorm is local by default: each rank normalises with its own batch's statistics, and DDP copies rank
0's running statistics to the others before every forward pass, so the checkpoint holds rank 0's.
`sync_batchnorm` (TrainConfig) normalises over the batches of all ranks with torch's SyncBatchNorm,
which runs on CUDA only. Frozen teachers are outside the module tree (train/methods/base.py): every rank
holds its own copy, untouched by DDP.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from distilshot.errors import ConfigError, DistilshotError
from distilshot.train.methods.base import Batch, LossOutput, Method

# How long a rank waits in a collective for the others (a rank decoding a dataset the others have cached,
# rank 0 validating and saving) before it gives up; seconds, overridable for slow first runs
TIMEOUT_ENV = "DISTILSHOT_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 1800


class RankFailure(DistilshotError):
    """Another rank of the job failed, was stopped, or stopped answering."""


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this process writes: rank 0, or the only process."""
        return self.rank == 0


def ranks() -> Ranks:
    """This process's place in the job: one process of one unless a process group is initialised."""
    if not dist.is_initialized():
        return Ranks()
    return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def launched() -> bool:
    """Whether torchrun started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _uses_cuda(device: str) -> bool:
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


@contextmanager
def process_group(device: str) -> Iterator[Ranks]:
    """Joins the process group torchrun describes for the length of the block (nothing to join in a
    single process). A collective that fails because another rank died raises RankFailure."""
    if not launched() or dist.is_initialized():
        yield ranks()
        return
    timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
    if _uses_cuda(device):
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if _uses_cuda(device) else "gloo", timeout=timeout)
    on_term = signal.signal(signal.SIGTERM, _interrupt)  # torchrun stops its workers with SIGTERM
    try:
        yield ranks()
    except RuntimeError as error:
        if not _lost_peers(error):
            raise
        cause = str(error).splitlines()[0].split(". This is typically")[0]
        raise RankFailure(
            f"rank {dist.get_rank()} lost the other ranks ({cause}): another rank failed or was stopped "
            f"(see its messages), or none answered within {timeout.total_seconds():.0f} s (set "
            f"{TIMEOUT_ENV} to wait longer)"
        ) from None
    finally:
        signal.signal(signal.SIGTERM, on_term)
        dist.destroy_process_group()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _lost_peers(error: RuntimeError) -> bool:
    """Whether a collective failed for want of the other ranks: NCCL's errors are DistErrors, gloo's
    RuntimeErrors raised in its transport layer (a closed connection, a timeout)."""
    return isinstance(error, dist.DistError) or "gloo/transport" in str(error)


def rank_device(device: torch.device) -> torch.device:
    """The device of this rank: its own GPU (LOCAL_RANK) when training on CUDA under torchrun."""
    here = ranks()
    if here.world == 1 or device.type != "cuda":
        return device
    if device.index not in (None, here.local_rank):
        raise ConfigError(
            f"--device {device} puts every rank on one GPU; under torchrun use --device auto or cuda "
            "(each rank takes the GPU of its LOCAL_RANK)"
        )
    return torch.device("cuda", here.local_rank)


class _LossForward(nn.Module):
    """DDP synchronises gradients through forward(); methods train through loss()."""

    def __init__(self, method: Method) -> None:
        super().__init__()
        self.method = method

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        out = self.method.loss(batch)
        return out.loss, out.metrics


def loss_function(model: Method, sync_batchnorm: bool, device: torch.device) -> Callable[[Batch], LossOutput]:
    """What the trainer calls for a step's loss: the method's own loss in a single process; under torchrun
    a DDP copy's, whose backward averages the gradients of all ranks. Call after moving the model to its
    device and layout: DDP keeps the parameters' layout for its gradient buckets."""
    if ranks().world == 1:  # looked up at each call: tests/test_training_speed.py spies on model.loss
        return lambda batch: model.loss(batch)
    if sync_batchnorm:
        if device.type != "cuda":
            raise ConfigError(
                "sync_batchnorm needs CUDA (torch's SyncBatchNorm); on the CPU use local BatchNorm"
            )
        nn.SyncBatchNorm.convert_sync_batchnorm(model)  # swaps the BatchNorm modules inside `model`
    ddp = nn.parallel.DistributedDataParallel(_LossForward(model))

    def loss(batch: Batch) -> LossOutput:
        value, metrics = ddp(batch)
        return LossOutput(value, metrics)

    return loss


def sum_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """`values` summed over all ranks (every rank must pass the same keys); unchanged in one process."""
    if ranks().world == 1:
        return values
    keys = sorted(values)
    total = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        total = total.cuda()
    dist.all_reduce(total)
    return dict(zip(keys, total.tolist(), strict=True))


def barrier() -> None:
    """Waits for every rank (nothing to wait for in one process)."""
    if ranks().world > 1:
        dist.barrier()


def launch(nproc_per_node: int) -> int:
    """Runs this command line again under torchrun on this machine, `nproc_per_node` ranks, and returns its
    exit status. The ranks see WORLD_SIZE and so do not launch again."""
    script = shutil.which(sys.argv[0]) or sys.argv[0]
    if not os.path.isfile(script):
        raise ConfigError(f"--nproc-per-node relaunches the distilshot command, but {script} is not a file")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    process = subprocess.Popen([*command, f"--nproc-per-node={nproc_per_node}", script, *sys.argv[1:]])
    try:
        return process.wait()
    except KeyboardInterrupt:  # Ctrl-C reached torchrun too, which stops the ranks; rank 0 says how to resume
        process.wait()
        return 130
