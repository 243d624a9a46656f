"""One small model trained and exported once per test session, for every test that needs a real trained
bundle: a ConvNet-4 ProtoNet on Omniglot, 2 epochs x 30 episodes, through `distilshot train-export` as a
user runs it (its summary is kept: the pipeline test checks it). Tests must not change the run folder;
one that edits the bundle copies it first."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from method_runs import cli

TRAIN_EXPORT = [
    "train-export",
    "--method",
    "protonet",
    "--dataset",
    "omniglot",
    "--epochs",
    "2",
    "--steps-per-epoch",
    "30",
    "--episodes",
    "300",
]
TRAIN_EXPORT_TIMEOUT_S = 900  # about a minute on an idle 2-core machine, a few when it is shared


@dataclass(frozen=True)
class TrainedRun:
    run: Path  # the run folder: config.json, eval.json, checkpoints/, plots/, bundle/
    summary: dict[str, Any]  # the --json summary train-export printed last

    @property
    def bundle(self) -> Path:
        return self.run / "bundle"


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    run = tmp_path_factory.mktemp("trained") / "run"
    result = cli(*TRAIN_EXPORT, "--run-dir", run, "--json", timeout=TRAIN_EXPORT_TIMEOUT_S)
    return TrainedRun(run, json.loads(result.stdout.strip().splitlines()[-1]))
