"""Serving over HTTP: classify requests/s and p50/p99 latency at 1 and 16 concurrent clients, and classify
latency against 10, 1 000 and 100 000 registered classes.

The server is `distilshot serve --no-demo` in its own process (one engine, the Batcher combining
concurrent requests); clients are threads of this process, each with its own keep-alive connection,
sending one 28 x 28 PNG per request with top_k=5. The model is a ConvNet-4 for 28 px greyscale input
(Omniglot's shape) with random weights: latency does not depend on the weights. For the class-count
runs the store is filled directly with random prototypes (what registration would store), so that
100 000 classes do not take 100 000 uploads.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

SIZE = 28


def make_bundle(folder: Path) -> Path:
    from distilshot.export.bundle import write_bundle
    from distilshot.train.checkpoint import ModelSpec

    spec = ModelSpec("protonet", "convnet4", 0, 1, SIZE, (0.5,), (0.5,), "omniglot", {})
    bundle, _ = write_bundle(spec.build(seed=0), spec, folder / "bundle")
    return bundle


def query_png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def fill_store(bundle: Path, store: Path, classes: int) -> None:
    """`classes` classes of one shot each, with random embeddings, written in one transaction."""
    from distilshot.core.manifest import load_manifest
    from distilshot.serve.store import Shot, SupportStore

    manifest = load_manifest(bundle)
    rng = np.random.default_rng(classes)
    thumbnail = query_png(0)
    outputs = {
        o.name: rng.normal(size=(classes, o.dim)).astype(np.float32) for o in manifest.embedder.outputs
    }
    shots = {
        f"class {i:06d}": [Shot("random.png", {o: v[i] for o, v in outputs.items()}, thumbnail)]
        for i in range(classes)
    }
    with SupportStore(store, manifest.fingerprint()) as opened:
        opened.register_many(shots)


class Server:
    """`distilshot serve --no-demo` on `store`; its output (a line per request) is drained by a thread,
    so that a full pipe never blocks the server."""

    def __init__(self, bundle: Path, store: Path | str) -> None:
        command = [str(Path(sys.executable).parent / "distilshot"), "serve", "--bundle", str(bundle)]
        command += ["--store", str(store), "--port", "0", "--no-demo"]
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
    """`clients` threads, client i on urls[i % len(urls)] (as a round-robin load balancer would spread
    them), each sending `requests` classify requests; latencies in ms and requests/s."""
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
        "clients": clients,
        "requests": int(all_ms.size),
        "requests_per_s": all_ms.size / wall,
        "p50_ms": float(np.percentile(all_ms, 50)),
        "p99_ms": float(np.percentile(all_ms, 99)),
    }


def run(quick: bool) -> dict[str, Any]:
    per_client = {1: 30, 16: 10} if quick else {1: 500, 16: 100}
    class_counts = (10, 1_000, 10_000) if quick else (10, 1_000, 100_000)
    latency_requests = 30 if quick else 300
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        folder = Path(tmp)
        bundle = make_bundle(folder)
        concurrency = []
        fill_store(bundle, folder / "twenty.db", 20)
        server = Server(bundle, folder / "twenty.db")
        try:
            for clients, requests in per_client.items():
                concurrency.append(load([server.url], clients, requests))
        finally:
            server.stop()
        by_classes = []
        for count in class_counts:
            store = folder / f"{count}.db"
            fill_store(bundle, store, count)
            server = Server(bundle, store)
            try:
                by_classes.append({"classes": count, **load([server.url], 1, latency_requests)})
            finally:
                server.stop()
    rows = [
        f"| {r['clients']} | {r['requests']} | {r['requests_per_s']:.0f} | {r['p50_ms']:.1f} "
        f"| {r['p99_ms']:.1f} |"
        for r in concurrency
    ]
    class_rows = [f"| {r['classes']:,} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |" for r in by_classes]
    markdown = "\n".join(
        [
            "Classify over HTTP (one 28 px image per request, top-5, 20 registered classes, ConvNet-4):",
            "",
            "| concurrent clients | requests | requests/s | p50 ms | p99 ms |",
            "|---|---|---|---|---|",
            *rows,
            "",
            "Classify latency over HTTP against the number of registered classes (1 client):",
            "",
            "| registered classes | p50 ms | p99 ms |",
            "|---|---|---|",
            *class_rows,
            "",
            "Server: `distilshot serve --no-demo` in its own process; clients: threads of the bench process "
            "(keep-alive connections). Latency is per request, end to end on loopback.",
        ]
    )
    return {
        "title": "HTTP serving",
        "markdown": markdown,
        "data": {"concurrency": concurrency, "classes": by_classes, "quick": quick},
    }
