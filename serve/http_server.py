"""Running the HTTP API: the listening socket, the security settings a listening address calls for, and
uvicorn around one shared classifier.

A server on a non-loopback address needs API keys (a file or DISTILSHOT_API_KEYS, never the command line)
unless `insecure_no_auth` says otherwise. uvicorn closes idle keep-alive connections after 5 s, and
every request body must arrive within the request timeout. Each request is logged on stderr (method,
path, status, latency; serve/access_log.py), and the server says when it stops.

A browser UI can be mounted beside the API through a `Mount` hook: serve never imports the demo, the
`distilshot` command (distilshot/cli.py) hands it demo/app.py's `mount_demo`.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import typer

from distilshot.errors import DistilshotError
from distilshot.serve.access_log import LOGGER as ACCESS_LOGGER
from distilshot.serve.security import KEYS_ENV, LOOPBACK_HOSTS, ApiKeys, Security

if TYPE_CHECKING:
    from fastapi import FastAPI

    from distilshot.serve.classifier import FewShotClassifier

KEEP_ALIVE_S = 5  # an idle connection is closed after this
UI_PATH = "/demo"  # where a mounted UI lives; `/` redirects to it


class Mount(Protocol):
    """Adds a browser UI to the API `app` at `path`, over the same classifier; behind a login with `keys`."""

    def __call__(
        self, app: FastAPI, classifier: FewShotClassifier, path: str, keys: ApiKeys | None
    ) -> object: ...


def listen(host: str, port: int) -> socket.socket:
    """A listening socket, so that a taken port is a clear error before anything loads. Created with
    proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on such sockets, and without it every response
    written in two parts waits ~40 ms for the client's delayed ACK."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as error:
        raise DistilshotError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return sock


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_names(host: str) -> tuple[str, ...]:
    """Host header names that reach this server without --allowed-host: loopback, and the address
    listened on when it is one address (an IP literal cannot be rebound by DNS)."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return LOOPBACK_HOSTS
    if address.is_unspecified:
        return LOOPBACK_HOSTS
    return (*LOOPBACK_HOSTS, f"[{address}]" if address.version == 6 else str(address))


def server_security(
    host: str,
    api_keys: Path | None = None,
    insecure_no_auth: bool = False,
    allowed_hosts: list[str] | None = None,
    cors_origins: list[str] | None = None,
    write_limit: int = 120,
    request_timeout: float = 120.0,
) -> Security:
    """The security settings for a server on `host`, keys from `api_keys` or DISTILSHOT_API_KEYS;
    refuses a non-loopback server without keys unless `insecure_no_auth`."""
    if write_limit < 0:
        raise DistilshotError(f"--write-limit must be 0 (no limit) or more, not {write_limit}")
    keys = ApiKeys.load(api_keys, os.environ)
    if keys is not None and insecure_no_auth:
        raise DistilshotError("--insecure-no-auth with API keys: give one or the other")
    if keys is None and not is_loopback(host) and not insecure_no_auth:
        raise DistilshotError(
            f"--host {host} is not a loopback address: give API keys (--api-keys FILE or {KEYS_ENV}), "
            "or --insecure-no-auth to serve everyone who can reach it"
        )
    return Security(
        keys=keys,
        allowed_hosts=(*host_names(host), *(h.lower() for h in allowed_hosts or ())),
        cors_origins=tuple(cors_origins or ()),
        writes_per_minute=write_limit or None,
        body_timeout_s=request_timeout,
    )


def run_server(
    bundle: Path,
    store: str,
    host: str,
    port: int,
    security: Security,
    backend: str = "auto",
    reembed: bool = False,
    max_request_mb: int = 64,
    ui: Mount | None = None,
    *,
    insecure: bool = False,
) -> None:
    """Serves the API (and `ui` at /demo) until interrupted; one classifier shared by every request.
    `insecure`: served without keys on purpose (--insecure-no-auth), which the first lines say."""
    import uvicorn

    from distilshot.serve.api import API_PREFIX, create_app
    from distilshot.serve.classifier import FewShotClassifier

    if max_request_mb < 1:
        raise DistilshotError(f"--max-request-mb must be at least 1, not {max_request_mb}")
    sock = listen(host, port)
    with FewShotClassifier(bundle, store, backend, reembed=reembed) as classifier:
        home = f"{UI_PATH}/" if ui is not None else f"{API_PREFIX}/docs"
        api = create_app(
            classifier, home=home, max_request_bytes=max_request_mb * 1024 * 1024, security=security
        )
        if ui is not None:
            ui(api, classifier, UI_PATH, security.keys)
        bound_host, bound_port = sock.getsockname()[:2]
        url = f"http://{bound_host}:{bound_port}"
        if security.keys is not None:
            hosts = ", ".join(security.allowed_hosts)
            typer.echo(f"{len(security.keys)} API keys; Host names allowed: {hosts}")
        elif insecure:
            typer.echo("WARNING: no API keys: anyone who can reach this server can change its classes")
        # the store's location, never the URL given: that may carry a password
        typer.echo(f"serving {bundle} with store {classifier.store.location} on {url}")
        ui_url = f", demo {url}{UI_PATH}/" if ui is not None else ""
        typer.echo(f"  API {url}{API_PREFIX}, docs {url}{API_PREFIX}/docs{ui_url}")
        config = uvicorn.Config(
            api,
            log_level="warning",
            access_log=False,  # uvicorn's line has the query string, which may hold secrets: ours has not
            timeout_graceful_shutdown=5,
            timeout_keep_alive=KEEP_ALIVE_S,
            server_header=False,
        )
        with access_log_on_stderr(), until_stopped():
            uvicorn.Server(config).run(sockets=[sock])
        typer.echo(f"stopped serving on {url}")


class Stopped(Exception):
    """SIGTERM, which uvicorn delivers again once it has shut down gracefully."""


@contextmanager
def until_stopped() -> Iterator[None]:
    """Ends the block quietly on SIGTERM or Ctrl-C (after uvicorn's graceful shutdown), so that the
    classifier is closed and the server can say it stopped."""

    def stop(signum: int, frame: object) -> None:
        raise Stopped

    in_main_thread = threading.current_thread() is threading.main_thread()  # only it may set handlers
    previous = signal.signal(signal.SIGTERM, stop) if in_main_thread else None
    try:
        yield
    except (Stopped, KeyboardInterrupt):
        pass
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


@contextmanager
def access_log_on_stderr() -> Iterator[None]:
    """The access log's lines on stderr while the server runs."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    level = ACCESS_LOGGER.level
    ACCESS_LOGGER.addHandler(handler)
    ACCESS_LOGGER.setLevel(logging.INFO)
    try:
        yield
    finally:
        ACCESS_LOGGER.removeHandler(handler)
        ACCESS_LOGGER.setLevel(level)
