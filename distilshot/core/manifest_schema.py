"""The JSON Schema of manifest.json, generated from the dataclasses in manifest.py (their field types,
defaults and docstrings), so that an app in another language can validate a bundle without reading
Python. `python -m distilshot.core.manifest_schema` prints it; docs/manifest.schema.json is its output,
kept equal by tests/test_manifest_schema.py. `Manifest.validate` checks more than the schema can say
(cross references between fields, finiteness)."""

from __future__ import annotations

import dataclasses
import inspect
import json
import types
import typing
from typing import Any

from distilshot.core import manifest as m

# Fields whose strings come from a fixed set.
CHOICES: dict[tuple[type, str], tuple[str, ...]] = {
    (m.Preprocessing, "resize"): m.RESIZE_MODES,
    (m.Preprocessing, "resample"): m.RESAMPLE_FILTERS,
    (m.Graph, "precision"): m.PRECISIONS,
    (m.Graph, "format"): m.GRAPH_FORMATS,
    (m.Head, "metric"): m.METRICS,
}
# Fields with a default in the dataclass that a manifest file must still hold (Manifest.from_dict).
REQUIRED = {(m.Manifest, "files"), (m.Manifest, "schema_version")}
SCHEMA_ID = "https://distilshot.invalid/manifest.schema.json"


def _description(cls: type) -> str | None:
    doc = inspect.getdoc(cls)
    # dataclass() writes a signature as the docstring of a class that has none
    return None if doc is None or doc.startswith(f"{cls.__name__}(") else " ".join(doc.split())


def _type(hint: Any, defs: dict[str, Any]) -> dict[str, Any]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_type(a, defs) for a in args]}
    if hint is type(None):
        return {"type": "null"}
    if dataclasses.is_dataclass(hint):
        if hint.__name__ not in defs:
            defs[hint.__name__] = {}  # a placeholder first, against recursion
            defs[hint.__name__] = _object(hint, defs)
        return {"$ref": f"#/$defs/{hint.__name__}"}
    if origin is tuple:
        return {"type": "array", "items": _type(args[0], defs)}
    if origin is dict:
        return {"type": "object", "additionalProperties": _type(args[1], defs)}
    simple = {int: "integer", float: "number", str: "string", bool: "boolean"}
    if hint in simple:
        return {"type": simple[hint]}
    if hint is Any:
        return {}
    raise TypeError(f"no JSON Schema type for {hint!r}")


def _object(cls: type, defs: dict[str, Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    properties: dict[str, Any] = {}
    required = []
    for f in dataclasses.fields(cls):
        prop = _type(hints[f.name], defs)
        if (cls, f.name) in CHOICES:
            prop["enum"] = list(CHOICES[cls, f.name])
        if f.default is not dataclasses.MISSING:
            prop["default"] = f.default
        no_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if no_default or (cls, f.name) in REQUIRED:
            required.append(f.name)
        properties[f.name] = prop
    schema: dict[str, Any] = {"type": "object", "properties": properties, "required": required}
    if (description := _description(cls)) is not None:
        schema["description"] = description
    return schema


def manifest_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of manifest.json at this SCHEMA_VERSION."""
    defs: dict[str, Any] = {}
    root = _object(m.Manifest, defs)
    root["properties"]["schema_version"] = {"const": m.SCHEMA_VERSION}
    root["description"] = (
        "manifest.json of a distilshot bundle: the graphs (with the sha256 of every file in `files`), "
        "the preprocessing in front of them and the head that turns embeddings into class scores."
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": f"distilshot bundle manifest, schema_version {m.SCHEMA_VERSION}",
        **root,
        "$defs": dict(sorted(defs.items())),
    }


if __name__ == "__main__":
    print(json.dumps(manifest_schema(), indent=2))
