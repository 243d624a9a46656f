"""The trainer's faster layout (channels_last on the CPU) trains the same model: losses, embeddings and
gradients match NCHW within float32 rounding, the trainer really applies it, and checkpoints stay
contiguous."""

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from distilshot.errors import ConfigError
from distilshot.train.backbones import Backbone
from distilshot.train.backbones.convnet import ConvNet4
from distilshot.train.backbones.resnet12 import ResNet12
from distilshot.train.checkpoint import read_checkpoint
from distilshot.train.data.imageset import ImageSet
from distilshot.train.data.registry import load_split
from distilshot.train.methods import Method, build_method
from distilshot.train.methods.base import Batch
from distilshot.train.pipeline import model_spec
from distilshot.train.presets import preset_config
from distilshot.train.trainer import RunFolder, Trainer, resolve_memory_format

BACKBONES = {
    "convnet4-28px-1ch": lambda: ConvNet4(1, 28),
    "convnet4-32px": lambda: ConvNet4(3, 32),
    # no dropout: its masks are drawn in memory order, so they would differ between layouts by design
    "resnet12-32px": lambda: ResNet12(3, 32, drop_rate=0.0),
}


def loss_and_grads(
    method: str, backbone: Backbone, batch: Batch, memory_format: torch.memory_format
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model: Method = build_method(method, backbone, 5, {}).train().to(memory_format=memory_format)
    images = batch.images.contiguous(memory_format=memory_format)
    out = model.loss(Batch(images, batch.labels, batch.n_way, batch.k_shot, batch.n_query))
    out.loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    with torch.no_grad():
        embedding = torch.cat([z.flatten(1) for z in model.eval().embed(images).values()], 1)
    return out.loss.detach(), grads, embedding


@pytest.mark.parametrize("name", sorted(BACKBONES))
@pytest.mark.parametrize("method", ["pretrain", "protonet", "bml"])
def test_channels_last_gives_the_nchw_loss_and_gradients(name: str, method: str) -> None:
    backbone = BACKBONES[name]()
    torch.manual_seed(1)
    size, channels = backbone.image_size, backbone.in_channels
    # a 5-way 2-shot 2-query episode; batch methods read it as 20 labelled images
    labels = torch.arange(5).repeat_interleave(2).repeat(2)
    batch = Batch(torch.randn(20, channels, size, size), labels, n_way=5, k_shot=2, n_query=2)
    twin = copy.deepcopy(backbone)
    loss_a, grads_a, emb_a = loss_and_grads(method, backbone, batch, torch.contiguous_format)
    loss_b, grads_b, emb_b = loss_and_grads(method, twin, batch, torch.channels_last)
    # The layouts sum convolutions in different orders, so float32 activations differ by ~1e-6 relative
    # (losses up to 1e-5: distances between 640-d features cancel; BML's sqrt(ReLU) magnifies rounding
    # near zero), and an activation that close to zero can take the other (Leaky)ReLU branch and reroute
    # one element's gradient, which moves ResNet-12's whole gradient by up to 6e-3 in L2 (measured;
    # ConvNet-4's by 2e-5). A wrong axis order would move all three by O(1).
    assert torch.allclose(loss_a, loss_b, rtol=1e-4, atol=1e-6), (loss_a, loss_b)
    assert (emb_a - emb_b).abs().max() <= (5e-4 if method == "bml" else 1e-4) * emb_a.abs().max()
    assert (grads_a - grads_b).norm() <= 2e-2 * grads_a.norm()


def small_trainer(run_dir: Path, memory_format: str) -> Trainer:
    cfg = preset_config(
        "pretrain",
        "cifar-fs",
        "quick",
        device="cpu",
        memory_format=memory_format,
        epochs=1,
        steps_per_epoch=2,
        batch_size=8,
        val_episodes=5,
    )
    train_set = load_split("cifar-fs", "train").subset(range(8))
    val = load_split("cifar-fs", "val").subset(range(5))
    keep = np.concatenate([rows[:20] for rows in val.class_rows()])
    val_set = ImageSet(val.name, val.images[keep], val.labels[keep], val.class_names)
    spec = model_spec(cfg, train_set.num_classes)
    return Trainer(spec.build(cfg.seed), spec, cfg, train_set, val_set, RunFolder(run_dir))


@pytest.mark.parametrize(
    ("setting", "expected"), [("auto", torch.channels_last), ("contiguous", torch.contiguous_format)]
)
def test_the_trainer_trains_in_its_layout_and_saves_contiguous_checkpoints(
    tmp_path: Path, setting: str, expected: torch.memory_format
) -> None:
    trainer = small_trainer(tmp_path / setting, setting)
    seen = []
    loss = trainer.model.loss

    def recording_loss(batch: Batch):
        conv = trainer.model.backbone.stages[0][0].weight
        seen.append(
            (batch.images.is_contiguous(memory_format=expected), conv.is_contiguous(memory_format=expected))
        )
        return loss(batch)

    trainer.model.loss = recording_loss
    trainer.fit()
    # 3-channel images: channels_last and contiguous are different layouts, so each check can fail
    assert seen == [(True, True)] * 2
    saved = read_checkpoint(trainer.run.last)["model"]
    assert all(t.is_contiguous() for t in saved.values())
    assert trainer.model.backbone.stages[0][0].weight.is_contiguous(memory_format=expected)


def test_memory_format_auto_means_channels_last_only_on_the_cpu() -> None:
    assert resolve_memory_format("auto", torch.device("cpu")) == torch.channels_last
    assert resolve_memory_format("auto", torch.device("cuda")) == torch.contiguous_format
    assert resolve_memory_format("channels_last", torch.device("cuda")) == torch.channels_last
    with pytest.raises(ConfigError, match="memory_format"):
        resolve_memory_format("nhwc", torch.device("cpu"))
