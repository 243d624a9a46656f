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
