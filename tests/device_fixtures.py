"""What this machine can run, found without torch: CUDA devices through the driver API, and a fixture that
makes `auto` see a CPU-only install (the GPU backends report themselves not installed)."""

from __future__ import annotations

import functools
import subprocess
import sys

import pytest

GPU_BACKENDS = ("tensorrt", "cuda")  # the backends `auto` tries before the CPU ones


# Asked in a child process: initialising CUDA in the test process would make later forks unsafe for it.
_COUNT_DEVICES = """
import ctypes
try:
    cuda = ctypes.CDLL("libcuda.so.1")
except OSError:
    print(0)
else:
    count = ctypes.c_int(0)
    ok = cuda.cuInit(0) == 0 and cuda.cuDeviceGetCount(ctypes.byref(count)) == 0
    print(count.value if ok else 0)
"""


@functools.cache
def cuda_devices() -> int:
    """The number of CUDA devices the driver sees (0 without a driver or a device)."""
    result = subprocess.run(
        [sys.executable, "-c", _COUNT_DEVICES], capture_output=True, text=True, timeout=60
    )
    return int(result.stdout.strip() or 0) if result.returncode == 0 else 0


def no_cuda_reason() -> str | None:
    """Why a `gpu` test cannot run here, or None when it can."""
    if cuda_devices() == 0:
        return "needs a CUDA device: the CUDA driver (libcuda.so.1) is missing or sees no GPU"
    return None


@pytest.fixture
def cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """`auto` as on a CPU-only install: the GPU backends' packages look absent, whatever this machine has."""
    from distilshot.serve.engines import cuda_engine, tensorrt_engine

    for module in (tensorrt_engine, cuda_engine):
        monkeypatch.setattr(module, "is_available", lambda: False)
