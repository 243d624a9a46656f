"""The support store: registered classes, their support shots, embeddings and prototypes.

interface.py is what callers use (ClassStore), and open_store (location.py) opens one by location.
sql_store.py holds the operations of both backends on repository.py's SQL, with names.py and records.py
(the rules and types every backend shares) and migration.py (re-embedding for another model). The
backends add their connections and layouts: sqlite.py (SupportStore, one file; sqlite_schema.py) and
postgres.py (PostgresStore, shared by serving replicas; postgres_schema.py, postgres_repository.py).
portable.py writes exported store files and reads them, since they may come from anyone, for an import.
"""

from distilshot.serve.store.interface import ClassStore, Reembedder
from distilshot.serve.store.location import is_postgres_location, open_store
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
    "is_postgres_location",
    "open_store",
]
