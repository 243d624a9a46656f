"""`distilshot demo`: the Gradio demo with the HTTP API beside it, in one process.

It is `distilshot serve` with the demo's defaults: serve's server (serve/http_server.py) mounts the
demo through the hook the `distilshot` command provides (distilshot/cli.py), which imports Gradio only
once the classifier has loaded, so `distilshot --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from distilshot.errors import DistilshotError
from distilshot.serve.http_cli import (
    AllowedHosts,
    ApiKeysFile,
    Backend,
    Host,
    InsecureNoAuth,
    Port,
    Reembed,
    demo_mount,
    demo_store_for,
)

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True)


def latest_bundle(runs: Path = Path("runs")) -> Path:
    """The most recently written bundle under `runs/` (what `make train-export` just made)."""
    bundles = sorted(runs.glob("*/bundle/manifest.json"), key=lambda p: p.stat().st_mtime)
    if not bundles:
        raise DistilshotError(f"no bundle under {runs}/; run `make train-export` first or pass --bundle")
    return bundles[-1].parent


@app.command()
def demo(
    ctx: typer.Context,
    bundle: Annotated[
        Path | None,
        typer.Option(
            "--bundle", "-b", envvar="DISTILSHOT_BUNDLE", help="Bundle folder; default: newest runs/*/bundle."
        ),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            "-s",
            envvar="DISTILSHOT_STORE",
            help="Support store; default: ~/.local/share/distilshot/RUN.db (outside the run folder).",
        ),
    ] = None,
    host: Host = "127.0.0.1",
    port: Port = 7860,
    backend: Backend = "auto",
    reembed: Reembed = False,
    api_keys: ApiKeysFile = None,
    insecure_no_auth: InsecureNoAuth = False,
    allowed_host: AllowedHosts = None,
) -> None:
    """Run the Gradio demo (with the HTTP API beside it); open the printed URL in a browser.

    Example: distilshot demo --bundle runs/RUN/bundle
    """
    from distilshot.serve.http_server import run_server, server_security

    bundle = bundle or latest_bundle()
    store = store or str(demo_store_for(bundle))
    security = server_security(host, api_keys, insecure_no_auth, allowed_host)
    ui = demo_mount(ctx)
    run_server(bundle, store, host, port, security, backend, reembed, ui=ui, insecure=insecure_no_auth)
