"""`distilshot train` and `eval` as people meet them: Ctrl-C says how to resume and exits 130, a second
process on a running run is refused, eval says where its results went and keeps one measurement in
eval.json, and the run's plots name their classes."""

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
from method_runs import DISTILSHOT, cli, omniglot_folder

from distilshot.train.evaluation import EvalResult
from distilshot.train.plots import plot_confusion, plot_embedding
from distilshot.train.report import load_results, save_results


def test_ctrl_c_says_how_to_resume_and_a_running_run_refuses_a_second_process(tmp_path: Path) -> None:
    dataset = f"folder:{omniglot_folder(tmp_path / 'data')}"
    run = tmp_path / "run"
    options = ["--method", "pretrain", "--dataset", dataset, "--image-size", "28", "--epochs", "2"]
    options += ["--steps-per-epoch", "40", "--device", "cpu", "--run-dir", str(run)]
    training = subprocess.Popen(
        [DISTILSHOT, "train", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, which Ctrl-C signals as a terminal's would
    )
    while not (run / "checkpoints" / "last.pt").exists() and training.poll() is None:
        time.sleep(0.05)
    second = cli("train", "--resume", run, ok=False)
    assert f"{run} is being trained by process {training.pid}" in second.stderr
    os.killpg(training.pid, signal.SIGINT)
    out, err = training.communicate(timeout=120)
    assert training.returncode == 130, err
    assert f"interrupted; continue with: distilshot train --resume {run}" in err
    assert out.startswith("training pretrain/convnet4 on ")  # said before the first epoch ended
    assert "epoch 1/2" in out
    cli("train", "--resume", run)  # the lock went with the process


def _result(episodes: int, n_way: int = 5) -> EvalResult:
    return EvalResult("omniglot/test", n_way, 1, 15, episodes, "prototype", 90.0, 1.0)


def test_eval_json_holds_one_measurement(tmp_path: Path) -> None:
    path, dropped = save_results(tmp_path, [_result(50), _result(50, n_way=20)])
    assert path == tmp_path / "eval.json" and dropped == []
    _, dropped = save_results(tmp_path, [_result(1000)])
    assert dropped == [_result(50), _result(50, n_way=20)]
    assert load_results(tmp_path) == [_result(1000)]
    _, dropped = save_results(tmp_path, [_result(1000, n_way=20)])  # same measurement: rows add up
    assert dropped == [] and load_results(tmp_path) == [_result(1000), _result(1000, n_way=20)]


def test_plots_take_class_names(tmp_path: Path) -> None:
    names = [f"Latin/character{i:02d}" for i in range(1, 4)]
    labels = np.repeat(np.arange(3), 10)
    features = np.random.default_rng(0).normal(size=(30, 8)) + labels[:, None]
    plot_embedding(features, labels, tmp_path / "embedding.png", class_names=names)
    plot_confusion(
        np.array([[9, 1, 0], [0, 10, 0], [2, 0, 8]]), tmp_path / "confusion.png", class_names=names
    )
    assert all((tmp_path / f).stat().st_size > 5000 for f in ("embedding.png", "confusion.png"))
