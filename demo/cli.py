"""`distilshot serve | demo`: the HTTP API with the Gradio demo mounted, in one process.

They live here rather than in serve/ because the server mounts the demo (imports flow demo -> serve).
uvicorn, FastAPI and Gradio are imported inside the commands, so `distilshot --help` stays fast.
"""

from __future__ import annotations

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
) -> None:
    """Serves the API (and the demo) until interrupted; one classifier shared by every request."""
    import uvicorn

    from distilshot.serve.api import API_PREFIX, create_app
    from distilshot.serve.classifier import FewShotClassifier

    if max_request_mb < 1:
        raise DistilshotError(f"--max-request-mb must be at least 1, not {max_request_mb}")
    sock = listen(host, port)
    with FewShotClassifier(bundle, store, backend, reembed=reembed) as classifier:
        home = "/demo/" if demo else f"{API_PREFIX}/docs"
        api = create_app(classifier, home=home, max_request_bytes=max_request_mb * 1024 * 1024)
        if demo:
            from distilshot.demo.app import mount_demo

            mount_demo(api, classifier)
        bound_host, bound_port = sock.getsockname()[:2]
        url = f"http://{bound_host}:{bound_port}"
        typer.echo(f"serving {bundle} with store {store} on {url}")
        demo_url = f", demo {url}/demo/" if demo else ""
        typer.echo(f"  API {url}{API_PREFIX}, docs {url}{API_PREFIX}/docs{demo_url}")
        config = uvicorn.Config(api, log_level="warning", timeout_graceful_shutdown=5)
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
) -> None:
    """Serve the HTTP API (/v1, OpenAPI at /v1/openapi.json) with the Gradio demo at /demo."""
    run_server(
        bundle, store, host, port, backend=backend, demo=demo, reembed=reembed, max_request_mb=max_request_mb
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
) -> None:
    """Run the Gradio demo (with the HTTP API beside it); open the printed URL in a browser."""
    bundle = bundle or latest_bundle()
    store = store or bundle.parent / "demo-classes.db"
    run_server(bundle, store, host, port, backend=backend, demo=True, reembed=reembed)
