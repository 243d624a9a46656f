"""The demo's shipped example set is what `build` writes from the Omniglot evaluation alphabets."""

from __future__ import annotations

import os
from pathlib import Path

from distilshot.demo.examples import EXAMPLES, build, example_set


def relative_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_shipped_examples_equal_what_build_writes_from_the_dataset(tmp_path):
    evaluation = Path(os.environ["DISTILSHOT_DATA"]) / "omniglot" / "images_evaluation"
    build(evaluation, tmp_path / "omniglot")
    assert relative_files(tmp_path / "omniglot") == relative_files(EXAMPLES / "omniglot")
    examples = example_set("omniglot")
    assert examples is not None and len(examples.support) == 6 and len(examples.queries) == 6
    assert all(len(files) == 3 for files in examples.support.values())
    # each query is a drawing of one of the classes, by a drawer not among its support images
    for query in examples.queries:
        name, drawing = query.name.split(" - ")
        assert drawing not in {f.name for f in examples.support[name]}
        assert (evaluation / name.rsplit(" ", 1)[0].replace(" ", "_")).is_dir()
    assert (EXAMPLES / "omniglot" / "LICENSE").read_text().startswith("The MIT License")
    assert example_set("cifar-fs") is None
