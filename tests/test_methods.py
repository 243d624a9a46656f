"""Hand-checked loss values on tiny inputs, and loss reduction on a real mini-batch."""

import math

import numpy as np
import pytest
import torch
from method_runs import pixel_backbone

from distilshot.core.manifest import Head
from distilshot.errors import ConfigError
from distilshot.train.methods import build_method
from distilshot.train.methods.base import Batch, prototype_logits
from distilshot.train.methods.pretrain import Pretrain
from distilshot.train.methods.protonet import ProtoNet


def test_protonet_loss_by_hand() -> None:
    # 2-way 1-shot 1-query; 2-d embeddings: supports a=(0,0), b=(2,0); queries (0.5,0) of a, (2,1) of b.
    points = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.5, 0.0], [2.0, 1.0]]).view(4, 2, 1, 1)
    method = ProtoNet(pixel_backbone(2, 1), num_classes=2)
    out = method.loss(Batch(points, torch.tensor([0, 1, 0, 1]), n_way=2, k_shot=1, n_query=1))
    # squared distances: q1 -> (0.25, 2.25), q2 -> (5, 1); CE = log(1 + e^-(gap))
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-4.0))) / 2
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert out.metrics["acc"] == 1.0


def test_prototype_logits_cosine_and_fusion() -> None:
    support = {"a": torch.tensor([[1.0, 0.0], [0.0, 2.0]]), "b": torch.tensor([[1.0], [3.0]])}
    query = {"a": torch.tensor([[1.0, 1.0]]), "b": torch.tensor([[2.0]])}
    cosine = prototype_logits(
        support, query, 2, 1, Head(metric="cosine", weights={"a": 1.0}, temperature=0.5)
    )
    assert torch.allclose(cosine, torch.tensor([[2 / math.sqrt(2), 2 / math.sqrt(2)]]))
    fused = prototype_logits(
        support, query, 2, 1, Head(metric="euclidean", weights={"a": 1.0, "b": 2.0}, temperature=1.0)
    )
    # a: d = (1, 2); b: d = (1, 1) -> logits = -(1 + 2*1), -(2 + 2*1)
    assert torch.allclose(fused, torch.tensor([[-3.0, -4.0]]))


def test_pretrain_cross_entropy_by_hand() -> None:
    method = Pretrain(pixel_backbone(1, 2), num_classes=2)
    with torch.no_grad():
        method.classifier.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]))
        method.classifier.bias.zero_()
    image = torch.tensor([[[[2.0, 0.0], [0.0, 0.0]]]])
    out = method.loss(Batch(image, torch.tensor([0])))
    assert out.loss.item() == pytest.approx(math.log1p(math.exp(-2.0)), rel=1e-6)  # logits (2, 0)


def test_pretrain_rotation_augment_keeps_labels_over_four_rotations() -> None:
    method = Pretrain(pixel_backbone(1, 2), num_classes=2, rotation_augment=True)
    with torch.no_grad():
        method.classifier.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]))
        method.classifier.bias.zero_()
    image = torch.tensor([[[[2.0, 0.0], [0.0, 0.0]]]])
    out = method.loss(Batch(image, torch.tensor([0])))
    # the 2 sits in each corner once; logits (2,0) at 0 deg, (0,0) at two rotations, (0,2) at one (np.rot90)
    corners = [np.rot90(np.array([[2.0, 0.0], [0.0, 0.0]]), k).ravel()[:2] for k in range(4)]
    expected = np.mean([np.log(np.exp(c).sum()) - c[0] for c in corners])
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)


def test_unknown_method_and_parameter() -> None:
    backbone = pixel_backbone(1, 2)
    with pytest.raises(ConfigError, match="unknown method"):
        build_method("maml", backbone, 2, {})
    with pytest.raises(ConfigError, match="has no parameters"):
        build_method("protonet", backbone, 2, {"temperature": 3})
