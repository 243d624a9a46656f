"""The export parity rule: rounding may flip a near tie, nothing else may change a prediction."""

from pathlib import Path

import numpy as np
import pytest
import torch

from distilshot.core.head import PrototypeHead
from distilshot.core.manifest import Head
from distilshot.export.bundle import write_bundle
from distilshot.export.parity import check_parity, logit_bounds, near_tie_mask
from distilshot.train.data.registry import load_split
from distilshot.train.methods.base import prototype_logits
from distilshot.train.pipeline import model_spec
from distilshot.train.presets import preset_config


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_logit_bounds_cover_what_rounding_and_small_embedding_errors_do(metric: str) -> None:
    rng = np.random.default_rng(0)
    head = Head(metric, {"a": 1.0, "b": 0.5}, 2.0)
    n_way, k_shot, n, dims = 5, 3, 40, {"a": 64, "b": 640}
    support = {k: (rng.standard_normal((n_way * k_shot, d)) * 3).astype(np.float32) for k, d in dims.items()}
    query = {k: (rng.standard_normal((n, d)) * 3).astype(np.float32) for k, d in dims.items()}
    # the second pipeline's embeddings: off by a relative 1e-5, as another kernel order might give
    noisy = {
        k: {k2: (v * (1 + 1e-5 * rng.standard_normal(v.shape))).astype(np.float32) for k2, v in side.items()}
        for k, side in (("support", support), ("query", query))
    }
    ours = prototype_logits(
        {k: torch.from_numpy(v) for k, v in support.items()},
        {k: torch.from_numpy(v) for k, v in query.items()},
        n_way,
        k_shot,
        head,
    ).numpy()
    serve = PrototypeHead(head)
    their_means = {k: v.reshape(n_way, k_shot, -1).mean(1) for k, v in noisy["support"].items()}
    theirs = serve.logits(noisy["query"], serve.prepare(list("abcde"), their_means))
    our_means = {k: v.reshape(n_way, k_shot, -1).mean(1) for k, v in support.items()}
    bounds = logit_bounds(head, (query, noisy["query"]), (our_means, their_means))
    assert (np.abs(ours.astype(np.float64) - theirs) <= bounds).all()
    # and the band is narrow: far below the spread of the logits, so it excuses only real near ties
    assert bounds.max() < 1e-3 * np.ptp(ours)


def test_near_ties_are_the_queries_whose_margin_is_inside_the_band() -> None:
    logits = np.array([[1.0, 0.99995, 0.0], [1.0, 0.5, 0.0], [0.2, 0.0, 0.19]])
    bounds = np.full_like(logits, 3e-5)
    assert near_tie_mask(logits, bounds).tolist() == [True, False, False]
    bounds[2, 2] = 0.02  # 0.2 - 0.19 <= 3e-5 + 0.02
    assert near_tie_mask(logits, bounds).tolist() == [True, False, True]


def test_a_wrong_head_or_another_model_is_not_faithful(tmp_path: Path) -> None:
    train = load_split("omniglot", "train")
    spec = model_spec(preset_config("protonet", "omniglot", "quick"), train.num_classes)
    model, other = spec.build(seed=0).eval(), spec.build(seed=1).eval()
    with torch.no_grad():  # random BatchNorm statistics so the two models embed differently
        for module in other.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_()
    bundle, _ = write_bundle(model, spec, tmp_path / "bundle")
    test = load_split("omniglot", "test")
    same = check_parity(model, spec, bundle, test, episodes=10)
    assert same.faithful and same.disagreements == 0, same
    # serve scores by Euclidean distance, this PyTorch head by cosine: tiny embedding differences, yet
    # predictions differ by more than any rounding explains
    model.head = lambda: Head("cosine", {"embedding": 1.0}, 1.0)
    wrong_head = check_parity(model, spec, bundle, test, episodes=10)
    assert wrong_head.disagreements > 0 and not wrong_head.faithful, wrong_head
    # another model's embeddings are so far off that nearly every query falls inside the band
    another = check_parity(other, spec, bundle, test, episodes=10)
    assert another.near_ties > 0.5 * another.queries and not another.faithful, another
