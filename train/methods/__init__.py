"""Methods by name. A method is one small class (see base.Method); multi-stage methods are sequences of
these, wired by the pipeline."""

from __future__ import annotations

import inspect
from typing import Any

from distilshot.errors import ConfigError
from distilshot.train.backbones import Backbone
from distilshot.train.methods.base import Method
from distilshot.train.methods.bml import BML
from distilshot.train.methods.grdd import GRDDGlobal, GRDDMeta
from distilshot.train.methods.pretrain import Pretrain
from distilshot.train.methods.protonet import ProtoNet
from distilshot.train.methods.refilled import RefilledClassify, RefilledEmbed
from distilshot.train.methods.skd import SKDGen0, SKDGen1

METHODS: dict[str, type[Method]] = {
    cls.name: cls
    for cls in (
        Pretrain,
        ProtoNet,
        BML,
        RefilledEmbed,
        RefilledClassify,
        SKDGen0,
        SKDGen1,
        GRDDGlobal,
        GRDDMeta,
    )
}


def method_params(name: str) -> tuple[str, ...]:
    """The parameters a method accepts beyond its backbone and number of classes."""
    signature = inspect.signature(METHODS[name].__init__)
    return tuple(p for p in signature.parameters if p not in ("self", "backbone", "num_classes"))


def build_method(name: str, backbone: Backbone, num_classes: int, params: dict[str, Any]) -> Method:
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    unknown = sorted(set(params) - set(method_params(name)))
    if unknown:
        raise ConfigError(f"{name} has no parameters {unknown}; it accepts {list(method_params(name))}")
    return METHODS[name](backbone, num_classes, **params)
