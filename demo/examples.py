"""The demo's one-click example support set, shipped with the package (demo/examples/).

For Omniglot models: six characters of the evaluation alphabets (never seen in training), three
drawings each as support and one drawing by another person as a query, copied byte for byte from the
public Omniglot images (MIT licence, Brenden Lake; see demo/examples/omniglot/LICENSE). `build` wrote
them from the dataset, and a test checks the shipped files still equal what it writes.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from distilshot.errors import DistilshotError

EXAMPLES = Path(__file__).parent / "examples"
ALPHABET_STEP = 3  # every third evaluation alphabet, for variety
CLASSES = 6
SHOTS = 3


@dataclass(frozen=True)
class ExampleSet:
    description: str
    support: dict[str, list[Path]]  # class name -> support images
    queries: list[Path]  # one per class, by another drawer than its support images


def example_set(dataset: str) -> ExampleSet | None:
    """The shipped example set for a model trained on `dataset`, if there is one."""
    if not dataset.startswith("omniglot"):
        return None
    root = EXAMPLES / "omniglot"
    support = {folder.name: sorted(folder.glob("*.png")) for folder in sorted((root / "support").iterdir())}
    queries = sorted((root / "queries").glob("*.png"))
    return ExampleSet(f"{len(support)} Omniglot characters x {SHOTS} drawings", support, queries)


def build(evaluation: Path, out: Path) -> None:
    """Writes the Omniglot example set from `images_evaluation` (alphabet/characterNN/*.png) into `out`."""
    if not evaluation.is_dir():
        raise DistilshotError(f"{evaluation} is not Omniglot's images_evaluation folder")
    alphabets = sorted(p for p in evaluation.iterdir() if p.is_dir())[::ALPHABET_STEP][:CLASSES]
    for alphabet in alphabets:
        character = sorted(p for p in alphabet.iterdir() if p.is_dir())[0]
        name = f"{alphabet.name.replace('_', ' ')} {int(character.name.removeprefix('character'))}"
        drawings = sorted(character.glob("*.png"))
        target = out / "support" / name
        target.mkdir(parents=True, exist_ok=True)
        for drawing in drawings[:SHOTS]:
            shutil.copyfile(drawing, target / drawing.name)
        (out / "queries").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(drawings[SHOTS], out / "queries" / f"{name} - {drawings[SHOTS].name}")
