"""Plots of image models: learning curves of every logged metric, the confusion matrix of any
number of classes, the first layer's filters, and a grid of correct and wrong predictions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from torch import nn

from breastcad.evaluation.plots import _save

CURVE_METRICS = ("loss", "acc", "precision", "recall", "auc")


def learning_curves(history: Sequence[Mapping[str, float]], path: Path, title: str) -> Path | None:
    """Train and validation loss, accuracy, precision, recall and AUC per epoch; one line per
    member of an ensemble (rows with a `member` key), the label naming the first's."""
    if not history:
        return None
    fig, axes = plt.subplots(1, len(CURVE_METRICS), figsize=(3.2 * len(CURVE_METRICS), 3))
    members = sorted({row.get("member", 1) for row in history})
    for ax, metric in zip(axes, CURVE_METRICS, strict=True):
        for member in members:
            rows = [row for row in history if row.get("member", 1) == member]
            epochs = [row["epoch"] for row in rows]
            for stage, color in (("train", "tab:blue"), ("val", "tab:orange")):
                values = [row.get(f"{stage}_{metric}", np.nan) for row in rows]
                if not np.isnan(values).all():
                    label = stage if len(members) == 1 else f"{stage}, member {member}"
                    alpha = 1.0 if member == members[0] else 0.45
                    ax.plot(epochs, values, color=color, marker=".", label=label, alpha=alpha)
        ax.set(title=metric, xlabel="epoch")
    axes[0].legend()
    fig.suptitle(title)
    return _save(fig, path)


def confusion(
    matrix: Sequence[Sequence[int]], classes: Sequence[str], path: Path, title: str
) -> Path:
    m = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 2.5, 1.1 * len(classes) + 2))
    ax.imshow(m, cmap="Blues")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            color = "white" if m[i, j] > m.max() / 2 else "black"
            ax.text(j, i, str(m[i, j]), ha="center", va="center", color=color)
    ax.set_xticks(range(len(classes)), classes, rotation=30)
    ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    return _save(fig, path)


def first_layer_filters(
    net: nn.Module, path: Path, title: str = "First-layer filters"
) -> Path | None:
    """The first convolution's kernels, each scaled to its own range (RGB when 3 inputs)."""
    conv = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        return None
    w = conv.weight.detach().cpu().numpy()  # out, in, kh, kw
    n = min(len(w), 64)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.8, rows * 0.8))
    for ax, k in zip(np.ravel(axes), range(rows * cols), strict=True):
        ax.axis("off")
        if k >= n:
            continue
        kernel = w[k].transpose(1, 2, 0)
        kernel = (kernel - kernel.min()) / (np.ptp(kernel) + 1e-8)
        ax.imshow(kernel if kernel.shape[2] == 3 else kernel[..., 0], cmap="gray")
    fig.suptitle(
        f"{title} ({conv.weight.shape[0]} x {conv.weight.shape[1]} x "
        f"{conv.weight.shape[2]}x{conv.weight.shape[3]})"
    )
    return _save(fig, path)


def prediction_grid(
    pixels: np.ndarray,
    y: np.ndarray,
    pred: np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
    path: Path,
    per_kind: int = 8,
) -> Path:
    """Up to `per_kind` correct and `per_kind` wrong test predictions, with true and predicted
    class and the predicted class's probability."""
    right, wrong = np.flatnonzero(pred == y)[:per_kind], np.flatnonzero(pred != y)[:per_kind]
    fig, axes = plt.subplots(2, per_kind, figsize=(1.7 * per_kind, 4.2))
    for row, (name, idx) in enumerate((("correct", right), ("wrong", wrong))):
        for col in range(per_kind):
            ax = axes[row, col]
            ax.axis("off")
            if col >= len(idx):
                continue
            i = idx[col]
            img = pixels[i]
            ax.imshow(img[..., 0] if img.shape[2] == 1 else img, cmap="gray")
            color = "green" if name == "correct" else "red"
            ax.set_title(
                f"true {classes[y[i]]}\npred {classes[pred[i]]} {probs[i, pred[i]]:.2f}",
                fontsize=7,
                color=color,
            )
    fig.suptitle("Test predictions: correct (top), wrong (bottom)")
    return _save(fig, path)
