"""Bilateral comparison on held-out images: is a breast more suspicious than the same woman's
other breast?

An image's score is its log-odds of the positive class; its bilateral score subtracts the
score of its contralateral partner (`breastcad.data.pairs.contralateral`), so what both
breasts share (density, exposure, the woman's anatomy) cancels and what one breast has alone
remains. Any image model gets this at evaluation without retraining; it is reported beside the
single-image figures on the same images, with intervals from resampling whole women, and it is
not how the model predicts (the Predictor sees one image at a time).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from breastcad.evaluation.classification import group_resamples
from breastcad.evaluation.metrics import roc_auc


def log_odds(probs: np.ndarray, positive: int, eps: float = 1e-7) -> np.ndarray:
    p = np.clip(probs[:, positive], eps, 1 - eps)
    return np.log(p) - np.log1p(-p)


def bilateral_scores(score: np.ndarray, other: np.ndarray) -> np.ndarray:
    """`score` minus the partner's score; NaN where an image has no partner (`other` -1)."""
    out = np.full(len(score), np.nan)
    paired = other >= 0
    out[paired] = score[paired] - score[other[paired]]
    return out


def bilateral_comparison(
    y: np.ndarray,
    probs: np.ndarray,
    other: np.ndarray,
    groups: np.ndarray,
    positive: int,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any] | None:
    """ROC AUC for the positive class of the single-image score and of the bilateral score
    over the images that have a partner, each with a 95% percentile interval from resampling
    whole `groups` (women), and the interval of their difference from the same resamples
    (no intervals when `n_boot` is 0). None when fewer than two images have a partner or one
    class is missing among them."""
    paired = np.flatnonzero(other >= 0)
    label = (np.asarray(y)[paired] == positive).astype(int)
    if len(paired) < 2 or label.min() == label.max():
        return None
    score = log_odds(probs, positive)
    single, both = score[paired], bilateral_scores(score, other)[paired]

    def aucs(idx: np.ndarray) -> tuple[float, float]:
        if label[idx].min() == label[idx].max():
            return np.nan, np.nan
        return roc_auc(label[idx], single[idx]), roc_auc(label[idx], both[idx])

    point = aucs(np.arange(len(paired)))
    drawn = [aucs(i) for i in group_resamples(np.asarray(groups)[paired], n_boot, seed)]
    boot = np.array(drawn, dtype=float).reshape(-1, 2)
    boot = boot[~np.isnan(boot).any(axis=1)]

    def interval(values: np.ndarray) -> list[float] | None:
        return [float(v) for v in np.percentile(values, [2.5, 97.5])] if len(values) else None

    return {
        "images": len(paired),
        "positives": int(label.sum()),
        "without_partner": int(len(y) - len(paired)),
        "auc_single": float(point[0]),
        "auc_single_ci": interval(boot[:, 0]),
        "auc_bilateral": float(point[1]),
        "auc_bilateral_ci": interval(boot[:, 1]),
        "auc_difference_ci": interval(boot[:, 1] - boot[:, 0]),
        "score": "log-odds of the positive class minus that of the same woman's other breast",
        "interval": f"95% percentile bootstrap, {n_boot} resamples of "
        f"{len(np.unique(groups[paired]))} women",
    }
