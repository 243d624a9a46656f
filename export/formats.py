"""`distilshot export --to FORMATS`: what each deployment format adds to a bundle, in dependency order,
and the report each one returns (files added, checks on real images, notes)."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distilshot.errors import DistilshotError

# format -> module with `add(bundle_dir, **options) -> FormatReport`; the order is the order they run in
# (openvino converts the int8 graph too, tensorrt checks every ONNX graph, triton packs what exists)
FORMATS: dict[str, str] = {
    "int8": "distilshot.export.int8",
    "openvino": "distilshot.export.openvino_ir",
    "tensorrt": "distilshot.export.tensorrt_engine",
    "triton": "distilshot.export.triton_repo",
}


@dataclass
class FormatReport:
    format: str
    files: list[str] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)  # Comparison.to_dict() and offline checks
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "files": self.files, "checks": self.checks, "notes": self.notes}


def parse_formats(text: str) -> list[str]:
    """ "onnx,int8,..." -> the known formats in running order; "onnx" is the bundle's own graph."""
    asked = [f.strip().lower() for f in text.split(",") if f.strip()]
    unknown = sorted(set(asked) - set(FORMATS) - {"onnx"})
    if unknown or not asked:
        raise DistilshotError(
            f"unknown export formats {unknown or [text]}; choose from onnx, {', '.join(FORMATS)}"
        )
    return [f for f in ("onnx", *FORMATS) if f in asked]


def add_formats(bundle: Path, formats: Sequence[str], **options: Any) -> list[FormatReport]:
    """Adds each format (other than onnx, which the bundle already has) to the bundle, in order."""
    reports = []
    for name in formats:
        if name == "onnx":
            continue
        module = importlib.import_module(FORMATS[name])
        reports.append(module.add(Path(bundle), **options))
    return reports
