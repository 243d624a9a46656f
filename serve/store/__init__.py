"""The support store: registered classes, their support shots and embeddings."""

from distilshot.serve.store.portable import import_shots
from distilshot.serve.store.sqlite import (
    ClassInfo,
    DuplicateClassError,
    ModelMismatchError,
    Shot,
    ShotInfo,
    StoreBusyError,
    SupportStore,
    UnknownClassError,
)

__all__ = [
    "ClassInfo",
    "DuplicateClassError",
    "ModelMismatchError",
    "Shot",
    "ShotInfo",
    "StoreBusyError",
    "SupportStore",
    "UnknownClassError",
    "import_shots",
]
