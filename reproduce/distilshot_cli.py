"""The `distilshot` command of this venv, run by the reproduce scripts with its command line echoed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DISTILSHOT = str(Path(sys.executable).with_name("distilshot"))


def cli(*args: str) -> str:
    """Runs `distilshot ARGS` and returns its stdout; a failure ends the script with its status."""
    print("$ distilshot " + " ".join(args), flush=True)
    result = subprocess.run([DISTILSHOT, *args], stdout=subprocess.PIPE, text=True)
    if result.returncode != 0:
        sys.exit(f"distilshot {' '.join(args)} failed with status {result.returncode}")
    return result.stdout
