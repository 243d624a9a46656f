"""`distilshot serve | demo`: the HTTP API with the Gradio demo mounted, in one process.

They live here rather than in serve/ because the server mounts the demo (imports flow demo -> serve).
uvicorn, FastAPI and Gradio are imported inside the commands, so `distilshot --help` stays fast.

A server on a non-loopback address needs API keys (a file or DISTILSHOT_API_KEYS, never the command line)
unless --insecure-no-auth says otherwise. uvicorn closes idle keep-alive connections after 5 s, and
every request body must arrive within --request-timeout seconds.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import Annotated

import typer

from distilshot.errors import DistilshotError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True)

Host = Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0 for every interface).")]
Port = Annotated[int, typer.Option("--port", help="Port to listen on (0: any free port).")]
Backend = Annotated[str, typer.Option("--backend", help="Inference backend (auto picks the best here).")]
Reembed = Annotated[
    bool,
    typer.Option("--reembed", help="If the store holds another model's embeddings, re-embed its images."),
]
MaxRequestMb = Annotated[int, typer.Option("--max-request-mb", help="Largest request body accepted, MiB.")]
ApiKeysFile = Annotated[
    Path | None,
    typer.Option(
        "--api-keys",
        help="File of API keys, one read:KEY or admin:KEY a line (or set DISTILSHOT_API_KEYS).",
        show_default=False,
    ),
]
InsecureNoAuth = Annotated[
    bool,
    typer.Option("--insecure-no-auth", help="Listen on a non-loopback address without API keys."),
]
AllowedHosts = Annotated[
    list[str] | None,
    typer.Option(
        "--allowed-host",
        help="A Host name clients use for this server (repeatable; loopback names always; * any).",
        show_default=False,
    ),
]
CorsOrigins = Annotated[
    list[str] | None,
    typer.Option(
        "--cors-origin",
        help="An origin (https://host[:port]) whose pages may call the API (repeatable; default none).",
        show_default=False,
    ),
]
WriteLimit = Annotated[
    int,
    typer.Option("--write-limit", help="Writes a minute per key (per client without keys); 0: no limit."),
]
RequestTimeout = Annotated[
    float, typer.Option("--request-timeout", help="Seconds within which a request body must arrive.")
]
KEEP_ALIVE_S = 5  # an idle connection is closed after this


def latest_bundle(runs: Path = Path("runs")) -> Path:
    """The most recently written bundle under `runs/` (what `make train-export` just made)."""
    bundles = sorted(runs.glob("*/bundle/manifest.json"), key=lambda p: p.stat().st_mtime)
    if not bundles:
        raise DistilshotError(f"no bundle under {runs}/; run `make train-export` first or pass --bundle")
    return bundles[-1].parent


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
    from distilshot.serve.security import LOOPBACK_HOSTS

    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return LOOPBACK_HOSTS
    if address.is_unspecified:
        return LOOPBACK_HOSTS
    return (*LOOPBACK_HOSTS, f"[{address}]" if address.version == 6 else str(address))


def run_server(
    bundle: Path,
    store: Path,
    host: str,
    port: int,
    *,
    backend: str = "auto",
    demo: bool = True,
    reembed: bool = False,
    max_request_mb: int = 64,
    api_keys: Path | None = None,
    insecure_no_auth: bool = False,
    allowed_hosts: list[str] | None = None,
    cors_origins: list[str] | None = None,
    write_limit: int = 120,
    request_timeout: float = 120.0,
) -> None:
    """Serves the API (and the demo) until interrupted; one classifier shared by every request."""
    import uvicorn

    from distilshot.serve.api import API_PREFIX, create_app
    from distilshot.serve.classifier import FewShotClassifier
    from distilshot.serve.security import KEYS_ENV, ApiKeys, Security

    if max_request_mb < 1:
        raise DistilshotError(f"--max-request-mb must be at least 1, not {max_request_mb}")
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
    security = Security(
        keys=keys,
        allowed_hosts=(*host_names(host), *(h.lower() for h in allowed_hosts or ())),
        cors_origins=tuple(cors_origins or ()),
        writes_per_minute=write_limit or None,
        body_timeout_s=request_timeout,
    )
    sock = listen(host, port)
    with FewShotClassifier(bundle, store, backend, reembed=reembed) as classifier:
        home = "/demo/" if demo else f"{API_PREFIX}/docs"
        api = create_app(
            classifier, home=home, max_request_bytes=max_request_mb * 1024 * 1024, security=security
        )
        if demo:
            from distilshot.demo.app import mount_demo

            mount_demo(api, classifier, keys=keys)
        bound_host, bound_port = sock.getsockname()[:2]
        url = f"http://{bound_host}:{bound_port}"
        if keys is not None:
            typer.echo(f"{len(keys)} API keys; Host names allowed: {', '.join(security.allowed_hosts)}")
        elif insecure_no_auth:
            typer.echo("WARNING: no API keys: anyone who can reach this server can change its classes")
        typer.echo(f"serving {bundle} with store {store} on {url}")
        demo_url = f", demo {url}/demo/" if demo else ""
        typer.echo(f"  API {url}{API_PREFIX}, docs {url}{API_PREFIX}/docs{demo_url}")
        config = uvicorn.Config(
            api,
            log_level="warning",
            timeout_graceful_shutdown=5,
            timeout_keep_alive=KEEP_ALIVE_S,
            server_header=False,
        )
        uvicorn.Server(config).run(sockets=[sock])


@app.command()
def serve(
    bundle: Annotated[Path, typer.Option("--bundle", "-b", help="Bundle folder to serve.")],
    store: Annotated[Path, typer.Option("--store", "-s", help="Support store (SQLite), created if absent.")],
    host: Host = "127.0.0.1",
    port: Port = 8000,
    backend: Backend = "auto",
    demo: Annotated[bool, typer.Option("--demo/--no-demo", help="Mount the Gradio demo at /demo.")] = True,
    reembed: Reembed = False,
    max_request_mb: MaxRequestMb = 64,
    api_keys: ApiKeysFile = None,
    insecure_no_auth: InsecureNoAuth = False,
    allowed_host: AllowedHosts = None,
    cors_origin: CorsOrigins = None,
    write_limit: WriteLimit = 120,
    request_timeout: RequestTimeout = 120.0,
) -> None:
    """Serve the HTTP API (/v1, OpenAPI at /v1/openapi.json) with the Gradio demo at /demo."""
    run_server(
        bundle,
        store,
        host,
        port,
        backend=backend,
        demo=demo,
        reembed=reembed,
        max_request_mb=max_request_mb,
        api_keys=api_keys,
        insecure_no_auth=insecure_no_auth,
        allowed_hosts=allowed_host,
        cors_origins=cors_origin,
        write_limit=write_limit,
        request_timeout=request_timeout,
    )


@app.command()
def demo(
    bundle: Annotated[
        Path | None, typer.Option("--bundle", "-b", help="Bundle folder; default: newest runs/*/bundle.")
    ] = None,
    store: Annotated[
        Path | None,
        typer.Option("--store", "-s", help="Support store; default: demo-classes.db beside the bundle."),
    ] = None,
    host: Host = "127.0.0.1",
    port: Port = 7860,
    backend: Backend = "auto",
    reembed: Reembed = False,
    api_keys: ApiKeysFile = None,
    insecure_no_auth: InsecureNoAuth = False,
    allowed_host: AllowedHosts = None,
) -> None:
    """Run the Gradio demo (with the HTTP API beside it); open the printed URL in a browser."""
    bundle = bundle or latest_bundle()
    store = store or bundle.parent / "demo-classes.db"
    run_server(
        bundle,
        store,
        host,
        port,
        backend=backend,
        demo=True,
        reembed=reembed,
        api_keys=api_keys,
        insecure_no_auth=insecure_no_auth,
        allowed_hosts=allowed_host,
    )
