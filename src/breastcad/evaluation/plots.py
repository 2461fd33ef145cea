"""Plots saved as PNG next to the numbers: class balance, learning curves, ROC, PR, confusion
matrix, reliability diagram and the comparison of models over CV folds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from breastcad.evaluation.metrics import reliability_curve

Curve = tuple[np.ndarray, np.ndarray]  # labels, P(malignant)


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def class_balance(counts: Mapping[str, int], path: Path, title: str = "Class balance") -> Path:
    """Bar chart and pie of the class counts."""
    fig, (bar, pie) = plt.subplots(1, 2, figsize=(8, 3.5))
    names, values = list(counts), list(counts.values())
    colors = plt.cm.tab10.colors[: len(names)]
    bar.bar(names, values, color=colors)
    for i, v in enumerate(values):
        bar.text(i, v, str(v), ha="center", va="bottom")
    bar.set_ylabel("samples")
    pie.pie(values, labels=names, autopct="%1.1f%%", colors=colors)
    fig.suptitle(title)
    return _save(fig, path)


def learning_curves(
    histories: Sequence[Sequence[Mapping[str, float]]], path: Path, title: str
) -> Path | None:
    """Loss and accuracy per epoch, train vs validation; mean and SD band over several fits."""
    if not histories or not any(histories):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, metric in zip(axes, ("loss", "acc"), strict=True):
        for stage, color in (("train", "tab:blue"), ("val", "tab:orange")):
            key = f"{stage}_{metric}"
            length = max(len(h) for h in histories)
            grid = np.full((len(histories), length), np.nan)
            for i, h in enumerate(histories):
                for j, row in enumerate(h):
                    grid[i, j] = row.get(key, np.nan)
            if np.isnan(grid).all():
                continue
            epochs = np.arange(1, length + 1)
            with np.errstate(all="ignore"):
                mean, sd = np.nanmean(grid, axis=0), np.nanstd(grid, axis=0)
            label = "train" if stage == "train" else "validation"
            ax.plot(epochs, mean, color=color, label=label)
            if len(histories) > 1:
                ax.fill_between(epochs, mean - sd, mean + sd, color=color, alpha=0.2)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy" if metric == "acc" else "loss")
        ax.legend()
    n = f" (mean ± SD over {len(histories)} fits)" if len(histories) > 1 else ""
    fig.suptitle(title + n)
    return _save(fig, path)


def roc_curves(curves: Mapping[str, Curve], path: Path, title: str = "ROC") -> Path:
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (y, p) in curves.items():
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity (malignant)", title=title)
    ax.legend(loc="lower right")
    return _save(fig, path)


def pr_curves(curves: Mapping[str, Curve], path: Path, title: str = "Precision-recall") -> Path:
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (y, p) in curves.items():
        precision, recall, _ = precision_recall_curve(y, p)
        ax.plot(recall, precision, label=name)
    prevalence = np.mean(next(iter(curves.values()))[0]) if curves else 0
    ax.axhline(prevalence, ls="--", color="grey", lw=0.8, label=f"prevalence {prevalence:.2f}")
    ax.set(xlabel="recall (sensitivity)", ylabel="precision", title=title, ylim=(0, 1.02))
    ax.legend(loc="lower left")
    return _save(fig, path)


def confusion_matrix(counts: Mapping[str, int], path: Path, title: str) -> Path:
    """2x2 confusion matrix (rows: truth, columns: prediction) from tp/fp/tn/fn counts."""
    matrix = np.array([[counts["tn"], counts["fp"]], [counts["fn"], counts["tp"]]])
    fig, ax = plt.subplots(figsize=(4, 3.6))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(
            j,
            i,
            str(v),
            ha="center",
            va="center",
            color="white" if v > matrix.max() / 2 else "black",
        )
    ax.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=["benign", "malignant"],
        yticklabels=["benign", "malignant"],
        xlabel="predicted",
        ylabel="true",
        title=title,
    )
    return _save(fig, path)


def reliability_diagram(
    curves: Mapping[str, Curve], path: Path, title: str = "Reliability"
) -> Path:
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (y, p) in curves.items():
        mean_p, freq, _ = reliability_curve(np.asarray(y), np.asarray(p))
        ax.plot(mean_p, freq, marker="o", label=name)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8, label="perfect calibration")
    ax.set(xlabel="predicted P(malignant)", ylabel="observed fraction malignant", title=title)
    ax.legend(loc="upper left")
    return _save(fig, path)


def metric_comparison(
    per_fold: Mapping[str, Mapping[str, Sequence[float]]],
    path: Path,
    metrics: Sequence[str],
    title: str,
) -> Path:
    """Box plots of per-fold values, one panel per metric, one box per model."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.8))
    axes = np.atleast_1d(axes)
    models = list(per_fold)
    for ax, metric in zip(axes, metrics, strict=True):
        ax.boxplot([per_fold[m][metric] for m in models], tick_labels=models)
        ax.set_title(metric)
        ax.tick_params(axis="x", rotation=45)
    fig.suptitle(title)
    return _save(fig, path)
