"""Methods as sequences of training stages. A stage trains one `Method`; a later stage may start from an
earlier stage's weights and/or learn from it as a frozen teacher (SKD generation 1 from generation 0,
GRDD's meta-learner from its global learner). One `distilshot train` runs the whole sequence and keeps
every stage's checkpoints.

`TrainRequest` is what the user asked for (method, dataset, backbone, preset, overrides); each stage's
`TrainConfig` is derived from it through the presets of the stage's own method.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from distilshot.errors import ConfigError
from distilshot.train.config import TrainConfig
from distilshot.train.methods import method_params
from distilshot.train.presets import preset_config


@dataclass(frozen=True)
class Stage:
    name: str
    method: str
    teacher: str | None = None  # an earlier stage whose best model is this stage's frozen teacher
    init: str | None = None  # an earlier stage whose best weights this stage starts from


RECIPES: dict[str, tuple[Stage, ...]] = {
    "pretrain": (Stage("pretrain", "pretrain"),),
    "protonet": (Stage("protonet", "protonet"),),
    "bml": (Stage("bml", "bml"),),
}


@dataclass
class TrainRequest:
    method: str
    dataset: str = "omniglot"
    backbone: str = "convnet4"
    preset: str = "quick"
    seed: int = 0
    device: str = "auto"
    overrides: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields, for every stage
    params: dict[str, Any] = field(default_factory=dict)  # method parameters; "stage.key" targets one stage
    teacher_backbone: str | None = None  # backbone of the stages that teach (default: --backbone)
    teacher: str | None = None  # a checkpoint that replaces the teaching stages

    def __post_init__(self) -> None:
        if self.method not in RECIPES:
            raise ConfigError(f"unknown method {self.method!r}; choose one of {sorted(RECIPES)}")
        fixed = {"method", "dataset", "preset", "method_params", "backbone", "seed", "device"}
        unknown = set(self.overrides) - ({f.name for f in fields(TrainConfig)} - fixed)
        if unknown:
            raise ConfigError(f"unknown training options {sorted(unknown)}")
        self._check_params()

    @property
    def stages(self) -> tuple[Stage, ...]:
        return RECIPES[self.method]

    @property
    def teaching_stages(self) -> set[str]:
        return {s.teacher for s in self.stages if s.teacher} | {s.init for s in self.stages if s.init}

    def skipped_stages(self) -> set[str]:
        """Stages a given --teacher checkpoint stands in for."""
        return self.teaching_stages if self.teacher else set()

    def _check_params(self) -> None:
        names = {s.name for s in self.stages}
        for key in self.params:
            stage, _, param = key.rpartition(".")
            if stage and stage not in names:
                raise ConfigError(f"--set {key}: {self.method} has no stage {stage!r}, only {sorted(names)}")
            targets = [s for s in self.stages if s.name == stage] if stage else list(self.stages)
            if not any(param in method_params(s.method) for s in targets):
                accepted = sorted({p for s in targets for p in method_params(s.method)})
                raise ConfigError(f"--set {key}: no stage of {self.method} takes {param!r}; try {accepted}")

    def stage_params(self, stage: Stage) -> dict[str, Any]:
        accepted = method_params(stage.method)
        params = {k: v for k, v in self.params.items() if "." not in k and k in accepted}
        prefix = stage.name + "."
        params.update({k.removeprefix(prefix): v for k, v in self.params.items() if k.startswith(prefix)})
        return params

    def stage_config(self, stage: Stage) -> TrainConfig:
        teaches = stage.name in self.teaching_stages
        backbone = self.teacher_backbone if teaches and self.teacher_backbone else self.backbone
        cfg = preset_config(
            stage.method,
            self.dataset,
            self.preset,
            backbone=backbone,
            seed=self.seed,
            device=self.device,
            **self.overrides,
        )
        cfg.method_params.update(self.stage_params(stage))
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainRequest:
        known = {f.name for f in fields(cls)}
        if set(data) - known:
            raise ConfigError(f"unknown run options {sorted(set(data) - known)}")
        return cls(**data)
