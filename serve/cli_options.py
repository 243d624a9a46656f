"""The command-line options that `distilshot register | classify | ...` (serve/cli.py) and `distilshot
serve | demo` (serve/http_cli.py, demo/cli.py) share: their flags and environment variables are defined
once here, each command giving its own help."""

from __future__ import annotations

from typing import Annotated

import typer

BUNDLE_ENV, STORE_ENV = "DISTILSHOT_BUNDLE", "DISTILSHOT_STORE"


def bundle_option(help: str) -> typer.models.OptionInfo:
    """--bundle / -b DIR, or DISTILSHOT_BUNDLE."""
    return typer.Option("--bundle", "-b", metavar="DIR", envvar=BUNDLE_ENV, help=help)


def store_option(help: str) -> typer.models.OptionInfo:
    """--store / -s STORE, or DISTILSHOT_STORE. Take it as text, not Path: a Path would turn
    postgresql://host into postgresql:/host."""
    return typer.Option("--store", "-s", metavar="STORE", envvar=STORE_ENV, help=help)


Reembed = Annotated[
    bool,
    typer.Option(
        "--reembed", help="Re-embed the store first if it holds another model's embeddings (see reembed)."
    ),
]
