"""Metrics for image classifiers with any number of classes, calibration, and group bootstrap.

The positive class (malignant, IDC or abnormal) has a decision threshold: a sample is called
positive when P(positive) >= threshold, otherwise the most probable other class. With the
threshold at None the decision is the argmax. Sensitivity and specificity are those of the
positive class against all others.

Calibration is temperature scaling, optionally after a prior shift: in theory a model
trained towards equal classes (balanced class weights, over- or undersampling) scores
p(k|x) / pi_k up to a constant, so adding log pi_k of its training part (`prior_shift`) gives
back the data's own class frequencies (`--calibration prior-shift`; fits far from the
population optimum are less biased than that, and the shift then over-corrects).

Example:
    >>> shift = prior_shift(train_counts)  # doctest: +SKIP
    >>> t = fit_temperature(val_logits + shift, val_y)  # doctest: +SKIP
    >>> probs = softmax(test_logits, t, shift)  # doctest: +SKIP
    >>> m = classification_metrics(test_y, probs, classes, positive, 0.31)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

# SciPy and scikit-learn (1.5 s to import) are imported where metrics are computed: `softmax`
# and `decide` are on every prediction's path, which needs neither.

SCALARS = (
    "accuracy",
    "balanced_accuracy",
    "sensitivity",
    "specificity",
    "macro_f1",
    "auc_positive",
    "macro_auc",
    "brier",
    "ece",
)


def softmax(
    logits: np.ndarray, temperature: float = 1.0, shift: np.ndarray | None = None
) -> np.ndarray:
    """Class probabilities of softmax((logits + shift) / temperature); no shift: zero."""
    z = np.asarray(logits, dtype=np.float64)
    if shift is not None:
        z = z + np.asarray(shift, dtype=np.float64)
    z = z / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> float:
    p = softmax(logits, temperature)[np.arange(len(y)), y]
    return float(-np.log(np.clip(p, 1e-12, 1.0)).mean())


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """Temperature scaling (Guo et al. 2017): the T > 0 minimising validation NLL of
    softmax(logits / T). Accuracy and ranking are unchanged; only confidence moves."""
    from scipy.optimize import minimize_scalar

    res = minimize_scalar(
        lambda log_t: nll(logits, y, float(np.exp(log_t))), bounds=(-3.0, 3.0), method="bounded"
    )
    return float(np.exp(res.x))


def prior_shift(counts: np.ndarray) -> np.ndarray:
    """Per-class logit shift, log of each class's share of `counts` (centred), for a model
    trained towards equal classes: the minimiser of a loss weighted by 1 / pi_k (or of one on
    class-balanced resamples) is p(k|x) / pi_k up to a constant, so adding log pi_k restores
    the posterior under the training data's own class frequencies (Saerens et al. 2002;
    Menon et al. 2021, post-hoc logit adjustment). The decision at probability 0.5 then
    favours the likelier class, as accuracy wants; with two classes the ranking (AUC) is
    unchanged."""
    counts = np.maximum(np.asarray(counts, dtype=np.float64), 1.0)  # an absent class: one
    log_prior = np.log(counts / counts.sum())
    return log_prior - log_prior.mean()


def brier(y: np.ndarray, probs: np.ndarray) -> float:
    onehot = np.eye(probs.shape[1])[y]
    return float(((probs - onehot) ** 2).sum(axis=1).mean())


def top_label_ece(y: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error of the predicted class's confidence, equal-width bins."""
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    err = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            err += mask.mean() * abs((pred[mask] == y[mask]).mean() - conf[mask].mean())
    return float(err)


def decide(probs: np.ndarray, positive: int, threshold: float | None) -> np.ndarray:
    """Class decisions: positive when P(positive) >= threshold, else the best other class."""
    if threshold is None:
        return probs.argmax(axis=1)
    others = probs.copy()
    others[:, positive] = -1.0
    return np.where(probs[:, positive] >= threshold, positive, others.argmax(axis=1))


def _auc(y_bin: np.ndarray, score: np.ndarray) -> float:
    from breastcad.evaluation.metrics import roc_auc  # the Mann-Whitney statistic, as sklearn's

    return roc_auc(y_bin, score) if 0 < y_bin.sum() < len(y_bin) else float("nan")


def _per_class(matrix: np.ndarray) -> tuple[np.ndarray, ...]:
    """Precision, recall, F1 and support of each class from a confusion matrix (rows true,
    columns predicted), 0 where undefined: scikit-learn's `precision_recall_fscore_support`
    with `zero_division=0`, without its checks (the group bootstrap calls this 1,000 times)."""
    tp = np.diag(matrix).astype(float)
    support, predicted = matrix.sum(axis=1), matrix.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        denominator = support + predicted  # 2 tp + fp + fn
        f1 = np.where(denominator > 0, 2 * tp / denominator, 0.0)
    return precision, recall, f1, support


def classification_metrics(
    y: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
    positive: int,
    threshold: float | None = None,
) -> dict[str, Any]:
    """Scalars (see `SCALARS`), per-class precision/recall/F1/AUC and the confusion matrix
    (rows true, columns predicted)."""
    y = np.asarray(y)
    k = len(classes)
    pred = decide(probs, positive, threshold)
    matrix = np.bincount(y.astype(np.int64) * k + pred, minlength=k * k).reshape(k, k)
    p, r, f, support = _per_class(matrix)
    present = support > 0
    pos_true, pos_pred = y == positive, pred == positive
    aucs = [_auc((y == c).astype(int), probs[:, c]) for c in range(k)]
    finite = [a for a in aucs if not np.isnan(a)]
    scalars = {
        "accuracy": float((pred == y).mean()),
        "balanced_accuracy": float(r[present].mean()),
        "sensitivity": float((pos_pred & pos_true).sum() / max(pos_true.sum(), 1)),
        "specificity": float((~pos_pred & ~pos_true).sum() / max((~pos_true).sum(), 1)),
        "macro_f1": float(f[present].mean()),
        "auc_positive": aucs[positive],
        "macro_auc": float(np.mean(finite)) if finite else float("nan"),
        "brier": brier(y, probs),
        "ece": top_label_ece(y, probs),
    }
    per_class = {
        c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "auc": aucs[i]}
        | {"support": int(support[i])}
        for i, c in enumerate(classes)
    }
    return {"scalars": scalars, "per_class": per_class, "confusion": matrix.tolist()}


def group_resamples(groups: np.ndarray, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """`n_boot` bootstrap samples of row indices, each drawing whole groups (patients,
    duplicate clusters) with replacement, so correlated images never narrow an interval."""
    uniq, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(uniq))]
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        yield np.concatenate([members[g] for g in rng.integers(0, len(uniq), len(uniq))])


def group_bootstrap(
    y: np.ndarray,
    probs: np.ndarray,
    groups: np.ndarray,
    classes: list[str],
    positive: int,
    threshold: float | None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Each scalar with a 95% percentile interval from resampling whole groups (patients,
    duplicate clusters) with replacement, so correlated images never narrow the interval."""
    point = classification_metrics(y, probs, classes, positive, threshold)["scalars"]
    samples: dict[str, list[float]] = {m: [] for m in SCALARS}
    for idx in group_resamples(groups, n_boot, seed):
        boot = classification_metrics(y[idx], probs[idx], classes, positive, threshold)
        for m in SCALARS:
            samples[m].append(boot["scalars"][m])
    out = {}
    for m in SCALARS:
        values = np.asarray(samples[m], dtype=float)
        values = values[~np.isnan(values)]
        low, high = np.percentile(values, [2.5, 97.5]) if len(values) else (np.nan, np.nan)
        out[m] = {"value": point[m], "ci_low": float(low), "ci_high": float(high)}
    out["n_groups"] = {"value": len(np.unique(groups)), "ci_low": None, "ci_high": None}
    return out


def group_level(
    y: np.ndarray, probs: np.ndarray, groups: np.ndarray, positive: int, threshold: float
) -> dict[str, Any] | None:
    """Patient-level results where each group has one label: the group's score is its mean
    P(positive). Groups with mixed labels (IDC patients have both) get per-group accuracy."""
    frame_groups, inverse = np.unique(groups, return_inverse=True)
    n = len(frame_groups)
    score = np.bincount(inverse, probs[:, positive], n) / np.bincount(inverse, minlength=n)
    is_pos = (y == positive).astype(float)
    pos_share = np.bincount(inverse, is_pos, n) / np.bincount(inverse, minlength=n)
    pure = (pos_share == 0) | (pos_share == 1)
    if pure.all():
        label = pos_share.astype(int)
        called = score >= threshold
        return {
            "kind": "one label per group",
            "n_groups": n,
            "auc": _auc(label, score),
            "sensitivity": float((called & (label == 1)).sum() / max(label.sum(), 1)),
            "specificity": float((~called & (label == 0)).sum() / max((label == 0).sum(), 1)),
            "accuracy": float((called == label.astype(bool)).mean()),
        }
    correct = decide(probs, positive, threshold) == y
    per_group = np.bincount(inverse, correct.astype(float), n) / np.bincount(inverse, minlength=n)
    return {
        "kind": "mixed labels within groups: accuracy per group",
        "n_groups": n,
        "per_group_accuracy": {
            str(g): float(a) for g, a in zip(frame_groups, per_group, strict=True)
        },
        "median_accuracy": float(np.median(per_group)),
        "min_accuracy": float(per_group.min()),
    }
