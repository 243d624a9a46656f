"""`distilshot export --to FORMATS`: parsing the names against the format table (export/format_table.py)
and adding each format to a bundle in its own staged edit, in the table's order."""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Sequence
from pathlib import Path

from distilshot.errors import ConfigError

# Importing the implementations registers them, in running order: openvino converts the int8 graph too,
# tensorrt checks every ONNX graph, triton packs what exists, ort converts every ONNX graph.
from distilshot.export import int8, openvino_ir, ort_format, tensorrt_engine, triton_repo  # noqa: F401
from distilshot.export.bundle_edit import BundleEdit
from distilshot.export.format_table import FORMATS, ExportOptions, FormatJob, FormatReport
from distilshot.train.data.imageset import ImageSet

BUNDLE_FORMAT = "onnx"  # the bundle's own fp32 graph, written by `export CHECKPOINT`


def formats_help() -> str:
    """The `--to` help, from the table."""
    added = "; ".join(f.describe() for f in FORMATS.values())
    return f"formats, comma-separated: {BUNDLE_FORMAT} (the bundle itself); {added}"


def parse_formats(text: str) -> list[str]:
    """ "onnx,int8,..." -> the formats in running order; an unknown name is answered with the closest."""
    asked = [f.strip().lower() for f in text.split(",") if f.strip()]
    known = [BUNDLE_FORMAT, *FORMATS]
    unknown = sorted(set(asked) - set(known))
    if unknown or not asked:
        close = [m for u in unknown for m in difflib.get_close_matches(u, known, n=1)]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"unknown export formats {unknown or [text]}{hint}; choose from {', '.join(known)}")
    return [f for f in known if f in asked]


def add_formats(
    bundle: Path, formats: Sequence[str], options: ExportOptions | None = None
) -> list[FormatReport]:
    """Adds each format (other than onnx, which the bundle already has) to the bundle, in order; the
    evaluation split is loaded once, when the first check asks for it."""
    from distilshot.core.manifest import load_manifest
    from distilshot.train.data.registry import load_split

    @functools.cache
    def evaluation() -> ImageSet:
        manifest = load_manifest(bundle, verify=False)
        return load_split(manifest.dataset, "test", manifest.preprocessing.height)

    options = options or ExportOptions()
    return [add_format(Path(bundle), name, options, evaluation) for name in formats if name != BUNDLE_FORMAT]


def add_format(
    bundle: Path, name: str, options: ExportOptions, evaluation: Callable[[], ImageSet]
) -> FormatReport:
    """One format in one edit: build, check (which may refuse, leaving the bundle unchanged), commit."""
    fmt = FORMATS[name]
    with BundleEdit(bundle) as edit:
        before = set(edit.manifest.files)
        job = FormatJob(edit, options, evaluation)
        staged = fmt.build(job)
        checked = fmt.check(job, edit.preview(staged.graphs), staged)
        metrics = {c.key: c.to_dict() for c in checked.comparisons}
        new = edit.commit(staged.graphs, metrics, remove=staged.remove)
    return FormatReport(
        name,
        files=sorted(set(new.files) - before),
        checks=checked.offline + [c.to_dict() for c in checked.comparisons],
        notes=staged.notes + checked.notes,
    )
