"""`distilshot serve`: the HTTP API, with the Gradio demo mounted beside it unless --no-demo.

The options shared with `distilshot demo` (demo/cli.py) are defined here; those every serving command
shares, in serve/cli_options.py. uvicorn and FastAPI are imported inside the command, so `distilshot
--help` stays fast. The demo comes as a `Mount` hook from the `distilshot` command (distilshot/cli.py sets
it as the context object): serve never imports demo, and Gradio loads only once the server mounts it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from distilshot.errors import DistilshotError
from distilshot.serve.cli_options import Reembed, bundle_option, store_option

if TYPE_CHECKING:
    from distilshot.serve.http_server import Mount

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True)

DATA_HOME_ENV = "XDG_DATA_HOME"

Host = Annotated[
    str, typer.Option("--host", metavar="ADDRESS", help="Address to listen on (0.0.0.0 for every interface).")
]
Port = Annotated[int, typer.Option("--port", metavar="PORT", help="Port to listen on (0: any free port).")]
Backend = Annotated[
    str, typer.Option("--backend", metavar="NAME", help="Inference backend (auto picks the best here).")
]
MaxRequestMb = Annotated[
    int, typer.Option("--max-request-mb", metavar="MIB", help="Largest request body accepted, in MiB.")
]


def _without_default(flag: str, help: str, metavar: str) -> typer.models.OptionInfo:
    """An option whose default (none) the help does not show."""
    return typer.Option(flag, metavar=metavar, help=help, show_default=False)


ApiKeysFile = Annotated[
    Path | None,
    _without_default(
        "--api-keys",
        "File of API keys, one read:KEY or admin:KEY a line (or set DISTILSHOT_API_KEYS).",
        "FILE",
    ),
]
InsecureNoAuth = Annotated[
    bool,
    typer.Option("--insecure-no-auth", help="Listen on a non-loopback address without API keys."),
]
AllowedHosts = Annotated[
    list[str] | None,
    _without_default(
        "--allowed-host",
        "A Host name clients use for this server (repeatable; loopback names always; * any).",
        "NAME",
    ),
]
CorsOrigins = Annotated[
    list[str] | None,
    _without_default(
        "--cors-origin",
        "An origin (https://host[:port]) whose pages may call the API (repeatable; default none).",
        "ORIGIN",
    ),
]
WriteLimit = Annotated[
    int,
    typer.Option(
        "--write-limit", metavar="N", help="Writes a minute per key (per client without keys); 0: no limit."
    ),
]
RequestTimeout = Annotated[
    float,
    typer.Option(
        "--request-timeout", metavar="SECONDS", help="Seconds within which a request body must arrive."
    ),
]


def demo_store_for(bundle: Path) -> Path:
    """Where `distilshot demo` keeps a bundle's classes by default: $XDG_DATA_HOME/distilshot (else
    ~/.local/share/distilshot)/<run>.db, named by the run folder of runs/<run>/bundle (else by the bundle
    folder), so the run folder stays as training wrote it and each run has its own store; the folder is
    created."""
    folder = bundle.resolve()
    name = folder.parent.name if folder.name == "bundle" else folder.name
    data_home = Path(os.environ.get(DATA_HOME_ENV) or Path.home() / ".local" / "share")
    store = data_home / "distilshot" / f"{name}.db"
    store.parent.mkdir(parents=True, exist_ok=True)
    return store


def demo_mount(ctx: typer.Context) -> Mount:
    """The demo's Mount hook, which the `distilshot` command sets as the context object."""
    mount: Mount | None = ctx.find_root().obj
    if mount is None:
        raise DistilshotError("this command line has no demo to mount; pass --no-demo")
    return mount


@app.command()
def serve(
    ctx: typer.Context,
    bundle: Annotated[Path, bundle_option("Bundle folder to serve.")],
    store: Annotated[
        str, store_option("Support store: a SQLite file (created if absent) or postgresql://user@host/db.")
    ],
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
    """Serve the HTTP API (/v1, docs at /v1/docs) with the Gradio demo at /demo.

    Example: distilshot serve --bundle runs/RUN/bundle --store classes.db --port 8000
    """
    from distilshot.serve.http_server import run_server, server_security

    security = server_security(
        host, api_keys, insecure_no_auth, allowed_host, cors_origin, write_limit, request_timeout
    )
    ui = demo_mount(ctx) if demo else None
    run_server(
        bundle, store, host, port, security, backend, reembed, max_request_mb, ui, insecure=insecure_no_auth
    )
