"""PNG plots people look at: training curves, embedding maps, confusion matrices, reliability diagrams."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI
import matplotlib.pyplot as plt
import numpy as np


def plot_curves(history: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Training loss/accuracy and validation accuracy per epoch."""
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="loss")
    ax_acc.plot(epochs, [100 * h["train_acc"] for h in history], marker="o", label="training batches")
    ax_acc.errorbar(
        epochs,
        [h["val_acc"] for h in history],
        yerr=[h["val_ci95"] for h in history],
        marker="s",
        capsize=3,
        label=history[0].get("val_protocol", "validation") if history else "validation",
    )
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    # below the axes, where it hides no point; the validation protocol is a long label
    handles, labels = ax_acc.get_legend_handles_labels()
    labels = [textwrap.fill(label, 60) for label in labels]
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncols=2, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_embedding(
    features: np.ndarray,
    labels: np.ndarray,
    path: Path,
    title: str = "",
    max_classes: int = 10,
    class_names: Sequence[str] | None = None,
) -> Path:
    """2-D PCA map of embeddings for the first `max_classes` classes, named by `class_names[label]`."""
    keep = labels < max_classes
    x = features[keep] - features[keep].mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    xy = x @ vt[:2].T
    fig, ax = plt.subplots(figsize=(7, 5))
    colours = plt.get_cmap("tab10")
    for c in np.unique(labels[keep]):
        own = labels[keep] == c
        name = class_names[c] if class_names is not None else str(c)
        ax.scatter(xy[own, 0], xy[own, 1], color=colours(c % 10), s=8, label=name)
    ax.legend(fontsize=6, title="class", loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    ax.set(title=title or "embedding (PCA)", xticks=[], yticks=[])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_confusion(
    matrix: np.ndarray, path: Path, title: str = "", class_names: Sequence[str] | None = None
) -> Path:
    """Row-normalised confusion matrix (rows: true class, columns: predicted), each cell's share of its
    row in percent, the overall accuracy in the title; classes named by `class_names`."""
    rates = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    accuracy = 100 * np.trace(matrix) / max(matrix.sum(), 1)
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(matrix))]
    fig, ax = plt.subplots(figsize=(3 + 0.5 * len(matrix), 2 + 0.5 * len(matrix)))
    image = ax.imshow(rates, vmin=0, vmax=1, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the row")
    for (row, col), rate in np.ndenumerate(rates):
        if matrix[row, col]:
            colour = "white" if rate > 0.5 else "black"
            ax.text(col, row, f"{100 * rate:.0f}", ha="center", va="center", fontsize=7, color=colour)
    ticks = range(len(matrix))
    ax.set_xticks(ticks, names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(ticks, names, fontsize=7)
    heading = f"{title or 'confusion'}: accuracy {accuracy:.1f}%"
    ax.set(xlabel="predicted", ylabel="true")
    ax.set_title(textwrap.fill(heading, 60), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_reliability(
    curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], path: Path, title: str = ""
) -> Path:
    """Reliability diagram: per curve (label -> per-bin counts, mean top-1 probability, accuracy, as
    export.calibration.reliability_bins gives them), accuracy against probability in the non-empty
    bins; a calibrated model lies on the diagonal. Below: the share of queries in each bin."""
    fig, (ax, ax_count) = plt.subplots(
        2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    for label, (counts, confidence, accuracy) in curves.items():
        used = counts > 0
        ax.plot(confidence[used], accuracy[used], marker="o", label=label)
        ax_count.plot(confidence[used], counts[used] / counts.sum(), marker=".", label=label)
    ax.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    ax.set_title(textwrap.fill(title or "reliability", 70), fontsize=8)
    ax.legend(fontsize=7, loc="upper left")
    ax_count.set(xlabel="top-1 probability (mean of each bin)", ylabel="share of queries")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
