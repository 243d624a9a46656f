"""`make bench`: runs every benchmark section and writes bench/results.md and bench/results.json.

A section is a module `bench/bench_<name>.py` exposing `run(quick: bool) -> dict` that returns
{"title": str, "markdown": str (a table, plus any notes), "data": {...} (JSON-serialisable)}.
Sections run one after another in one process, in the order of ORDER and then alphabetically for any
other bench_*.py found, so ratios inside a section are measured side by side on the same machine state.

    python bench/run.py                 # all sections, full size
    python bench/run.py --quick         # all sections, short runs (to check the code, not for numbers)
    python bench/run.py --only engines,head   # re-measures these, keeps the other sections' results
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # sections import their shared helpers (timing.py) by name
from cpu import cpu_isa, peak_rule  # noqa: E402  (after the path that finds it)

# Sections in this order first; any other bench_*.py runs after them, alphabetically.
ORDER = ("engines", "head", "training", "http")


def section_names() -> list[str]:
    found = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    return [n for n in ORDER if n in found] + [n for n in found if n not in ORDER]


def load_section(name: str) -> ModuleType:
    path = HERE / f"bench_{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def isa_text(isa: dict[str, Any]) -> str:
    """The vector extensions the numbers depend on, e.g. "AVX-512 + VNNI + BF16"."""
    widest = "AVX-512" if isa["avx512"] else "AVX2" if isa["avx2"] else "SSE only"
    extras = [name for key, name in (("vnni", "VNNI"), ("avx512_bf16", "BF16"), ("amx", "AMX")) if isa[key]]
    return " + ".join([widest, *extras]) + ("" if isa["vnni"] else " (no VNNI)")


def machine() -> dict[str, Any]:
    """What the absolute numbers were measured on."""
    versions = {}
    for package in ("numpy", "torch", "onnxruntime", "openvino"):
        try:
            versions[package] = importlib.import_module(package).__version__
        except Exception:  # not installed, or broken: the report says so instead of failing
            versions[package] = None
    isa = cpu_isa()
    return {
        "cpu": isa["model"],
        "isa": isa,
        "isa_text": isa_text(isa),
        "fp32_peak": peak_rule(isa),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "os": platform.platform(),
        "versions": versions,
    }


def check_section(name: str, result: Any) -> dict[str, Any]:
    if not isinstance(result, dict) or not {"title", "markdown", "data"} <= set(result):
        raise TypeError(f"bench_{name}.run() must return a dict with title, markdown and data")
    json.dumps(result["data"])  # fail here, not after every section has run
    return result


def measured_line(meta: dict[str, Any]) -> str:
    """Where, when and how one section was measured."""
    m = meta["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    # results written before the ISA was recorded (an AVX2-only machine) say so instead
    isa = f"{m['isa_text']}; fp32 peak assumed: {m['fp32_peak']}" if "isa_text" in m else "ISA not recorded"
    return (
        f"Measured {meta['date']} on {m['cpu']} ({isa}), "
        f"{m['cores_usable']} cores usable ({m['os']}; Python {m['python']}; {versions}). "
        f"Command: `{meta['command']}`"
        + (" (quick: short runs, numbers not representative)" if meta["quick"] else "")
        + "."
    )


def render(sections: dict[str, dict[str, Any]]) -> str:
    lines = [
        "# distilshot benchmarks",
        "",
        "Ratios inside a section are measured side by side in one run and are the headline; absolute times "
        "belong to the machine each section names (`--only` re-measures some sections and keeps the others).",
        "",
    ]
    for name, section in sections.items():
        took = f"{measured_line(section['measured'])} {section['seconds']:.0f} s."
        lines += [f"## {section['title']}", "", took, ""]
        lines += [section["markdown"].rstrip(), ""]
        if "error" in section:
            lines += [f"_section `{name}` failed: {section['error']}_", ""]
    return "\n".join(lines)


def previous_sections(path: Path) -> dict[str, dict[str, Any]]:
    """The sections of an earlier results.json, each with its own `measured` record (files written before
    sections carried one have a single one for the whole run)."""
    if not path.is_file():
        return {}
    old = json.loads(path.read_text())
    shared = {k: old[k] for k in ("date", "command", "quick", "machine") if k in old}
    return {name: {"measured": shared, **section} for name, section in old.get("sections", {}).items()}


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short runs, to check that the code works")
    parser.add_argument("--only", default="", help="comma-separated section names (default: all)")
    parser.add_argument("--out", type=Path, default=HERE, help="folder for results.md and results.json")
    args = parser.parse_args(argv)
    available = section_names()
    chosen = [n.strip() for n in args.only.split(",") if n.strip()] or available
    unknown = sorted(set(chosen) - set(available))
    if unknown:
        parser.error(f"no section {unknown}; found {available}")
    sections: dict[str, dict[str, Any]] = {}
    failed = []
    for name in chosen:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            sections[name] = check_section(name, load_section(name).run(quick=args.quick))
        except Exception as error:  # one broken section must not lose the others' results
            traceback.print_exc()
            failed.append(name)
            sections[name] = {"title": name, "markdown": "", "data": {}, "error": repr(error)}
        sections[name]["seconds"] = round(time.perf_counter() - t0, 1)
        print(f"[bench] {name} done in {sections[name]['seconds']} s", file=sys.stderr, flush=True)
    measured = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "command": "python bench/run.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "quick": args.quick,
        "machine": machine(),
    }
    for name in chosen:
        sections[name]["measured"] = measured
    kept = {**previous_sections(args.out / "results.json"), **sections} if args.only else sections
    ordered = {name: kept[name] for name in [*available, *kept] if name in kept}
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out / "results.json", json.dumps({"sections": ordered}, indent=2) + "\n")
    write_atomic(args.out / "results.md", render(ordered))
    print(f"[bench] wrote {args.out / 'results.md'} and results.json", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
