"""Serving replicas sharing one store: two `distilshot serve` processes on one PostgreSQL database, 16
HTTP clients at once mixing registrations, classifications and removals across both. Every answer is
right (a class registered through one replica is what the very next classify on the other answers), and
no acknowledged registration is lost when a replica is killed (SIGKILL) mid-run."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait

import httpx
import pytest
from postgres_fixture import StoreBackend, classifier_on
from serve_fixtures import make_bundle
from serve_http import ServerProcess, files, png

CLIENTS = 16
ROUNDS = 4  # x 8 requests per client and round
DEADLINE_S = 300  # the whole run on a shared 2-core machine; seconds when idle
BASE = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


def colour(client: int, k: int) -> tuple[int, int, int]:
    """The colour of a client's k-th class (k < 16): one of its own, apart from BASE's."""
    return 20 + 12 * client, 40 + 12 * k, 110 + 5 * client


@pytest.fixture
def store(postgres_server: str, tmp_path) -> Iterator[tuple[StoreBackend, str]]:
    backend = StoreBackend("postgres", tmp_path, postgres_server)
    try:
        yield backend, backend.new()
    finally:
        backend.drop_all()


@pytest.fixture
def replicas(tmp_path, store) -> Iterator[list[ServerProcess]]:
    """Two replicas on a store holding BASE, created first as a deployment does."""
    bundle, (_, location) = make_bundle(tmp_path / "b"), store
    with classifier_on(bundle, location) as classifier:
        for name, rgb in BASE.items():
            classifier.register(name, [png(rgb)])
    servers = []
    try:
        for _ in range(2):
            servers.append(
                ServerProcess("--bundle", bundle, "--store", location, "--no-demo", "--write-limit", "0")
            )
        yield servers
    finally:
        for server in servers:
            server.stop()


def label(http: httpx.Client, rgb: tuple[int, int, int]) -> str:
    r = http.post("/v1/classify", files=files(("q.png", png(rgb))))
    assert r.status_code == 200, r.text
    return r.json()["predictions"][0]["label"]


def register(http: httpx.Client, name: str, rgb: tuple[int, int, int]) -> None:
    r = http.post("/v1/classes", data={"name": name}, files=files(("a.png", png(rgb))))
    assert r.status_code == 201 and r.json()["shots"] == 1, r.text


def client_run(urls: list[str], i: int) -> set[str]:
    """ROUNDS rounds alternating the replicas; asserts every answer; returns the classes it leaves."""
    left = set()
    with (
        httpx.Client(base_url=urls[i % 2], timeout=120) as one,
        httpx.Client(base_url=urls[1 - i % 2], timeout=120) as other,
    ):
        for round_ in range(ROUNDS):
            kept, dropped = f"c{i}-{round_}", f"c{i}-{round_}-x"
            kept_rgb, dropped_rgb = colour(i, 2 * round_), colour(i, 2 * round_ + 1)
            register(one, kept, kept_rgb)
            assert label(other, kept_rgb) == kept  # the very next classify, on the other replica
            base = list(BASE)[(i + round_) % 3]
            assert label(one, BASE[base]) == base
            register(other, dropped, dropped_rgb)
            assert label(one, dropped_rgb) == dropped
            assert other.delete(f"/v1/classes/{dropped}").json() == {"removed": dropped}
            assert label(one, dropped_rgb) != dropped  # gone for the other replica too
            assert label(other, kept_rgb) == kept
            left.add(kept)
            one, other = other, one
    return left


def names_in(http: httpx.Client) -> set[str]:
    return {c["name"] for c in http.get("/v1/classes").json()}


def test_sixteen_clients_on_two_replicas_get_no_error_and_no_wrong_answer(replicas, store):
    backend, location = store
    urls = [server.url for server in replicas]
    with ThreadPoolExecutor(CLIENTS) as pool:
        started = time.monotonic()
        futures = [pool.submit(client_run, urls, i) for i in range(CLIENTS)]
        done, pending = wait(futures, timeout=DEADLINE_S)
        assert not pending, f"{len(pending)} clients still running after {DEADLINE_S} s"
        expected = set(BASE).union(*(future.result() for future in done))  # re-raises a client's failure
    elapsed = time.monotonic() - started
    for url in urls:
        with httpx.Client(base_url=url, timeout=60) as http:
            assert names_in(http) == expected, f"after {elapsed:.1f} s"
    assert {row[0] for row in backend.sql(location, "SELECT name FROM classes")} == expected
    assert backend.count(location, "shots") == len(expected) == backend.count(location, "prototypes")


def writer_run(urls: list[str], i: int, killed: threading.Event) -> list[str]:
    """Registers classes through both replicas in turn until 2 * ROUNDS succeed; a request to the killed
    replica may fail (it is then not acknowledged), and the writer goes on with the survivor (at most
    16 attempts: a writer loses at most one request to the kill)."""
    acknowledged = []
    clients = [httpx.Client(base_url=url, timeout=120) for url in urls]
    try:
        attempt = 0
        while len(acknowledged) < 2 * ROUNDS:
            name, replica = f"w{i}-{attempt}", 0 if killed.is_set() else attempt % 2
            form = {"data": {"name": name}, "files": files(("a.png", png(colour(i, attempt))))}
            attempt += 1
            try:
                r = clients[replica].post("/v1/classes", **form)
            except httpx.TransportError:
                assert replica == 1 and killed.is_set(), f"replica {replica} failed: {name}"
                continue
            assert r.status_code == 201, r.text
            acknowledged.append(name)
    finally:
        for client in clients:
            client.close()
    return acknowledged


def test_a_replica_killed_mid_run_loses_no_acknowledged_registration(replicas, store):
    backend, location = store
    urls, killed = [server.url for server in replicas], threading.Event()
    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(writer_run, urls, i, killed) for i in range(CLIENTS)]
        deadline = time.monotonic() + DEADLINE_S
        while backend.count(location, "classes") < len(BASE) + CLIENTS * ROUNDS // 2:  # a quarter in
            assert time.monotonic() < deadline, "the writers made no progress"
            time.sleep(0.05)
        killed.set()  # from now on the writers turn to replica 0
        replicas[1].kill()  # SIGKILL: mid-request for some writers
        done, pending = wait(futures, timeout=max(1, deadline - time.monotonic()))
        assert not pending, f"{len(pending)} writers still running after {DEADLINE_S} s"
        acknowledged = {name for future in done for name in future.result()}
    assert replicas[1].process.returncode == -9
    stored = {row[0] for row in backend.sql(location, "SELECT name FROM classes")}
    with httpx.Client(base_url=urls[0], timeout=120) as survivor:
        served = names_in(survivor)
        assert acknowledged <= served and served == stored  # through the survivor and in the store
        for name in sorted(acknowledged)[:: max(1, len(acknowledged) // 16)]:
            i, attempt = map(int, name[1:].split("-"))
            assert label(survivor, colour(i, attempt)) == name
    # at most the registrations in flight at the kill are unacknowledged; each is whole or absent
    assert len(stored - acknowledged - set(BASE)) <= CLIENTS
    assert backend.count(location, "shots") == len(stored) == backend.count(location, "prototypes")
