"""Timing helpers shared by the benchmark sections (not a section itself: it is not named bench_*)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from cpu import cpu_isa, fp32_peak_gflops, peak_rule


def throughput(run: Callable[[], Any], items: int, seconds: float) -> float:
    """Items per second of `run` (which handles `items` per call), after one warm-up call, over at least
    `seconds` and at least three calls."""
    run()
    calls, start = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < seconds:
        run()
        calls += 1
    return items * calls / (time.perf_counter() - start)


def latencies(run: Callable[[], Any], calls: int) -> np.ndarray:
    """Seconds of each of `calls` calls, after three warm-up calls."""
    for _ in range(3):
        run()
    out = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter()
        run()
        out[i] = time.perf_counter() - start
    return out


SETTLE_SECONDS = 0.3


def settle() -> None:
    """Lets the worker threads of the engine measured before go idle: ONNX Runtime's and OpenMP's
    threads spin for a while after a call (OpenMP's block time is 200 ms) and would steal cores from the
    next engine measured."""
    time.sleep(SETTLE_SECONDS)


def interleaved(measure: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[Any]]:
    """`rounds` results of each candidate, taken round-robin so that a slow spell of a shared machine
    hits all of them alike, each after the previous candidate's threads settled."""
    values: dict[str, list[Any]] = {name: [] for name in measure}
    for _ in range(rounds):
        for name, run in measure.items():
            settle()
            values[name].append(run())
    return values


def median(values: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(v) for name, v in values.items()}


def sgemm_peak(size: int = 2048, repeats: int = 5) -> dict[str, Any]:
    """The CPU's fp32 peak, two ways: nominal, from its clock and vector ISA (bench/cpu.py), and measured,
    the best GFLOP/s of a float32 matrix product on all cores from numpy's BLAS or PyTorch's (MKL)."""
    import torch

    a = np.random.default_rng(0).random((size, size), dtype=np.float32)
    t = torch.from_numpy(a)
    best = {}
    for name, matmul in (("numpy", lambda: a @ a), ("torch", lambda: t @ t)):
        matmul()
        best[name] = max(2 * size**3 / _seconds(matmul) for _ in range(repeats)) / 1e9
    isa = cpu_isa()
    nominal = fp32_peak_gflops(isa) or None
    return {
        # what engines' fractions are of: the nominal peak where the clock is known, else the measured one
        "reference_gflops": nominal or max(best.values()),
        "gflops": max(best.values()),
        "by": max(best, key=best.get),
        "measured": best,
        "nominal_gflops": nominal,
        "nominal_rule": peak_rule(isa) if nominal else None,
    }


def _seconds(run: Callable[[], Any]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
