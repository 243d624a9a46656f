"""The import rules of ARCHITECTURE.md, read from the source (every import statement, including those
inside functions): the core imports no stage, serve never imports torch or another stage, train never
imports serve or export, nothing imports demo."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"core": ROOT / "distilshot" / "core", "train": ROOT / "train", "export": ROOT / "export"}
FOLDERS |= {"serve": ROOT / "serve", "demo": ROOT / "demo"}
# What each part may not import: distilshot stages by name, and third-party packages.
FORBIDDEN = {
    "core": {"train", "export", "serve", "demo", "torch"},
    "train": {"export", "serve", "demo"},
    "export": {"demo"},
    "serve": {"train", "export", "demo", "torch"},
    "demo": {"train", "export", "torch"},
}


def imported(path: Path) -> set[str]:
    """The distilshot stages (`train`, `serve`, ...) and top-level packages a file imports."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        modules = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        for module in modules:
            parts = module.split(".")
            names.add(parts[1] if parts[0] == "distilshot" and len(parts) > 1 else parts[0])
    return names


@pytest.mark.parametrize("part", sorted(FOLDERS))
def test_import_rules(part: str) -> None:
    files = sorted(FOLDERS[part].rglob("*.py"))
    assert files, f"no Python files under {FOLDERS[part]}"
    broken = {
        str(f.relative_to(ROOT)): sorted(imported(f) & FORBIDDEN[part])
        for f in files
        if imported(f) & FORBIDDEN[part]
    }
    assert not broken, f"{part} imports what it may not: {broken}"


def test_the_reader_sees_lazy_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    import torch\n    from distilshot.demo.app import x\n")
    assert {"torch", "demo"} <= imported(module)
