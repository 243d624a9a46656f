"""Which backend holds a store, from where it lives: a postgresql:// URL (PostgresStore, shared by serving
replicas; psycopg imported only then) or a file path (SupportStore, SQLite; None: in memory)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from distilshot.errors import StoreError
from distilshot.serve.store.interface import ClassStore, Reembedder
from distilshot.serve.store.sqlite import SupportStore

POSTGRES_SCHEMES = ("postgresql", "postgres")
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):/")  # a Path keeps one slash of the two


def is_postgres_location(location: str | Path | None) -> bool:
    """Whether `location` names a PostgreSQL store (a URL), not a file."""
    scheme = _URL.match(str(location)) if location is not None else None
    return scheme is not None and scheme[1].lower() in POSTGRES_SCHEMES


def open_store(
    location: str | Path | None,
    fingerprint: str | None = None,
    reembed: Reembedder | None = None,
    *,
    layout: Mapping[str, int] | None = None,
) -> ClassStore:
    """The store at `location` (postgresql://user@host:port/database, or a file path; None: in memory),
    opened as SupportStore and PostgresStore are with `fingerprint`, `reembed` and `layout`."""
    url = _URL.match(location) if isinstance(location, str) else None
    if is_postgres_location(location):
        if isinstance(location, Path):
            raise StoreError(
                f"pass the store location {location.parts[0]}//… as text, not as a Path (which drops a slash)"
            )
        return _postgres_store()(str(location), fingerprint, reembed, layout=layout)
    if url is not None and len(url[1]) > 1:  # "C:/..." is a Windows path, not a URL
        raise StoreError(
            f"store location scheme {url[1]!r} is unknown; a store is a file path or a "
            "postgresql://user@host:port/database URL"
        )
    return SupportStore(location, fingerprint, reembed, layout=layout)


def _postgres_store() -> type[ClassStore]:
    try:
        from distilshot.serve.store.postgres import PostgresStore
    except ImportError as error:
        if not (error.name or "psycopg").startswith("psycopg"):
            raise
        raise StoreError(
            "a postgresql:// store needs the PostgreSQL driver (psycopg 3 with its pool): "
            f"pip install 'distilshot[postgres]' ({error})"
        ) from None
    return PostgresStore
