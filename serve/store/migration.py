"""Re-embedding a whole store for another model, for every backend: every embedding, every prototype
and the fingerprint replaced in the caller's one transaction, so two embedding spaces are never mixed."""

from __future__ import annotations

from distilshot.serve.store import repository
from distilshot.serve.store.interface import REEMBED_CHUNK, Reembedder
from distilshot.serve.store.records import ModelMismatchError


def reembed_store(conn: repository.Connection, old: str, new: str, reembed: Reembedder, where: str) -> None:
    """Moves the store on `conn` from model `old` to model `new`, embedding its stored images with
    `reembed`. Run inside a write transaction (other writers wait, as they must: no change may land
    between the two models)."""
    stored = repository.read_fingerprint(conn)
    if stored == new:
        return  # another process re-embedded it while we waited for the lock
    if stored != old:
        raise ModelMismatchError(f"{where} changed model while it was being opened; retry")
    conn.execute("DELETE FROM embeddings")
    conn.execute("DELETE FROM prototypes")
    last = 0
    while True:
        rows = conn.execute(
            "SELECT id, source, thumbnail FROM shots WHERE id > ? ORDER BY id LIMIT ?",
            (last, REEMBED_CHUNK),
        ).fetchall()
        if not rows:
            break
        vectors = reembed([(source, bytes(image)) for _, source, image in rows])
        repository.insert_embeddings(conn, [int(row[0]) for row in rows], vectors)
        last = rows[-1][0]
    repository.update_prototypes(conn, repository.class_ids(conn))
    repository.write_fingerprint(conn, new)
