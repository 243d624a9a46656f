"""Presets resolve to the values the runs in reproduce/ were trained with, the registries answer a
mistyped name with the closest valid one, and enum fields fail at construction yet serialise as strings."""

import json

import pytest

from distilshot.core.enums import Optimizer, Preset, Schedule
from distilshot.errors import ConfigError
from distilshot.train.config import DEFAULT_METHOD, TrainConfig
from distilshot.train.data.registry import DATASETS
from distilshot.train.methods import PRESETS, RECIPES
from distilshot.train.presets import preset_config
from distilshot.train.recipes import TrainRequest


def test_resolved_presets_keep_their_values() -> None:
    bml = preset_config("bml", "omniglot", "quick")  # `make train-export`'s model
    assert (bml.optimizer, bml.lr, bml.schedule, bml.epochs, bml.steps_per_epoch) == (
        "sgd",
        0.1,
        "cosine",
        17,
        200,
    )
    assert (bml.n_way, bml.k_shot, bml.n_query, bml.rotated_classes, bml.augment) == (60, 1, 1, True, "none")
    assert (bml.momentum, bml.weight_decay, bml.method_params) == (0.9, 5e-4, {"variant": "code"})
    cifar = preset_config("bml", "cifar-fs", "quick")
    assert (cifar.lr, cifar.epochs, cifar.n_way, cifar.rotated_classes, cifar.augment) == (
        0.02,
        10,
        15,
        False,
        "standard",
    )
    proto = preset_config("protonet", "omniglot-vinyals", "paper")
    assert (proto.optimizer, proto.gamma, proto.n_way, proto.n_query, proto.milestones[-1]) == (
        "adam",
        0.5,
        60,
        5,
        18,
    )
    gen1 = preset_config("skd-gen1", "fc100", "quick")
    assert (gen1.lr, gen1.milestones, gen1.method_params) == (1e-2, [7], {"variant": "code", "beta": 0.2})
    meta = preset_config("grdd-meta", "folder:/somewhere", "paper")
    assert (meta.lr, meta.steps_per_epoch, meta.n_way, meta.k_shot, meta.augment) == (
        1e-3,
        1000,
        5,
        5,
        "standard",
    )
    embed = preset_config("refilled-embed", "cifar-fs", "paper", lr=0.5)
    assert (embed.lr, embed.gamma, embed.epochs, embed.batch_size) == (0.5, 0.2, 200, 64)


def test_every_method_has_every_preset_and_names_only_known_datasets() -> None:
    stage_methods = {s.method for recipe in RECIPES.values() for s in recipe.stages}
    assert stage_methods == set(PRESETS)
    for name, presets in PRESETS.items():
        assert set(presets.presets) == set(Preset), name
        for preset, family in presets.datasets:
            assert family in (*DATASETS, "folder"), (name, preset, family)


def test_unknown_names_are_answered_with_the_closest() -> None:
    with pytest.raises(ConfigError, match="unknown method 'bmll'; did you mean 'bml'"):
        TrainRequest("bmll")
    with pytest.raises(ConfigError, match="unknown preset 'papr'; did you mean 'paper'"):
        TrainRequest("bml", preset="papr")
    with pytest.raises(ConfigError, match="unknown dataset 'cifar_fs'; did you mean 'cifar-fs'"):
        TrainRequest("bml", dataset="cifar_fs")
    with pytest.raises(ConfigError, match="unknown backbone 'resnet-12'; did you mean 'resnet12'"):
        TrainRequest("refilled", teacher_backbone="resnet-12")
    with pytest.raises(ConfigError, match="unknown schedule 'cosin'; did you mean 'cosine'"):
        TrainRequest("protonet", overrides={"schedule": "cosin"})


def test_enum_fields_parse_on_construction_and_serialise_as_strings() -> None:
    with pytest.raises(ConfigError, match=r"unknown optimizer 'adamw'.*adam, sgd"):
        TrainConfig(optimizer="adamw")
    cfg = TrainConfig.from_dict({"optimizer": "sgd", "schedule": "poly"})
    assert cfg.optimizer is Optimizer.SGD and cfg.schedule is Schedule.POLY and cfg.method == DEFAULT_METHOD
    plain = cfg.to_dict()
    assert all(type(plain[k]) is str for k in ("preset", "memory_format", "optimizer", "schedule", "augment"))
    assert TrainConfig.from_dict(json.loads(json.dumps(plain))) == cfg
