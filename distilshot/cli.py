"""The `distilshot` command. Subcommands come from the stages and are imported only when they run,
so serving commands start fast and never import torch. It also joins the demo to the server, which
may not import it."""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

import typer
import typer.core
import typer.main

from distilshot.errors import DistilshotError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from distilshot.serve.classifier import FewShotClassifier
    from distilshot.serve.security import ApiKeys

# command name -> module whose typer `app` defines it
COMMANDS: dict[str, str] = {
    "train": "distilshot.train.cli",
    "eval": "distilshot.train.cli",
    "export": "distilshot.export.cli",
    "train-export": "distilshot.export.cli",
    "generator": "distilshot.export.cli",
    "adapt": "distilshot.export.cli",
    "register": "distilshot.serve.cli",
    "classify": "distilshot.serve.cli",
    "classes": "distilshot.serve.cli",
    "remove": "distilshot.serve.cli",
    "info": "distilshot.serve.cli",
    "export-store": "distilshot.serve.cli",
    "import-store": "distilshot.serve.cli",
    "serve": "distilshot.serve.http_cli",
    "demo": "distilshot.demo.cli",
}


class LazyStageGroup(typer.core.TyperGroup):
    """Imports a stage's command module on first use of one of its commands."""

    def list_commands(self, ctx: Any) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        module_name = COMMANDS.get(cmd_name)
        if module_name is None:
            return None
        stage = typer.main.get_group(importlib.import_module(module_name).app)
        return stage.get_command(ctx, cmd_name)


app = typer.Typer(
    cls=LazyStageGroup,
    help="Train, export and serve distilled few-shot image classifiers.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def mount_demo(app: FastAPI, classifier: FewShotClassifier, path: str, keys: ApiKeys | None) -> object:
    """The Mount hook (serve/http_server.py) that `distilshot serve` and `distilshot demo` hand to the
    server: serve never imports demo, so the command that maps every stage provides it. Gradio is
    imported only now, once the server has loaded its classifier."""
    from distilshot.demo.app import mount_demo

    return mount_demo(app, classifier, path, keys)


@app.callback()
def root(ctx: typer.Context) -> None:
    """Train, export and serve distilled few-shot image classifiers."""
    ctx.obj = mount_demo


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors go to stderr as one line and exit with status 2, without a traceback."""
    try:
        typer.main.get_command(app).main(args=argv, prog_name="distilshot")
    except DistilshotError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
