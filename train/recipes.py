"""What a training request runs: a method's recipe (registered beside the method, train/methods/*.py) is a
sequence of training stages. A stage trains one `Method`; a later stage may start from an earlier stage's
weights and/or learn from it as a frozen teacher (SKD generation 1 from generation 0, GRDD's meta-learner
from its global learner). One `distilshot train` runs the whole sequence and keeps every stage's
checkpoints. A stage that starts from a teacher trained on another backbone cannot take its weights; it
starts from a twin of the teacher's stage trained on its own backbone (e.g. GRDD's ConvNet-4 meta-learner
taught by a ResNet-12 global learner starts from a ConvNet-4 global learner, as in the paper).

`TrainRequest` is what the user asked for (method, dataset, backbone, preset, overrides); each stage's
`TrainConfig` is derived from it through the presets of the stage's own method.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from distilshot.core.enums import Preset
from distilshot.errors import ConfigError
from distilshot.train.backbones import check_backbone
from distilshot.train.checkpoint import read_checkpoint
from distilshot.train.config import TrainConfig
from distilshot.train.methods import Stage, method_params, recipe
from distilshot.train.presets import preset_config


@dataclass
class TrainRequest:
    method: str
    dataset: str = "omniglot"
    backbone: str = "convnet4"
    preset: Preset = Preset.QUICK
    seed: int = 0
    device: str = "auto"
    overrides: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields, for every stage
    params: dict[str, Any] = field(default_factory=dict)  # method parameters; "stage.key" targets one stage
    teacher_backbone: str | None = None  # backbone of the stages that teach (default: --backbone)
    teacher: str | None = None  # a checkpoint that replaces the teaching stages (and sets teacher_backbone)

    def __post_init__(self) -> None:
        recipe(self.method)
        self.preset = Preset.parse(self.preset, "preset")
        fixed = {"method", "dataset", "preset", "method_params", "backbone", "seed", "device"}
        unknown = set(self.overrides) - ({f.name for f in fields(TrainConfig)} - fixed)
        if unknown:
            raise ConfigError(f"unknown training options {sorted(unknown)}")
        if self.teacher:
            backbone = read_checkpoint(self.teacher)["spec"]["backbone"]
            if self.teacher_backbone not in (None, backbone):
                raise ConfigError(
                    f"--teacher-backbone {self.teacher_backbone} contradicts --teacher {self.teacher}, "
                    f"a {backbone} model"
                )
            self.teacher_backbone = backbone
        self._check_params()
        for stage in self.stages:  # a bad name or option value fails here, before any data loads
            check_backbone(self.stage_config(stage).backbone)

    def _twins(self) -> dict[str, Stage]:
        """{teacher stage: its twin on the student's backbone}, for teachers that students start from
        while the teachers' backbone differs from theirs."""
        if not self.teacher_backbone or self.teacher_backbone == self.backbone:
            return {}
        stages = recipe(self.method).stages
        teachers = {s.teacher for s in stages if s.teacher}
        starts = {s.init for s in stages if s.init}
        return {
            s.name: replace(s, name=f"{s.name}-{self.backbone}")
            for s in stages
            if s.name in teachers & starts
        }

    @property
    def stages(self) -> tuple[Stage, ...]:
        """The recipe's stages, each twin run just before the first stage that starts from it."""
        twins = self._twins()
        stages: list[Stage] = []
        for stage in recipe(self.method).stages:
            if stage.init in twins:
                twin = twins[stage.init]
                if twin not in stages:
                    stages.append(twin)
                stage = replace(stage, init=twin.name)
            stages.append(stage)
        return tuple(stages)

    @property
    def teaching_stages(self) -> set[str]:
        """The stages other stages learn from as a frozen teacher: they get --teacher-backbone."""
        return {s.teacher for s in self.stages if s.teacher}

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
        twin_of = {twin.name: name for name, twin in self._twins().items()}
        for name in (twin_of.get(stage.name, stage.name), stage.name):  # a twin takes its original's too
            prefix = f"{name}."
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
