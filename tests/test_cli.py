"""The root command: lazy stage dispatch, option parsing shared by train and train-export, and user
errors reported on one line with exit status 2."""

import subprocess
import sys
from pathlib import Path

import pytest
import typer

from distilshot.train.cli import parse_params, request_from_options

DISTILSHOT = str(Path(sys.executable).with_name("distilshot"))


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DISTILSHOT, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_help_lists_every_stage_command() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in ("train", "eval", "export", "train-export", "register", "classify", "classes", "remove"):
        assert command in result.stdout


def test_unknown_choices_are_user_errors_that_leave_no_run_folder(tmp_path: Path) -> None:
    for args, message in [
        (["train", "--method", "maml"], "unknown method 'maml'"),
        (["train", "--preset", "huge"], "unknown preset 'huge'"),
        (["train", "--dataset", "imagenet-21k"], "unknown dataset 'imagenet-21k'"),
    ]:
        result = run(*args, cwd=tmp_path)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
        assert list(tmp_path.iterdir()) == [], f"{args} left {list(tmp_path.iterdir())}"


def test_set_parses_json_values_into_method_params() -> None:
    assert parse_params(["rotation_augment=true", "alpha=2.5", "name=abc", "ways=[1, 2]"]) == {
        "rotation_augment": True,
        "alpha": 2.5,
        "name": "abc",
        "ways": [1, 2],
    }
    with pytest.raises(typer.BadParameter):
        parse_params(["no-equals-sign"])
    request = request_from_options(
        "pretrain", "omniglot", "convnet4", "quick", 3, None, None, None, 1, "cpu", ["rotation_augment=true"]
    )
    cfg = request.stage_config(request.stages[0])
    assert cfg.method_params == {"rotation_augment": True} and cfg.epochs == 3 and cfg.seed == 1


# Runs the `distilshot` command with the top-level modules named in argv[1] missing, as on an install
# without the extras that provide them.
WITHOUT_MODULES = """
import sys
from importlib.abc import MetaPathFinder

class Missing(MetaPathFinder):
    def __init__(self, names):
        self.names = names

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Missing(set(sys.argv[1].split(","))))
from distilshot.cli import main
main(sys.argv[2:])
"""
# What the `cpu` extra alone does not install.
NOT_IN_RUNTIME = "torch,onnx,onnxscript,sklearn,matplotlib,fastapi,starlette,uvicorn,multipart,gradio"


def run_without(modules: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", WITHOUT_MODULES, modules, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=cwd)


def test_a_runtime_only_install_names_the_extra_each_command_needs(tmp_path: Path) -> None:
    listing = run_without(NOT_IN_RUNTIME, "--help")
    assert listing.returncode == 0, listing.stderr
    assert "Needs the train extra" in listing.stdout and "classify" in listing.stdout
    for args, extra, module in [
        (["train", "--method", "bml"], "train", "torch"),
        (["eval", "run/checkpoints/best.pt"], "train", "torch"),
        (["export", "run/checkpoints/best.pt"], "train", "onnx"),
        (["serve", "--bundle", "b", "--store", "s.db"], "http", "starlette"),
        (["demo", "--bundle", "b"], "demo", "starlette"),
    ]:
        result = run_without(NOT_IN_RUNTIME, *args, cwd=tmp_path)
        assert result.returncode == 2 and result.stdout == "", (args, result.stderr)
        assert result.stderr == (
            f"error: `distilshot {args[0]}` needs {module}, which is not installed: "
            f"install the {extra} extra, pip install 'distilshot[{extra}]' "
            f"(in a checkout: pip install -e '.[{extra}]')\n"
        ), args
    # what the runtime needs is there: the serving commands run
    runs = run_without(NOT_IN_RUNTIME, "runs", str(tmp_path), "--json")
    assert runs.returncode == 0 and runs.stdout == "[]\n", runs.stderr


def test_a_module_no_extra_provides_is_a_bug_with_its_traceback() -> None:
    result = run_without("numpy", "info", "--bundle", "b")  # a dependency of every install
    assert result.returncode == 1 and "ModuleNotFoundError: No module named 'numpy'" in result.stderr


def test_version_and_usage_errors() -> None:
    assert run("--version").stdout == "distilshot 0.1.0\n"
    result = run("train", "--epochs", "many")
    assert result.returncode == 2 and result.stderr.startswith("error: Invalid value for '--epochs'")
    assert len(result.stderr.splitlines()) == 1 and result.stdout == ""
