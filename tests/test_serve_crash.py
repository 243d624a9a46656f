"""kill -9 the server in the middle of registrations: after a restart the store is consistent and holds
every class whose registration was acknowledged."""

from __future__ import annotations

import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait

import httpx
from serve_fixtures import make_bundle
from serve_http import ServerProcess, files, png

WRITERS = 4
KILL_AFTER = 24  # acknowledged registrations before the kill; writers keep sending meanwhile


def colour(writer: int, j: int) -> tuple[int, int, int]:
    return (5 + 4 * j % 250, 40 + 50 * writer, 7 * j % 256)


def test_kill_9_during_registrations_loses_nothing_acknowledged(tmp_path):
    bundle, store = make_bundle(tmp_path / "b"), tmp_path / "s.db"
    server = ServerProcess("--bundle", bundle, "--store", store, "--no-demo")
    acknowledged: list[tuple[str, tuple[int, int, int]]] = []
    lock = threading.Lock()
    enough = threading.Event()

    def write(writer: int) -> None:
        """Registers until the server dies; any other answer than 201 fails the test (in the main
        thread, through the future: an assertion inside a thread would only be a warning)."""
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for j in range(1000):
                name = f"w{writer}-{j}"
                images = files(("1.png", png(colour(writer, j))), ("2.png", png(colour(writer, j))))
                try:
                    r = client.post("/v1/classes", data={"name": name}, files=images)
                except httpx.TransportError:
                    return  # the server died with this request in flight: not acknowledged
                assert r.status_code == 201, (name, r.status_code, r.text)
                with lock:
                    acknowledged.append((name, colour(writer, j)))
                    if len(acknowledged) >= KILL_AFTER:
                        enough.set()

    with ThreadPoolExecutor(WRITERS) as pool:
        try:
            futures = [pool.submit(write, w) for w in range(WRITERS)]
            deadline = time.monotonic() + 240
            # a writer that failed before the kill ends the wait at once
            while not enough.wait(timeout=0.1) and not any(f.done() for f in futures):
                assert time.monotonic() < deadline, "the server acknowledged too few registrations"
            server.kill()
            pending = wait(futures, timeout=60).not_done
        finally:
            server.stop()
        assert not pending, f"{len(pending)} writers still running 60 s after the kill"
        for future in futures:
            future.result()  # re-raises a writer's failed assertion (a 500 or 503 before the kill)
    assert len(acknowledged) >= KILL_AFTER

    with sqlite3.connect(store) as conn:  # as the crash left it (the WAL is replayed on open)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        half_done = conn.execute(
            "SELECT COUNT(*) FROM classes c WHERE (SELECT COUNT(*) FROM shots s WHERE s.class_id = c.id) != 2"
        ).fetchone()[0]
        assert half_done == 0  # a class is stored with both its images or not at all

    restarted = ServerProcess("--bundle", bundle, "--store", store, "--no-demo")
    try:
        with httpx.Client(base_url=restarted.url, timeout=60) as client:
            listed = {c["name"]: c["shots"] for c in client.get("/v1/classes").json()}
            assert {name for name, _ in acknowledged} <= set(listed)
            assert set(listed.values()) == {2}
            for name, rgb in acknowledged[:: max(1, len(acknowledged) // 8)]:
                r = client.post("/v1/classify", files=files(("q.png", png(rgb))))
                assert r.json()["predictions"][0]["label"] == name
            r = client.post("/v1/classes", data={"name": "after"}, files=files(("a.png", png((1, 2, 3)))))
            assert r.status_code == 201
    finally:
        restarted.stop()
