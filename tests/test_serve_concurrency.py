"""Many clients at once: every answer right, the final store exactly what the acknowledged requests made."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait

import httpx
import numpy as np
import pytest
from serve_fixtures import make_bundle
from serve_http import files, png, served

from distilshot.core.head import PrototypeHead
from distilshot.core.manifest import Head
from distilshot.serve.api import create_app
from distilshot.serve.batching import Batcher
from distilshot.serve.classifier import FewShotClassifier

CLIENTS = 16
CYCLES = 5  # x 10 requests = 50 per client
DEADLINE_S = 300  # the whole run on a shared 2-core machine; it takes a few seconds when idle
WRITERS_DEADLINE_S = 240  # three writer processes of 15 registrations each; seconds when idle
BASE = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


def client_run(url: str, i: int) -> dict[str, int]:
    """50 mixed requests; asserts every answer; returns the classes it leaves with their shot counts."""
    left: dict[str, int] = {}
    with httpx.Client(base_url=url, timeout=120) as http:
        for cycle in range(CYCLES):
            a, b = f"c{i}-{cycle}-A", f"c{i}-{cycle}-B"
            colour_a, colour_b = (10 + 10 * i, 100 + 20 * cycle, 50), (10 + 10 * i, 100 + 20 * cycle, 200)
            r = http.post("/v1/classes", data={"name": a}, files=files(("a.png", png(colour_a))))
            assert r.status_code == 201 and r.json()["shots"] == 1, r.text
            base = list(BASE)[(i + cycle) % 3]
            r = http.post("/v1/classify", files=files(("q.png", png(BASE[base]))))
            assert r.json()["predictions"][0]["label"] == base, r.text
            r = http.post("/v1/classify", files=files(("q.png", png(colour_a))))
            assert r.json()["predictions"][0]["label"] == a, r.text
            r = http.post(f"/v1/classes/{a}/shots", files=files(("a2.png", png(colour_a))))
            assert r.status_code == 200 and r.json()["shots"] == 2, r.text
            names = {c["name"] for c in http.get("/v1/classes").json()}
            assert set(BASE) | {a} <= names
            r = http.post("/v1/classify", files=files(*((n, png(c)) for n, c in BASE.items())))
            assert [p["label"] for p in r.json()["predictions"]] == list(BASE), r.text
            r = http.post("/v1/classes", data={"name": b}, files=files(("b.png", png(colour_b))))
            assert r.status_code == 201, r.text
            assert http.delete(f"/v1/classes/{b}").json() == {"removed": b}
            r = http.post("/v1/classify", params={"top_k": 1}, files=files(("q.png", png(colour_a))))
            assert r.json()["predictions"][0]["label"] == a, r.text
            assert [s["source"] for s in http.get(f"/v1/classes/{a}").json()["shot_list"]] == [
                "a.png",
                "a2.png",
            ]
            left[a] = 2
    return left


def test_sixteen_clients_fifty_mixed_requests_each(tmp_path):
    store = tmp_path / "s.db"
    with FewShotClassifier(make_bundle(tmp_path / "b"), store) as classifier:
        for name, colour in BASE.items():
            classifier.register(name, [png(colour)])
        with served(create_app(classifier)) as url, ThreadPoolExecutor(CLIENTS) as pool:
            started = time.monotonic()
            futures = [pool.submit(client_run, url, i) for i in range(CLIENTS)]
            done, pending = wait(futures, timeout=DEADLINE_S)
            assert not pending, f"{len(pending)} clients still running after {DEADLINE_S} s"
            expected = {name: 1 for name in BASE}
            for future in done:
                expected.update(future.result())  # re-raises a client's failed assertion
            elapsed = time.monotonic() - started
        assert classifier.batcher.jobs >= CLIENTS * CYCLES * 7  # every image went through the batcher
        final = {c.name: c.shots for c in classifier.classes()}
    assert final == expected, f"after {elapsed:.1f} s"
    with sqlite3.connect(store) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT COUNT(*) FROM shots").fetchone()[0] == sum(expected.values())
        orphans = conn.execute("SELECT COUNT(*) FROM embeddings WHERE shot_id NOT IN (SELECT id FROM shots)")
        assert orphans.fetchone()[0] == 0


WRITER = textwrap.dedent(
    """
    import sys
    from PIL import Image
    from distilshot.serve.classifier import FewShotClassifier

    bundle, store, worker = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with FewShotClassifier(bundle, store) as clf:
        for j in range(15):
            colour = (20 + 10 * j, 40 * worker, 90)
            clf.register(f"w{worker}-{j}", [Image.new("RGB", (20, 20), colour)])
            top = clf.classify([Image.new("RGB", (20, 20), colour)])[0].top_k[0][0]
            assert top == f"w{worker}-{j}", (top, worker, j)
    print("ok")
    """
)


def test_processes_write_one_store_file_at_once(tmp_path):
    bundle, store = make_bundle(tmp_path / "b"), tmp_path / "s.db"
    with FewShotClassifier(bundle, store) as classifier:
        classifier.register("seed", [png((0, 0, 0))])
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", WRITER, str(bundle), str(store), str(w)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for w in range(1, 4)
        ]
        try:
            # this process reads while they write: its cached prototypes must follow their commits
            deadline = time.monotonic() + WRITERS_DEADLINE_S
            seen = {1}
            while any(w.poll() is None for w in workers):
                assert time.monotonic() < deadline, f"writers still running after {WRITERS_DEADLINE_S} s"
                seen.add(len(classifier.store.prototypes()[0]))
                assert classifier.classify([png((0, 0, 0))])[0].top_k[0][0] == "seed"
            for worker in workers:
                out, err = worker.communicate(timeout=120)
                assert worker.returncode == 0 and out.strip() == "ok", err
        finally:
            for worker in workers:
                if worker.poll() is None:
                    worker.kill()
                    worker.communicate()
        # the cache saw counts between the seed alone and all 46 while they wrote, and ends at all 46
        # without any commit of its own (a cache keyed on this connection's commits would stay at 1)
        assert max(seen) > 1, seen
        labels = classifier.store.prototypes()[0]
        names = [c.name for c in classifier.classes()]
    assert len(names) == 1 + 3 * 15 and len(set(names)) == len(names)
    assert labels == names  # both sorted by name


def test_batcher_combines_concurrent_calls_and_returns_each_its_own_rows():
    calls: list[int] = []

    def slow_embed(pixels: np.ndarray) -> dict[str, np.ndarray]:
        calls.append(len(pixels))
        time.sleep(0.05)  # the engine is busy: calls arriving meanwhile must queue and be combined
        return {"e": pixels.reshape(len(pixels), -1)[:, :2].astype(np.float32)}

    head = PrototypeHead(Head("euclidean", {"e": 1.0}))
    batcher = Batcher(slow_embed, max_images=64)
    prototypes = head.prepare(["a", "b"], {"e": np.array([[0, 0], [10, 10]], np.float32)})
    results: dict[int, tuple] = {}

    def call(i: int) -> None:
        pixels = np.full((1 + i % 3, 2, 1, 1), i, np.uint8)
        embeddings = batcher.run(pixels)  # scored per call: the batcher only embeds
        results[i] = embeddings, head.logits(embeddings, prototypes) if i % 2 else None

    threads = [threading.Thread(target=call, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 24 and sum(calls) == sum(1 + i % 3 for i in range(24))
    assert len(calls) < 24  # some calls shared an engine call
    for i, (embeddings, logits) in results.items():
        assert np.array_equal(embeddings["e"], np.full((1 + i % 3, 2), i, np.float32))
        if i % 2:
            expected = -np.array([[2 * i**2, 2 * (i - 10) ** 2]], np.float32)
            assert np.array_equal(logits, np.repeat(expected, 1 + i % 3, axis=0))
        else:
            assert logits is None


def test_a_failing_batch_fails_every_caller_and_the_batcher_goes_on():
    fail = threading.Event()

    def embed(pixels: np.ndarray) -> dict[str, np.ndarray]:
        if fail.is_set():
            raise RuntimeError("engine broke")
        return {"e": pixels.reshape(len(pixels), -1).astype(np.float32)}

    batcher = Batcher(embed)
    fail.set()
    with pytest.raises(RuntimeError, match="engine broke"):
        batcher.run(np.zeros((1, 1, 1, 1), np.uint8))
    fail.clear()
    assert batcher.run(np.ones((2, 1, 1, 1), np.uint8))["e"].tolist() == [[1.0], [1.0]]
