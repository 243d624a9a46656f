"""The deployment format table (export/format_table.py): its backend names are serve's, `--to` parses
against it (unknown names answered with the closest), and the CLI help lists every format."""

from __future__ import annotations

import pytest

from distilshot.core.manifest import PRECISIONS
from distilshot.errors import ConfigError
from distilshot.export.format_table import FORMATS
from distilshot.export.formats import BUNDLE_FORMAT, formats_help, parse_formats
from distilshot.serve.engines.base import EXPORT_HINT
from distilshot.serve.engines.registry import AUTO_ORDER, BACKENDS


def test_the_table_names_serves_backends_and_known_precisions() -> None:
    assert list(FORMATS) == ["int8", "openvino", "ort", "tensorrt", "triton"]  # the running order
    for fmt in FORMATS.values():
        assert set(fmt.backends) <= set(BACKENDS), fmt.name
        assert fmt.precisions and set(fmt.precisions) <= set(PRECISIONS), fmt.name
    assert set(AUTO_ORDER) == set(PRECISIONS)
    # serve's hint for a missing graph names the format that adds that precision
    assert all(precision in FORMATS[name].precisions for precision, name in EXPORT_HINT.items())
    assert all(sorted(order) == sorted(BACKENDS) for order in AUTO_ORDER.values())


def test_formats_parse_in_running_order_and_unknown_ones_get_the_closest_name() -> None:
    assert parse_formats(" Triton,onnx,int8 ") == [BUNDLE_FORMAT, "int8", "triton"]
    closest = r"unknown export formats \[.openvin.\] \(did you mean openvino\?\)"
    with pytest.raises(ConfigError, match=closest):
        parse_formats("int8,openvin")
    with pytest.raises(ConfigError, match="unknown export formats"):
        parse_formats(" , ")


def test_the_help_lists_every_format() -> None:
    text = formats_help()
    assert all(f"{name}:" in text for name in FORMATS) and BUNDLE_FORMAT in text
