"""The support store: registered classes, their support shots, embeddings and prototypes.

interface.py is what callers use (ClassStore); sqlite.py is its SQLite backend (SupportStore), built on
sqlite_schema.py (layout and file identity), sqlite_repository.py (the SQL of each change and read) and
sqlite_migration.py (re-embedding for another model); names.py and records.py hold the rules and types
every backend shares; portable.py reads exported store files, which may come from anyone, for an import.
"""

from distilshot.serve.store.interface import ClassStore, Reembedder
from distilshot.serve.store.portable import import_shots
from distilshot.serve.store.records import (
    ClassInfo,
    DuplicateClassError,
    ModelMismatchError,
    Shot,
    ShotInfo,
    StoreBusyError,
    UnknownClassError,
)
from distilshot.serve.store.sqlite import SupportStore

__all__ = [
    "ClassInfo",
    "ClassStore",
    "DuplicateClassError",
    "ModelMismatchError",
    "Reembedder",
    "Shot",
    "ShotInfo",
    "StoreBusyError",
    "SupportStore",
    "UnknownClassError",
    "import_shots",
]
