"""What the CPU can do, for the benchmarks' "share of peak" columns: its vector ISA from /proc/cpuinfo and its
nominal fp32 peak (not a section itself: it is not named bench_*).

The peak is usable cores x clock x fp32 FLOPs per cycle and core, from the widest vector ISA: two FMA
units x 16 lanes x 2 FLOPs = 64 with AVX-512, 32 with AVX2 (8 lanes), 8 without (SSE: one 4-lane add and
one 4-lane multiply). A core that executes 512-bit instructions as two 256-bit halves (AMD Zen 4) reaches
half of its AVX-512 figure; a VM may report a base clock below the one it runs at.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

CPUINFO = Path("/proc/cpuinfo")


def cpu_isa(cpuinfo: Path = CPUINFO) -> dict[str, Any]:
    """Model name, usable cores, clock (GHz, 0.0 where unknown), the vector extensions that matter for
    inference and training kernels, and the fp32 FLOPs per cycle and core they allow."""
    flags: set[str] = set()
    model, mhz = "", 0.0
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "flags" and not flags:
                flags = set(value.split())
            elif key == "model name" and not model:
                model = value.strip()
            elif key == "cpu MHz" and not mhz:
                mhz = float(value)
    except OSError:  # not Linux: the ISA stays unknown and the peak falls back to SSE's rule
        pass
    avx512 = "avx512f" in flags
    avx2 = "avx2" in flags and "fma" in flags
    return {
        "model": model or platform.processor() or platform.machine(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
        "ghz": mhz / 1e3,
        "avx2": avx2,
        "avx512": avx512,
        "avx512_bf16": "avx512_bf16" in flags,
        "vnni": "avx512_vnni" in flags or "avx_vnni" in flags,
        "amx": "amx_tile" in flags,
        "fp32_flops_per_cycle": 64 if avx512 else 32 if avx2 else 8,
    }


def fp32_peak_gflops(isa: dict[str, Any] | None = None) -> float:
    """Nominal fp32 peak of the usable cores in GFLOP/s (0.0 where the clock is unknown)."""
    isa = isa or cpu_isa()
    return isa["cores"] * isa["ghz"] * isa["fp32_flops_per_cycle"]


def peak_rule(isa: dict[str, Any] | None = None) -> str:
    """How fp32_peak_gflops was reached, for a bench note."""
    isa = isa or cpu_isa()
    vectors = "AVX-512" if isa["avx512"] else "AVX2" if isa["avx2"] else "SSE"
    return (
        f"{isa['cores']} cores x {isa['ghz']:.2f} GHz x {isa['fp32_flops_per_cycle']} fp32 FLOP/cycle "
        f"({vectors}) = {fp32_peak_gflops(isa):.0f} GFLOP/s"
    )
