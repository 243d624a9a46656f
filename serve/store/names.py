"""Class names: which are usable, and their stored form (NFC), for every store backend and store files."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from typing import TypeVar

from distilshot.errors import StoreError

MAX_NAME_LENGTH = 100
T = TypeVar("T")

# Unicode categories refused in class names: control, format (invisible and bidirectional marks such as
# U+200B and U+202E), surrogate, private use, unassigned, and line and paragraph separators. With them,
# two classes could look the same, or a name could display reordered.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def canonical_name(name: str) -> str:
    """The stored form of a class name (Unicode NFC), so names that differ only in normalisation (an
    accent composed or combined) are one class. Lookups and removals apply it too."""
    return unicodedata.normalize("NFC", name)


def check_class_name(name: str) -> str:
    """Returns `name` in its stored form (NFC), or raises StoreError unless it is usable as a class
    name (and as a folder or file name later)."""
    if not isinstance(name, str):
        raise StoreError(f"a class name must be text, not {type(name).__name__}")
    if not name.strip():
        raise StoreError("a class name must not be empty")
    refused = next((ch for ch in name if unicodedata.category(ch) in _REFUSED_CATEGORIES), None)
    if refused is not None:
        raise StoreError(
            f"class name {name!r} must not contain control characters, line breaks or invisible or "
            f"direction-changing characters (U+{ord(refused):04X} at position {name.index(refused)})"
        )
    name = canonical_name(name)
    if len(name) > MAX_NAME_LENGTH:
        raise StoreError(
            f"class name {name[:20]!r}… is {len(name)} characters; the limit is {MAX_NAME_LENGTH}"
        )
    if "/" in name or "\\" in name:
        raise StoreError(f"class name {name!r} must not contain a path separator")
    if name != name.strip():
        raise StoreError(f"class name {name!r} must not start or end with whitespace")
    if name in (".", ".."):
        raise StoreError(f"class name {name!r} is not allowed")
    return name


def canonical_classes(classes: Mapping[str, T]) -> dict[str, T]:
    """`classes` keyed by checked, stored-form names; two names that are one once normalised are refused."""
    checked: dict[str, T] = {}
    given: dict[str, str] = {}
    for name, value in classes.items():
        stored = check_class_name(name)
        if stored in checked:
            raise StoreError(
                f"class names {given[stored]!r} and {name!r} are the same name once Unicode-normalised (NFC)"
            )
        checked[stored], given[stored] = value, name
    return checked
