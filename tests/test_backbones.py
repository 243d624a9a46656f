import pytest
import torch

from distilshot.errors import ConfigError
from distilshot.train.backbones import build_backbone
from distilshot.train.backbones.resnet12 import DropBlock


@pytest.mark.parametrize(
    ("name", "channels", "size", "dim"),
    [
        ("convnet4", 1, 28, 64),
        ("convnet4", 3, 32, 256),
        ("convnet4", 3, 84, 1600),
        ("resnet12", 3, 32, 640),
        ("resnet12", 1, 28, 640),
        ("mobilenet-1.0", 3, 32, 1024),
        ("mobilenet-0.5", 3, 84, 512),
        ("mobilenet-0.25", 1, 28, 256),
    ],
)
def test_embedding_dimensions(name: str, channels: int, size: int, dim: int) -> None:
    backbone = build_backbone(name, channels, size).eval()
    assert backbone.embedding_dim == dim
    assert backbone(torch.zeros(3, channels, size, size)).shape == (3, dim)


def test_stages_compose_to_the_embedding() -> None:
    backbone = build_backbone("resnet12", 3, 32).eval()
    x = torch.randn(2, 3, 32, 32)
    trunk = backbone.feature_map(x, slice(0, 3))
    assert torch.allclose(backbone.pool(backbone.feature_map(trunk, slice(3, 4))), backbone(x))


def test_unknown_backbone_and_too_small_input() -> None:
    with pytest.raises(ConfigError, match="unknown backbone"):
        build_backbone("vgg", 3, 32)
    with pytest.raises(ConfigError, match="too small"):
        build_backbone("convnet4", 1, 8)


def test_dropblock_ramp_is_saved_and_drops_blocks() -> None:
    torch.manual_seed(0)
    block = DropBlock(block_size=2, drop_rate=0.1, ramp_steps=10).train()
    x = torch.ones(8, 4, 6, 6)
    for _ in range(10):
        out = block(x)
    assert block.state_dict()["steps"].item() == 10
    zero_fraction = (out == 0).float().mean().item()
    assert 0.02 < zero_fraction < 0.3  # about 10% dropped at full ramp
    # rescaling keeps the mean activation
    assert abs(out.mean().item() - 1.0) < 1e-5
    assert torch.equal(block.eval()(x), x)


def test_dropblock_drops_whole_blocks() -> None:
    torch.manual_seed(1)
    block = DropBlock(block_size=3, drop_rate=0.5, ramp_steps=1).train()
    out = block(torch.ones(1, 1, 12, 12))[0, 0]
    zeros = (out == 0).nonzero().tolist()
    assert zeros
    # every dropped pixel belongs to some fully dropped 3x3 square
    for r, c in zeros:
        assert any(
            (out[max(0, r - dr) : r - dr + 3, max(0, c - dc) : c - dc + 3] == 0).all()
            and r - dr >= 0
            and c - dc >= 0
            and r - dr + 3 <= 12
            and c - dc + 3 <= 12
            for dr in range(3)
            for dc in range(3)
        )
