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

import re
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
from bench_http import make_bundle, query_png
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


class Replica:
    """`distilshot serve --no-demo` on `location`; its output (a line per request) is drained by a thread,
    so that a full pipe never blocks the server."""

    def __init__(self, bundle: Path, location: str) -> None:
        command = [str(Path(sys.executable).parent / "distilshot"), "serve", "--bundle", str(bundle)]
        command += ["--store", location, "--port", "0", "--no-demo"]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = []
        for line in self.process.stdout or ():
            lines.append(line)
            found = re.search(r"on (http://\S+)", line)
            if found:
                self.url = found.group(1)
                threading.Thread(target=self.process.stdout.read, daemon=True).start()
                return
        raise RuntimeError("the server did not start: " + "".join(lines))

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def load(urls: list[str], clients: int, requests: int) -> dict[str, Any]:
    """`clients` threads, client i on urls[i % len(urls)], each sending `requests` classify requests."""
    import httpx

    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    start = threading.Barrier(clients + 1)

    def client(i: int) -> None:
        with httpx.Client(base_url=urls[i % len(urls)], timeout=120) as http:
            image = query_png(i + 1)
            http.post("/v1/classify", files=[("images", ("q.png", image))])  # connect and warm up
            start.wait()
            for _ in range(requests):
                t0 = time.perf_counter()
                try:
                    r = http.post("/v1/classify", files=[("images", ("q.png", image))])
                except httpx.HTTPError as error:  # counted: a failed request must fail the section
                    errors.append(repr(error))
                    return
                latencies[i].append(1000 * (time.perf_counter() - t0))
                if r.status_code != 200:
                    errors.append(r.text)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    t0 = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, e.g. {errors[0]}")
    all_ms = np.concatenate(latencies)
    return {
        "replicas": len(urls),
        "clients": clients,
        "requests": int(all_ms.size),
        "requests_per_s": all_ms.size / wall,
        "p50_ms": float(np.percentile(all_ms, 50)),
        "p99_ms": float(np.percentile(all_ms, 99)),
    }


def measure(bundle: Path, location: str, clients: int, requests: int) -> list[dict[str, Any]]:
    """1 replica, then 2 on the same store (the first stays up)."""
    with ExitStack() as stack:
        replicas: list[Replica] = []
        results = []
        for _ in range(2):
            replica = Replica(bundle, location)
            stack.callback(replica.stop)
            replicas.append(replica)
            results.append(load([r.url for r in replicas], clients, requests))
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
