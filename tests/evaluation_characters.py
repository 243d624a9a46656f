"""The five Omniglot characters the end-to-end tests register (from the evaluation alphabets, which the
session's trained model never sees), and the drawings of any evaluation character."""

import os
from pathlib import Path

EVALUATION = Path(os.environ["DISTILSHOT_DATA"]) / "omniglot" / "images_evaluation"
CHARACTERS = [
    "Angelic/character03",
    "Keble/character07",
    "Manipuri/character11",
    "Oriya/character02",
    "Tibetan/character05",
]


def drawings(character: str) -> list[Path]:
    """The 20 drawings of `character` ("<Alphabet>/<characterNN>"), in file-name order."""
    return sorted((EVALUATION / character).glob("*.png"))
