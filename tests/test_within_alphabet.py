"""The within-alphabet protocol (Lake et al., Science 2015) on real Omniglot: every episode's classes come
from one alphabet and its support and query drawings from disjoint drawers, checked against the image
files themselves; a briefly trained model is far above chance under it, and `distilshot eval` reports
it by name beside the usual protocol."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from method_runs import cli, omniglot_folder

from distilshot.train.data.decode import decode_image
from distilshot.train.data.registry import load_split
from distilshot.train.evaluation import episode_sampler

EVALUATION = Path(os.environ["DISTILSHOT_DATA"]) / "omniglot" / "images_evaluation"


@pytest.fixture(scope="module")
def test_set():
    return load_split("omniglot", "test")


@pytest.fixture(scope="module")
def files() -> list[Path]:
    """The evaluation drawings in the loader's row order: characters sorted by alphabet/character, each
    character's drawings by file name."""
    return sorted(
        EVALUATION.glob("*/character*/*.png"), key=lambda f: (f.parent.parent.name, f.parent.name, f.name)
    )


@pytest.mark.parametrize(("n_way", "k_shot", "n_query"), [(20, 1, 15), (5, 5, 15), (5, 1, 1)])
def test_episodes_are_one_alphabet_with_disjoint_drawers(test_set, files, n_way, k_shot, n_query) -> None:
    assert len(files) == len(test_set.labels) == 13180
    for i in (0, 4321, 13179):  # rows are these files
        assert np.array_equal(test_set.images[i], decode_image(files[i], 28, 1))
    sampler = episode_sampler(
        "within-alphabet",
        test_set.labels,
        n_way,
        k_shot,
        n_query,
        200,
        7,
        test_set.class_groups,
        test_set.drawers,
    )
    alphabets = set()
    for episode in sampler:
        support = [[files[i] for i in row] for row in episode.support]
        query = [[files[i] for i in row] for row in episode.query]
        drawn = [f for row in support + query for f in row]
        (alphabet,) = {f.parent.parent.name for f in drawn}
        alphabets.add(alphabet)
        for c, (s, q) in enumerate(zip(support, query, strict=True)):
            # one character per episode class, n_way distinct characters
            assert {f.parent for f in s + q} == {support[c][0].parent}
        assert len({row[0].parent for row in support}) == n_way
        support_drawers = {f.stem.split("_")[1] for row in support for f in row}
        query_drawers = {f.stem.split("_")[1] for row in query for f in row}
        assert len(support_drawers) == k_shot and len(query_drawers) == n_query
        assert not support_drawers & query_drawers
    assert len(alphabets) >= 15  # 200 episodes visit most of the 20 alphabets


def test_alphabets_too_small_and_datasets_without_alphabets_are_refused(test_set, tmp_path: Path) -> None:
    from distilshot.errors import ConfigError
    from distilshot.train.pipeline import evaluate, model_spec
    from distilshot.train.presets import preset_config

    with pytest.raises(ValueError, match="within-group 48-way"):  # Malayalam, the largest, has 47
        episode_sampler(
            "within-alphabet", test_set.labels, 48, 1, 1, 1, 0, test_set.class_groups, test_set.drawers
        )
    folder = f"folder:{omniglot_folder(tmp_path / 'chars')}"
    spec = model_spec(preset_config("protonet", folder, "quick"), 6)
    with pytest.raises(ConfigError, match="within-alphabet protocol needs alphabets and drawers"):
        evaluate(spec.build(seed=0), spec, settings=((5, 1),), episodes=2, protocols=("within-alphabet",))


def test_a_briefly_trained_model_beats_chance_within_alphabet(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cli(
        "train",
        "--method",
        "protonet",
        "--dataset",
        "omniglot",
        "--epochs",
        "1",
        "--steps-per-epoch",
        "60",
        "--run-dir",
        run,
    )
    checkpoint = run / "checkpoints" / "best.pt"
    args = ["--way", "20", "--shot", "1", "--way", "5", "--shot", "1", "--episodes", "100", "--json"]
    within = json.loads(cli("eval", checkpoint, "--protocol", "within-alphabet", *args).stdout)
    assert [(r["sampling"], r["n_way"]) for r in within] == [("within-alphabet", 20), ("within-alphabet", 5)]
    assert all("within one alphabet, support and query by disjoint drawers" in r["protocol"] for r in within)
    assert within[0]["mean"] > 25 and within[1]["mean"] > 50  # chance: 5% and 20%
    both = json.loads(cli("eval", checkpoint, *args).stdout)  # omniglot's default: both protocols
    assert [r["sampling"] for r in both] == ["random", "random", "within-alphabet", "within-alphabet"]
    assert [r["mean"] for r in both[2:]] == [r["mean"] for r in within]  # seeded episodes
    saved = json.loads((run / "eval.json").read_text())
    assert {r["protocol"] for r in both} <= {r["protocol"] for r in saved}
