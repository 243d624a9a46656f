"""BML: every loss term against values worked out by hand, the total loss against the authors' code, the
elastic margin's schedule, the two-view architecture on both backbones, a training step on real CIFAR-FS,
export parity of the fused two-output head, the paper's learning-rate schedule, and a tiny
`distilshot train --method bml` run."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from method_runs import assert_exports_faithfully, train_steps
from torch import nn

from distilshot.core.manifest import Head
from distilshot.errors import ConfigError
from distilshot.train.augment import normalize, to_float
from distilshot.train.backbones import build_backbone
from distilshot.train.backbones.base import Backbone
from distilshot.train.checkpoint import load_model
from distilshot.train.data.registry import load_split
from distilshot.train.methods.base import Batch
from distilshot.train.methods.bml import (
    BML,
    dense_cross_entropy,
    elastic_margin,
    local_distances,
    local_loss,
    symmetric_kl,
)
from distilshot.train.pipeline import model_spec
from distilshot.train.presets import preset_config
from distilshot.train.samplers import EpisodeSampler
from distilshot.train.trainer import BatchMaker, build_optimizer

DISTILSHOT = str(Path(sys.executable).with_name("distilshot"))


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_dense_global_cross_entropy_averages_positions() -> None:
    # one image of class 0, two positions with class scores (2, 0) and (0, 1)
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])  # [1, 2 classes, 1, 2]
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(1.0))) / 2
    assert dense_cross_entropy(logits, torch.tensor([0])).item() == pytest.approx(expected, rel=1e-6)


def tiny_episode() -> tuple[torch.Tensor, torch.Tensor]:
    """2-way 1-shot 1-query, one channel, 1x2 maps: supports a = [0, 0], b = [2, 4]; queries [1, 1] of a
    and [2, 3] of b. Position-wise squared distances: query a -> a (1, 1), b (1, 9); query b -> a (4, 9),
    b (0, 1)."""
    support = torch.tensor([[0.0, 0.0], [2.0, 4.0]]).view(2, 1, 1, 2)
    query = torch.tensor([[1.0, 1.0], [2.0, 3.0]]).view(2, 1, 1, 2)
    return support, query


def test_local_loss_with_elastic_margin_by_hand() -> None:
    support, query = tiny_episode()
    labels = torch.tensor([0, 1])
    d = local_distances(support, query, n_way=2, k_shot=1)
    assert torch.equal(d, torch.tensor([[[1.0, 1.0], [1.0, 9.0]], [[4.0, 9.0], [0.0, 1.0]]]))
    # halfway through training: d_EL = 5.5 * 0.5 * sigmoid(0.1 * (d_pos - d_nearest_negative))
    margin = elastic_margin(d, labels, factor=0.5)
    m = 2.75 * torch.tensor([[sigmoid(0.0), sigmoid(-0.8)], [sigmoid(-0.4), sigmoid(-0.8)]])
    assert torch.allclose(margin, m)
    # CE of two classes = log(1 + exp(logit_other - logit_true)), logit = -(distance + margin if positive)
    expected = [
        math.log1p(math.exp(-1.0 + 1.0 + m[0, 0].item())),
        math.log1p(math.exp(-9.0 + 1.0 + m[0, 1].item())),
        math.log1p(math.exp(-4.0 + 0.0 + m[1, 0].item())),
        math.log1p(math.exp(-9.0 + 1.0 + m[1, 1].item())),
    ]
    assert local_loss(d, labels, margin).item() == pytest.approx(sum(expected) / 4, rel=1e-6)


def test_authors_code_options_skip_confident_positions_and_pool_prototypes() -> None:
    support, query = tiny_episode()
    labels = torch.tensor([0, 1])
    d = local_distances(support, query, n_way=2, k_shot=1)
    # only query a's first position is undecided (0.5 / 0.5); everywhere else p(positive) > 0.5
    margin = elastic_margin(d, labels, factor=0.5, skip_confident=True)
    assert torch.allclose(margin, torch.tensor([[1.375, 0.0], [0.0, 0.0]]))
    # pooled prototypes a = 0, b = 3: query a -> (1, 1) vs (4, 4); query b -> (4, 9) vs (1, 0)
    pooled = local_distances(support, query, n_way=2, k_shot=1, prototypes="pooled")
    assert torch.equal(pooled, torch.tensor([[[1.0, 1.0], [4.0, 4.0]], [[4.0, 9.0], [1.0, 0.0]]]))
    plain = local_loss(pooled, labels, torch.zeros(2, 2)).item()
    assert plain == pytest.approx((3 * math.log1p(math.exp(-3.0)) + math.log1p(math.exp(-9.0))) / 4, rel=1e-6)


def test_symmetric_kl_by_hand() -> None:
    # at T = 2: softmax(a / T) = (1/2, 1/2), softmax(b / T) = (3/4, 1/4)
    a = torch.tensor([[0.0, 0.0]], requires_grad=True)
    b = torch.tensor([[2 * math.log(3.0), 0.0]], requires_grad=True)
    kl = symmetric_kl(a, b, temperature=2.0)
    # KL(a||b) + KL(b||a) = sum (p_a - p_b) log(p_a / p_b) = 1/4 log(3/2) + 1/4 log 2 = log(3) / 4; x T^2
    assert kl.item() == pytest.approx(math.log(3.0), rel=1e-6)
    kl.backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0  # each view learns from the other


def identity_bml(**params) -> BML:
    """Both views and the trunk are identities over 2-channel 1x1 images; the classifier reads the two
    channels as the scores of classes 0 and 1 and gives class 2 a score of 0."""
    backbone = Backbone([nn.Identity(), nn.Identity()], pooling="flatten", in_channels=2, image_size=1)
    method = BML(backbone, num_classes=3, **params)
    with torch.no_grad():
        method.classifier.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]).view(3, 2, 1, 1))
        method.classifier.bias.zero_()
    return method


def test_paper_text_loss_by_hand_and_the_margin_follows_the_epoch() -> None:
    # supports a = (0, 0), b = (2, 0); queries (0.5, 0) of a and (2, 1) of b; dataset labels 0, 1
    points = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.5, 0.0], [2.0, 1.0]]).view(4, 2, 1, 1)
    batch = Batch(points, torch.tensor([0, 1, 0, 1]), n_way=2, k_shot=1, n_query=1)
    method = identity_bml(variant="paper-text")
    # global: class scores (x1, x2, 0)
    global_term = (
        math.log(3.0)
        + math.log(math.exp(2.0) + 2.0)
        + math.log(math.exp(0.5) + 2.0)
        - 0.5
        + math.log(math.exp(2.0) + math.exp(1.0) + 1.0)
        - 1.0
    ) / 4
    # local: squared distances (0.25, 2.25) and (5, 1); d_EL = 5.5 e/E sigmoid(0.1 (d_pos - d_neg)), with
    # epochs counted from 1: the trainer's epoch index 4 of 10 is e/E = 0.5, index 9 is 1
    for index, factor in ((4, 0.5), (9, 1.0)):
        method.set_progress(index, 10)
        m_a, m_b = 5.5 * factor * sigmoid(0.1 * (0.25 - 2.25)), 5.5 * factor * sigmoid(0.1 * (1.0 - 5.0))
        local = (math.log1p(math.exp(m_a - 2.0)) + math.log1p(math.exp(m_b - 4.0))) / 2
        out = method.loss(batch)
        assert out.metrics["global"] == pytest.approx(global_term, rel=1e-6)
        assert out.metrics["local"] == pytest.approx(local, rel=1e-6)
        assert out.metrics["mutual"] == 0.0  # identical views: the weights of Eq. 9 are pinned below
        assert out.loss.item() == pytest.approx(4 * global_term + 2 * local, rel=1e-6)
        assert out.metrics["acc"] == 1.0
    method.set_progress(0, 10)
    assert method.elastic_factor == pytest.approx(0.1)  # the first epoch already pushes


def authors_episode_bml(**params) -> tuple[BML, Batch]:
    """The fixture of the authors'-code test: trunk = identity, global view = the identity 1x1 convolution,
    local view another one, a 4-class 1x1 classifier with bias; a 3-way 2-shot 1-query episode of 2-channel
    1x2 maps (class-major), dataset labels 2, 0, 3 for the three ways."""
    conv = nn.Conv2d(2, 2, kernel_size=1, bias=False)
    backbone = Backbone([nn.Identity(), conv], pooling="flatten", in_channels=2, image_size=1)
    method = BML(backbone, num_classes=4, **params)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(2, 2, 1, 1))
        method.local_stage.weight.copy_(torch.tensor([[0.5, 1.0], [-1.0, 0.5]]).view(2, 2, 1, 1))
        classifier = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.5], [0.5, -1.0]])
        method.classifier.weight.copy_(classifier.view(4, 2, 1, 1))
        method.classifier.bias.copy_(torch.tensor([0.0, 0.1, -0.1, 0.2]))
    maps = [
        [[0.2, 1.0], [0.5, -0.3]], [[0.6, 0.4], [0.1, 0.3]],  # supports of way 0
        [[-0.4, 0.8], [1.2, 0.9]], [[0.3, -0.5], [0.7, 1.1]],  # way 1
        [[1.1, 0.2], [-0.6, 0.4]], [[0.9, 0.7], [-0.2, -0.8]],  # way 2
        [[0.5, 0.3], [0.2, 0.6]], [[0.1, 0.5], [0.9, 0.2]], [[0.8, 0.6], [0.0, -0.4]],  # queries of ways 0-2
    ]  # fmt: skip
    labels = torch.tensor([2, 2, 0, 0, 3, 3, 2, 0, 3])
    return method, Batch(torch.tensor(maps).view(9, 2, 1, 2), labels, n_way=3, k_shot=2, n_query=1)


AUTHORS_TERMS = {  # global, local, mutual of the code at epochs 1, 5 and 10 of 10
    1: (1.5763714402205502, 0.971333898456158, 0.18665174986204863),
    5: (1.5763714402205502, 1.547342580411297, 0.18665174986204863),
    10: (1.5763714402205502, 2.3970268679845934, 0.18665174986204863),
}


@pytest.mark.parametrize(
    ("params", "epoch", "expected"),
    [
        ({}, 1, 4.217402653828283),
        ({}, 5, 4.793411335783422),
        ({}, 10, 5.643095623356719),
        ({"variant": "paper-text", "prototypes": "pooled", "skip_confident": True}, 5, 9.586822671566845),
    ],
)
def test_total_loss_matches_the_authors_code(params: dict, epoch: int, expected: float) -> None:
    """Expected values: `train_bml_on_epoch` of ZZQzzq/BML@0a56f014c0309d3789be404d9263f17d3354c1c7,
    main_multi_gpu.py, with BMLBuilder's forward (model/BML.py, model/base.py) and DistillKL(T=4)
    (utils/util.py), on this episode in float64 at `epoch` of 10, --weights 2_1_0.5 (its default) and, for
    the paper-text row, 4_2_1. Two of the six query positions are confident (no margin) and the views
    differ, so the mutual term and its weight count."""
    torch.set_default_dtype(torch.float64)
    try:
        method, batch = authors_episode_bml(**params)
        method.set_progress(epoch - 1, 10)  # the trainer counts epochs from 0
        out = method.loss(batch)
    finally:
        torch.set_default_dtype(torch.float32)
    assert (out.metrics["global"], out.metrics["local"], out.metrics["mutual"]) == pytest.approx(
        AUTHORS_TERMS[epoch], rel=1e-6
    )
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)


def test_embeddings_are_relu_sqrt_of_both_views_and_the_head_sums_them() -> None:
    method = identity_bml().eval()
    out = method.embed(torch.tensor([[-1.0, 4.0]]).view(1, 2, 1, 1))
    assert set(out) == set(method.output_names) == {"global", "local"}
    for embedding in out.values():
        assert torch.equal(embedding, torch.tensor([[0.0, 2.0]]))
    assert method.head() == Head(metric="euclidean", weights={"global": 1.0, "local": 1.0}, temperature=1.0)


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ConfigError, match="prototypes"):
        identity_bml(prototypes="centroid")
    with pytest.raises(ConfigError, match="variant"):
        identity_bml(variant="paper")
    single = Backbone([nn.Identity()], pooling="flatten", in_channels=1, image_size=1)
    with pytest.raises(ConfigError, match="two stages"):
        BML(single, num_classes=2)


@pytest.mark.parametrize(
    ("backbone", "channels", "size", "dim"),
    [("convnet4", 1, 28, 64), ("convnet4", 3, 32, 256), ("convnet4", 3, 84, 1600), ("resnet12", 3, 32, 2560)],
)
def test_two_views_share_the_trunk_and_own_their_last_stage(backbone, channels, size, dim) -> None:
    torch.manual_seed(0)
    method = BML(build_backbone(backbone, channels, size), num_classes=5)
    global_last, local_last = method.backbone.stages[-1], method.local_stage
    assert type(global_last) is type(local_last)
    shapes = [p.shape for p in global_last.parameters()]
    assert shapes == [p.shape for p in local_last.parameters()]
    # independently initialised: no shared tensors and different convolution weights
    assert not {id(p) for p in global_last.parameters()} & {id(p) for p in local_last.parameters()}
    assert not torch.equal(next(global_last.parameters()), next(local_last.parameters()))
    out = method.eval().embed(torch.randn(2, channels, size, size))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"global": (2, dim), "local": (2, dim)}
    assert not torch.equal(out["global"], out["local"])


@pytest.fixture(scope="module")
def cifar_train():
    return load_split("cifar-fs", "train")


def test_training_steps_reduce_the_loss_on_a_real_episode(cifar_train) -> None:
    cfg = preset_config("bml", "cifar-fs", "quick")
    spec = model_spec(cfg, cifar_train.num_classes)
    model = spec.build(seed=0).train()
    model.set_progress(5, 10)  # with the elastic margin
    episode = next(iter(EpisodeSampler(cifar_train.labels, 5, 2, 3, 1, seed=0)))
    batch = BatchMaker(cifar_train, spec, "none", torch.device("cpu"))(
        episode, torch.Generator().manual_seed(0)
    )
    optimizer, _ = build_optimizer(model, cfg, steps_total=100)  # the preset's SGD
    losses = train_steps(model, batch, 5, optimizer=optimizer)
    assert losses[1] < losses[0] and losses[-1] < 0.8 * losses[0], losses


def test_export_parity_of_the_fused_two_view_head(cifar_train, tmp_path: Path) -> None:
    from distilshot.serve.engines.registry import open_engine

    cfg = preset_config("bml", "cifar-fs", "quick")
    spec = model_spec(cfg, cifar_train.num_classes)
    model = spec.build(seed=0).train()
    episode = next(iter(EpisodeSampler(cifar_train.labels, 5, 2, 3, 1, seed=0)))
    batch = BatchMaker(cifar_train, spec, "none", torch.device("cpu"))(
        episode, torch.Generator().manual_seed(0)
    )
    train_steps(
        model, batch, 3
    )  # moves the BatchNorm statistics of both views away from their initial values
    test = load_split("cifar-fs", "test")
    manifest, report = assert_exports_faithfully(model, spec, tmp_path, test, n_way=5, k_shot=5, episodes=10)
    bundle = tmp_path / "bundle"
    assert [(o.name, o.dim) for o in manifest.embedder.outputs] == [("global", 256), ("local", 256)]
    assert manifest.head.weights == {"global": 1.0, "local": 1.0} and manifest.head.metric == "euclidean"
    # the square root turns a rounding difference d of the map into up to sqrt(d): compare the maps
    # (squared embeddings) at 1e-4, the embeddings themselves at sqrt(1e-6)
    assert max(report.max_abs_diff.values()) < 1e-3, report
    x = normalize(to_float(test.images[:300]), spec.mean, spec.std)
    theirs = open_engine(bundle, manifest, backend="onnxruntime").embed(x.numpy())
    with torch.no_grad():
        ours = model.embed(x)
    for name in model.output_names:
        assert np.abs(theirs[name] ** 2 - ours[name].numpy() ** 2).max() < 1e-4, name


def test_one_view_can_be_evaluated_alone(tmp_path: Path, monkeypatch) -> None:
    from distilshot.train import pipeline

    ten_classes = load_split("omniglot", "test").subset(range(10))
    monkeypatch.setattr(pipeline, "load_split", lambda *args: ten_classes)  # 200 images keep it quick
    cfg = preset_config("bml", "omniglot", "quick")
    spec = model_spec(cfg, 815)
    model = spec.build(seed=0)
    results = {
        view: pipeline.evaluate(
            model, spec, settings=((5, 1),), episodes=20, outputs=(view,), plots_dir=tmp_path
        )
        for view in ("global", "local")
    }
    assert results["global"][0].classifier.endswith("[global]")
    assert results["global"][0].mean != results["local"][0].mean  # two different untrained views
    assert not (tmp_path / "confusion.png").exists()  # the run's plots stay those of the fused head


def test_paper_schedule_drops_to_the_published_learning_rates() -> None:
    cfg = preset_config("bml", "cifar-fs", "paper")
    optimizer, scheduler = build_optimizer(identity_bml(), cfg, steps_total=cfg.epochs)  # 1 step per epoch
    lrs = []
    for _ in range(cfg.epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[49] == pytest.approx(0.1) and lrs[50] == pytest.approx(6e-3) and lrs[69] == pytest.approx(6e-3)
    assert lrs[70] == pytest.approx(1.2e-4) and lrs[99] == pytest.approx(1.2e-4)
    cfg.gamma = [0.1]
    with pytest.raises(ConfigError, match="one per milestone"):
        build_optimizer(identity_bml(), cfg, steps_total=cfg.epochs)


def test_train_command_runs_bml(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = "train --method bml --dataset cifar-fs --epochs 1 --steps-per-epoch 2 --json --run-dir"
    result = subprocess.run(
        [DISTILSHOT, *args.split(), str(run)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    model, spec, payload = load_model(summary["checkpoint"])
    assert isinstance(model, BML) and spec.method == "bml"
    assert any(k.startswith("local_stage.") for k in payload["model"])
    config = payload["config"]
    assert (config["n_way"], config["k_shot"], config["n_query"]) == (15, 5, 7)
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert {"train_global", "train_local", "train_mutual"} <= set(record)
    assert all(
        math.isfinite(record[k]) for k in ("train_loss", "train_global", "train_local", "train_mutual")
    )
