"""Serving replicas sharing one store, for both backends (a PostgreSQL database and, as the reference, one
SQLite file): a change through one process is what another one's next read and classify use, and
concurrent writers (threads, and processes one of which is killed mid-way) lose no acknowledged change."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
from postgres_fixture import classifier_on
from serve_fixtures import make_bundle, solid

from distilshot.serve.store import Shot, open_store

TESTS = Path(__file__).resolve().parent
FP = "a" * 64
RED, GREEN, BLUE = (250, 0, 0), (0, 250, 0), (0, 0, 250)
WRITERS, REGISTRATIONS = 3, 15
DEADLINE_S = 240  # the writer processes on a shared 2-core machine; seconds when idle

# A replica: one classifier on the store, answering one JSON line per command line on stdin.
REPLICA = textwrap.dedent(
    f"""
    import json, sys
    sys.path.insert(0, {str(TESTS)!r})
    from PIL import Image
    from postgres_fixture import classifier_on

    with classifier_on(sys.argv[1], sys.argv[2]) as clf:
        for line in sys.stdin:
            command, argument = json.loads(line)
            if command == "labels":
                answer = clf.store.prototypes()[0]
            elif command == "classify":
                answer = clf.classify([Image.new("RGB", (24, 20), tuple(argument))])[0].label
            else:
                clf.register(argument[0], [Image.new("RGB", (24, 20), tuple(argument[1]))])
                answer = "ok"
            print(json.dumps(answer), flush=True)
    """
)


def ask(replica: subprocess.Popen, command: str, argument: object = None) -> object:
    replica.stdin.write(json.dumps([command, argument]) + "\n")
    replica.stdin.flush()
    line = replica.stdout.readline()
    assert line, replica.stderr.read()
    return json.loads(line)


def test_a_change_in_one_replica_is_used_by_the_next_classify_of_another(store_backend, tmp_path):
    bundle, location = make_bundle(tmp_path / "b"), store_backend.new()
    with classifier_on(bundle, location) as here:
        here.register("red", [solid(RED)])
        other = subprocess.Popen(
            [sys.executable, "-c", REPLICA, str(bundle), location],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert ask(other, "labels") == ["red"]
            assert ask(other, "classify", RED) == "red"  # its prototypes are cached now
            here.register("blue", [solid(BLUE)])
            assert ask(other, "classify", BLUE) == "blue"  # at once: no timer, no reopening
            assert here.classify([solid(RED)])[0].label == "red"  # this one's cache is warm too
            assert ask(other, "register", ["green", GREEN]) == "ok"
            assert here.classify([solid(GREEN)])[0].label == "green"
            here.remove("red")
            assert ask(other, "labels") == ["blue", "green"]
        finally:
            other.stdin.close()
            other.wait(timeout=60)
    assert other.returncode == 0, other.stderr.read()


def shot(seed: int) -> Shot:
    vector = np.random.default_rng(seed).standard_normal(4).astype(np.float32)
    return Shot(f"{seed}.png", {"global": vector}, b"\x89PNG fake")


def test_writer_threads_lose_nothing(store_backend):
    location, errors, threads = store_backend.new(), [], 8
    with open_store(location, FP) as store:

        def write(worker: int) -> None:
            try:
                for j in range(10):
                    store.register(f"t{worker}-{j}", [shot(100 * worker + j)])
                    assert f"t{worker}-{j}" in store.prototypes()[0]
            except Exception as error:  # collected: a thread's failure must fail the test
                errors.append(repr(error))

        running = [threading.Thread(target=write, args=(w,)) for w in range(threads)]
        for thread in running:
            thread.start()
        for thread in running:
            thread.join(timeout=DEADLINE_S)
        assert errors == []
        names = {c.name for c in store.classes()}
    assert names == {f"t{w}-{j}" for w in range(threads) for j in range(10)}


WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from distilshot.serve.store import Shot, open_store

    location, worker = sys.argv[1], int(sys.argv[2])
    with open_store(location, "a" * 64) as store:
        for j in range(int(sys.argv[3])):
            vector = np.random.default_rng(100 * worker + j).standard_normal(4).astype(np.float32)
            name = f"w{worker}-{j}"
            store.register(name, [Shot(f"{j}.png", {"global": vector}, b"png")])
            assert name in store.prototypes()[0], name
            print(name, flush=True)  # acknowledged: committed
    """
)


def test_writer_processes_lose_no_acknowledged_change_when_one_is_killed(store_backend):
    location = store_backend.new()
    open_store(location, FP).close()  # created once, as a deployment does before starting replicas
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, location, str(w), str(REGISTRATIONS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(WRITERS)
    ]
    try:
        killed = writers[0]
        acknowledged = [killed.stdout.readline().strip() for _ in range(5)]
        killed.send_signal(signal.SIGKILL)  # mid-way: most likely inside its next registration
        killed.wait(timeout=60)
        acknowledged += killed.stdout.read().split()
        deadline = time.monotonic() + DEADLINE_S
        for writer in writers[1:]:
            out, err = writer.communicate(timeout=max(1, deadline - time.monotonic()))
            assert writer.returncode == 0, err
            assert out.split() == [f"w{writers.index(writer)}-{j}" for j in range(REGISTRATIONS)]
            acknowledged += out.split()
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
                writer.communicate()
    assert killed.returncode == -signal.SIGKILL
    with open_store(location, FP) as store:
        names = [c.name for c in store.classes()]
        labels = store.prototypes()[0]
        assert all(c.shots == 1 for c in store.classes())
    assert set(acknowledged) <= set(names) and labels == names
    unacknowledged = set(names) - set(acknowledged)  # the killed writer's commit it could not print
    assert len(unacknowledged) <= 1 and all(n.startswith("w0-") for n in unacknowledged), unacknowledged
    for table in ("shots", "embeddings", "prototypes"):
        assert store_backend.count(location, table) == len(names), table
