"""Bilateral comparison on held-out images: is a breast more suspicious than the same woman's
other breast?

An image's score is its log-odds of the positive class; its bilateral score subtracts the
score of its contralateral partner (`breastcad.data.pairs.contralateral`), so what both
breasts share (density, exposure, the woman's anatomy) cancels and what one breast has alone
remains. Any image model gets this at evaluation without retraining; it is reported beside the
single-image figures on the same images, with intervals from resampling whole women.

To predict with it, a run fits a probability for the bilateral score where it calibrates
(`fit_bilateral`: logistic regression on the validation images that have their other breast,
and a threshold by the run's operating-point policy); the bundle carries it and the Predictor
scores a woman's two images with it (`Predictor.predict_pairs`, `breastcad predict --pairs`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from breastcad.config import ThresholdConfig
from breastcad.evaluation.classification import group_resamples
from breastcad.evaluation.metrics import choose_threshold, operating_point_support, roc_auc

PROBABILITY = "sigmoid(slope x bilateral score + intercept)"
SCORE = "log-odds of the positive class minus that of the same woman's other breast"


def log_odds(probs: np.ndarray, positive: int, eps: float = 1e-7) -> np.ndarray:
    p = np.clip(probs[:, positive], eps, 1 - eps)
    return np.log(p) - np.log1p(-p)


def bilateral_scores(score: np.ndarray, other: np.ndarray) -> np.ndarray:
    """`score` minus the partner's score; NaN where an image has no partner (`other` -1)."""
    out = np.full(len(score), np.nan)
    paired = other >= 0
    out[paired] = score[paired] - score[other[paired]]
    return out


def bilateral_probability(score: np.ndarray, fit: dict[str, Any]) -> np.ndarray:
    """P(positive) of bilateral scores under a `fit_bilateral` fit."""
    return 1.0 / (1.0 + np.exp(-(fit["slope"] * np.asarray(score) + fit["intercept"])))


def fit_bilateral(
    probs: np.ndarray, other: np.ndarray, y: np.ndarray, positive: int, policy: ThresholdConfig
) -> dict[str, Any] | None:
    """A probability for the bilateral score and a threshold on it, fitted on the images that
    have a partner (the validation part: `probs` calibrated as deployed): logistic regression
    of the label on the score, then the operating-point `policy` on its probability. None when
    fewer than four images have a partner, one class is missing among them, or the score does
    not rise with the label there (a non-positive slope would turn the ranking round)."""
    from sklearn.linear_model import LogisticRegression

    paired = np.flatnonzero(np.asarray(other) >= 0)
    label = (np.asarray(y)[paired] == positive).astype(int)
    if len(paired) < 4 or label.min() == label.max():
        return None
    score = bilateral_scores(log_odds(probs, positive), other)[paired]
    regression = LogisticRegression(C=1.0).fit(score[:, None], label)
    fit = {"slope": float(regression.coef_[0, 0]), "intercept": float(regression.intercept_[0])}
    if fit["slope"] <= 0:
        return None
    p = bilateral_probability(score, fit)
    threshold = choose_threshold(label, p, policy)
    return {
        **fit,
        "threshold": threshold,
        "probability": PROBABILITY,
        "score": SCORE,
        "validation": operating_point_support(label == 1, p, threshold),
    }


def bilateral_comparison(
    y: np.ndarray,
    probs: np.ndarray,
    other: np.ndarray,
    groups: np.ndarray,
    positive: int,
    n_boot: int = 1000,
    seed: int = 0,
    fit: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """ROC AUC for the positive class of the single-image score and of the bilateral score
    over the images that have a partner, each with a 95% percentile interval from resampling
    whole `groups` (women), and the interval of their difference from the same resamples
    (no intervals when `n_boot` is 0); with a `fit_bilateral` fit from validation, also the
    decisions of its threshold on these images. None when fewer than two images have a
    partner or one class is missing among them."""
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

    decided = {}
    if fit is not None:
        p = bilateral_probability(both, fit)
        flagged = p >= fit["threshold"]
        decided = {
            "at_operating_point": {
                **operating_point_support(label == 1, p, fit["threshold"]),
                "accuracy": float((flagged == (label == 1)).mean()),
                "threshold": fit["threshold"],
            }
        }
    return {
        "images": len(paired),
        "positives": int(label.sum()),
        "without_partner": int(len(y) - len(paired)),
        "auc_single": float(point[0]),
        "auc_single_ci": interval(boot[:, 0]),
        "auc_bilateral": float(point[1]),
        "auc_bilateral_ci": interval(boot[:, 1]),
        "auc_difference_ci": interval(boot[:, 1] - boot[:, 0]),
        "score": SCORE,
        "interval": f"95% percentile bootstrap, {n_boot} resamples of "
        f"{len(np.unique(groups[paired]))} women",
        **decided,
    }
