"""Helpers for the end-to-end tests of multi-stage methods: the CLI in a subprocess, and a tiny image
folder of real Omniglot characters, so that every stage (a ResNet-12 one included) trains and validates
in seconds."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

DISTILSHOT = str(Path(sys.executable).with_name("distilshot"))
BACKGROUND = Path(os.environ["DISTILSHOT_DATA"]) / "omniglot" / "images_background"


def cli(*args: object, ok: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([DISTILSHOT, *map(str, args)], capture_output=True, text=True, timeout=600)
    if ok:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode == 2, (result.returncode, result.stderr)
        assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    return result


def omniglot_folder(root: Path) -> Path:
    """train/val/test subfolders of 6/5/5 Latin and Greek characters, 20 drawings each."""
    characters = [BACKGROUND / "Latin" / f"character{i:02d}" for i in range(1, 12)]
    characters += [BACKGROUND / "Greek" / f"character{i:02d}" for i in range(1, 6)]
    for split, chosen in (("train", characters[:6]), ("val", characters[6:11]), ("test", characters[11:])):
        for source in chosen:
            shutil.copytree(source, root / split / f"{source.parent.name}-{source.name}")
    return root
