"""What this machine can run, found without torch: CUDA devices through the driver API, and a fixture that
makes `auto` see a CPU-only install (the GPU backends report themselves not installed)."""

from __future__ import annotations

import ctypes
import functools

import pytest

GPU_BACKENDS = ("tensorrt", "cuda")  # the backends `auto` tries before the CPU ones


@functools.cache
def cuda_devices() -> int:
    """The number of CUDA devices the driver sees (0 without a driver or a device)."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


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
