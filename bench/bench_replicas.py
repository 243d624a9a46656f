"""Serving replicas: classify requests/s and p50/p99 latency over HTTP for 1 and 2 `distilshot serve`
replicas on one store, a SQLite file and a PostgreSQL database, in the same run.

Each replica is `distilshot serve --no-demo` in its own process; the clients (threads of this process,
keep-alive connections, one 28 x 28 PNG per request, top-5) are spread evenly over the replicas, as a
round-robin load balancer would. The model is bench_http's ConvNet-4 with random weights and the store
holds 20 classes. The PostgreSQL database lives in a throw-away cluster on loopback (tests/
postgres_fixture.py's running_cluster, Debian's server binaries as `make install` installs them).
On a machine with few cores the replicas share them, so a second replica shows what the store costs
and what another process buys on this machine, not on one core per replica.
"""

from __future__ import annotations

import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
from bench_http import Server, load, make_bundle, query_png
from timing import table

TESTS = Path(__file__).resolve().parents[1] / "tests"
CLASSES = 20
BACKENDS = ("sqlite", "postgresql")


def fill_store(bundle: Path, location: str, classes: int) -> None:
    """`classes` classes of one shot each, with random embeddings, in one transaction."""
    from distilshot.core.manifest import load_manifest
    from distilshot.serve.store import Shot, open_store

    manifest = load_manifest(bundle)
    rng = np.random.default_rng(classes)
    layout = {o.name: o.dim for o in manifest.embedder.outputs}
    vectors = {n: rng.normal(size=(classes, d)).astype(np.float32) for n, d in layout.items()}
    thumbnail = query_png(0)
    shots = {
        f"class {i:03d}": [Shot("random.png", {n: v[i] for n, v in vectors.items()}, thumbnail)]
        for i in range(classes)
    }
    with open_store(location, manifest.fingerprint(), layout=layout) as store:
        store.register_many(shots)


def measure(bundle: Path, location: str, clients: int, requests: int) -> list[dict[str, Any]]:
    """1 replica, then 2 on the same store (the first stays up)."""
    with ExitStack() as stack:
        replicas: list[Server] = []
        results = []
        for _ in range(2):
            replica = Server(bundle, location)
            stack.callback(replica.stop)
            replicas.append(replica)
            results.append({"replicas": len(replicas), **load([r.url for r in replicas], clients, requests)})
        return results


def run(quick: bool) -> dict[str, Any]:
    sys.path.insert(0, str(TESTS))
    from postgres_fixture import running_cluster

    clients, requests = (8, 5) if quick else (16, 100)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp, running_cluster() as server:
        folder = Path(tmp)
        bundle = make_bundle(folder)
        _create_database(server, "bench")
        locations = {"sqlite": str(folder / "store.db"), "postgresql": f"{server}/bench"}
        for backend in BACKENDS:
            fill_store(bundle, locations[backend], CLASSES)
            rows += [{"store": backend, **r} for r in measure(bundle, locations[backend], clients, requests)]
    markdown = "\n".join(
        [
            f"Classify over HTTP with {clients} concurrent clients spread over the replicas (one 28 px image "
            f"per request, top-5, {CLASSES} registered classes, ConvNet-4):",
            "",
            table(
                ["store", "replicas", "requests", "requests/s", "p50 ms", "p99 ms"],
                [row_cells(r) for r in rows],
            ),
            "",
            "Replicas: `distilshot serve --no-demo` processes on one store; PostgreSQL: a local throw-away "
            "cluster on loopback (fsync off). Each classify reads the store's change counter and uses the "
            "replica's cached prototypes while it is unchanged. The replicas share this machine's cores.",
        ]
    )
    return {
        "title": "Serving replicas",
        "markdown": markdown,
        "data": {"rows": rows, "clients": clients, "classes": CLASSES, "quick": quick},
    }


def row_cells(row: dict[str, Any]) -> list[object]:
    rate, p50, p99 = f"{row['requests_per_s']:.0f}", f"{row['p50_ms']:.1f}", f"{row['p99_ms']:.1f}"
    return [row["store"], row["replicas"], row["requests"], rate, p50, p99]


def _create_database(server: str, name: str) -> None:
    import psycopg

    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
