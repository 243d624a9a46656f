"""`distilshot serve`: the HTTP API, with the Gradio demo mounted beside it unless --no-demo.

The options shared with `distilshot demo` (demo/cli.py) are defined here. uvicorn and FastAPI are
imported inside the command, so `distilshot --help` stays fast. The demo comes as a `Mount` hook from
the `distilshot` command (distilshot/cli.py sets it as the context object): serve never imports demo,
and Gradio loads only once the server mounts it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from distilshot.errors import DistilshotError

if TYPE_CHECKING:
    from distilshot.serve.http_server import Mount

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True)

Host = Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0 for every interface).")]
Port = Annotated[int, typer.Option("--port", help="Port to listen on (0: any free port).")]
Backend = Annotated[str, typer.Option("--backend", help="Inference backend (auto picks the best here).")]
Reembed = Annotated[
    bool,
    typer.Option("--reembed", help="If the store holds another model's embeddings, re-embed its images."),
]
MaxRequestMb = Annotated[int, typer.Option("--max-request-mb", help="Largest request body accepted, MiB.")]


def _without_default(flag: str, help: str) -> typer.models.OptionInfo:
    """An option whose default (none) the help does not show."""
    return typer.Option(flag, help=help, show_default=False)


ApiKeysFile = Annotated[
    Path | None,
    _without_default(
        "--api-keys", "File of API keys, one read:KEY or admin:KEY a line (or set DISTILSHOT_API_KEYS)."
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
    ),
]
CorsOrigins = Annotated[
    list[str] | None,
    _without_default(
        "--cors-origin",
        "An origin (https://host[:port]) whose pages may call the API (repeatable; default none).",
    ),
]
WriteLimit = Annotated[
    int,
    typer.Option("--write-limit", help="Writes a minute per key (per client without keys); 0: no limit."),
]
RequestTimeout = Annotated[
    float, typer.Option("--request-timeout", help="Seconds within which a request body must arrive.")
]


def demo_mount(ctx: typer.Context) -> Mount:
    """The demo's Mount hook, which the `distilshot` command sets as the context object."""
    mount: Mount | None = ctx.find_root().obj
    if mount is None:
        raise DistilshotError("this command line has no demo to mount; pass --no-demo")
    return mount


@app.command()
def serve(
    ctx: typer.Context,
    bundle: Annotated[Path, typer.Option("--bundle", "-b", help="Bundle folder to serve.")],
    store: Annotated[
        str,
        typer.Option(
            "--store",
            "-s",
            help="Support store: a SQLite file (created if absent) or postgresql://user@host/db.",
        ),
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
    """Serve the HTTP API (/v1, OpenAPI at /v1/openapi.json) with the Gradio demo at /demo."""
    from distilshot.serve.http_server import run_server, server_security

    security = server_security(
        host, api_keys, insecure_no_auth, allowed_host, cors_origin, write_limit, request_timeout
    )
    ui = demo_mount(ctx) if demo else None
    run_server(
        bundle, store, host, port, security, backend, reembed, max_request_mb, ui, insecure=insecure_no_auth
    )
