"""The `distilshot` command. Subcommands come from the stages and are imported only when they run,
so serving commands start fast and never import torch. It also joins the demo to the server, which
may not import it.

A command whose stage needs an extra that is not installed (torch for `train`, FastAPI for `serve`, ...)
is still listed, and says which extra to install. Usage errors and user errors are one `error:` line on
stderr with exit status 2. Every command's help has the same placeholders: UPPERCASE words, flags bare.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer
import typer.core
import typer.main
from typer._click import exceptions as click_errors  # typer (pinned in pyproject.toml) vendors click
from typer.core import TyperArgument, TyperCommand, TyperOption

from distilshot import __version__
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
    "reembed": "distilshot.serve.cli",
    "runs": "distilshot.train.runs",
    "serve": "distilshot.serve.http_cli",
    "demo": "distilshot.demo.cli",
}

# top-level module -> the pyproject.toml extra that installs it
EXTRAS: dict[str, str] = {
    **dict.fromkeys(("torch", "onnx", "onnxscript", "sklearn", "matplotlib"), "train"),
    **dict.fromkeys(("fastapi", "starlette", "uvicorn", "multipart", "python_multipart"), "http"),
    "swagger_ui_bundle": "http",
    "gradio": "demo",
    **dict.fromkeys(("psycopg", "psycopg_pool"), "postgres"),
    "openvino": "openvino",
    "onnxruntime": "cpu",
}


def missing_extra(error: ModuleNotFoundError, command: str | None) -> tuple[str, DistilshotError] | None:
    """The extra that provides a module that is not there, and the error that says how to install it
    (None: no extra provides it, a bug)."""
    module = (error.name or "").split(".")[0]
    extra = EXTRAS.get(module)
    if extra is None:
        return None
    if command == "demo" and extra == "http":
        extra = "demo"  # which includes http; naming http would only lead to the next missing module
    what = f"`distilshot {command}`" if command else "this command"
    alternative = " (or 'distilshot[gpu]' on a CUDA machine)" if extra == "cpu" else ""
    return extra, DistilshotError(
        f"{what} needs {module}, which is not installed: install the {extra} extra, "
        f"pip install 'distilshot[{extra}]'{alternative} (in a checkout: pip install -e '.[{extra}]')"
    )


def unavailable(name: str, extra: str, problem: DistilshotError) -> TyperCommand:
    """Stands for a command whose stage cannot be imported here: listed, and says what to install."""

    def refuse() -> None:
        raise problem

    return TyperCommand(
        name,
        callback=refuse,
        help=f"Needs the {extra} extra, not installed here.",
        add_help_option=False,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},  # refuse them all
    )


def uniform_help(command: TyperCommand, ctx: typer.Context | None = None) -> TyperCommand:
    """One style of placeholder in every stage's help: flags show no value, an option without a
    metavar shows its name in capitals (--epochs EPOCHS), and an argument only its metavar. With `ctx`,
    the help option too (it is made for a context)."""
    for param in command.params if ctx is None else command.get_params(ctx):
        if isinstance(param, TyperOption) and param.is_flag:
            param.metavar = ""
        elif isinstance(param, TyperOption) and param.metavar is None:
            param.metavar = (param.name or "value").upper()
        elif isinstance(param, TyperArgument):
            param.display_type_rich = _no_type  # typer adds the annotation, e.g. <list[Path]>
    return command


def _no_type(ctx: typer.Context) -> None:
    return None


class LazyStageGroup(typer.core.TyperGroup):
    """Imports a stage's command module on first use of one of its commands."""

    def list_commands(self, ctx: Any) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        module_name = COMMANDS.get(cmd_name)
        if module_name is None:
            return None
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            missing = missing_extra(error, cmd_name)
            if missing is None:
                raise
            return unavailable(cmd_name, *missing)
        command = typer.main.get_group(module.app).get_command(ctx, cmd_name)
        return None if command is None else uniform_help(command, ctx)

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""  # a flag, as uniform_help shows them
        return option


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


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"distilshot {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_print_version, help="Print the version and exit."),
    ] = False,
) -> None:
    """Train, export and serve distilled few-shot image classifiers.

    Example: distilshot classify --bundle runs/RUN/bundle --store classes.db query.png
    """
    ctx.obj = mount_demo


def main(argv: list[str] | None = None) -> None:
    """Entry point: usage and user errors go to stderr as one line and exit with status 2, without a
    traceback; so does a module that an uninstalled extra provides."""
    args = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in args if a in COMMANDS), None)
    try:
        status = uniform_help(typer.main.get_command(app)).main(
            args=args, prog_name="distilshot", standalone_mode=False
        )
    except click_errors.NoArgsIsHelpError as usage:
        usage.show()  # the help text
        status = usage.exit_code
    except click_errors.UsageError as usage:
        where = f"distilshot {command}" if command else "distilshot"
        _fail(f"{usage.format_message().rstrip('.')}; see `{where} --help`")
    except click_errors.ClickException as error:
        _fail(error.format_message())
    except typer.Abort:
        _fail("aborted")
    except DistilshotError as error:
        _fail(str(error))
    except ModuleNotFoundError as error:
        missing = missing_extra(error, command)
        if missing is None:
            raise
        _fail(str(missing[1]))
    if isinstance(status, int) and status:
        sys.exit(status)


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)
