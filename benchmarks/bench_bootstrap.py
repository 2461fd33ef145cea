"""The group bootstrap every image run and `breastcad evaluate` make (1,000 resamples of whole
groups, every metric of `classification_metrics` on each): breastcad's own per-class figures
(one confusion matrix) and its Mann-Whitney AUC, against the same loop on scikit-learn's
`precision_recall_fscore_support`, `confusion_matrix` and `roc_auc_score` (what breastcad
used before). Both on the same synthetic test sets, alternated; medians of the repeats, their
ratio, and the largest difference between the two sets of figures.

    .venv/bin/python benchmarks/bench_bootstrap.py [--repeats 3] [--resamples 1000]

Test sets shaped like the bench's: BUSI (126 images, 98 groups, 3 classes), BreastMNIST (78,
78, 2), mini-MIAS (64, 32 women, 2), IDC (2,180 patches, 3 patients, 2).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

from breastcad.evaluation import classification
from breastcad.evaluation.classification import SCALARS, decide, group_bootstrap, softmax

SETS = {  # name: images, groups, classes
    "BUSI 3-class": (126, 98, 3),
    "BreastMNIST": (78, 78, 2),
    "mini-MIAS": (64, 32, 2),
    "IDC patches": (2180, 3, 2),
}


def sklearn_metrics(y, probs, classes, positive, threshold=None):
    """`classification_metrics` as it was, on scikit-learn's functions."""
    k = len(classes)
    pred = decide(probs, positive, threshold)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p, r, f, support = precision_recall_fscore_support(
            y, pred, labels=range(k), zero_division=0
        )
    present = support > 0
    pos_true, pos_pred = y == positive, pred == positive

    def auc(y_bin, score):
        if not 0 < y_bin.sum() < len(y_bin):
            return float("nan")
        return float(roc_auc_score(y_bin, score))

    aucs = [auc((y == c).astype(int), probs[:, c]) for c in range(k)]
    finite = [a for a in aucs if not np.isnan(a)]
    scalars = {
        "accuracy": float((pred == y).mean()),
        "balanced_accuracy": float(r[present].mean()),
        "sensitivity": float((pos_pred & pos_true).sum() / max(pos_true.sum(), 1)),
        "specificity": float((~pos_pred & ~pos_true).sum() / max((~pos_true).sum(), 1)),
        "macro_f1": float(f[present].mean()),
        "auc_positive": aucs[positive],
        "macro_auc": float(np.mean(finite)) if finite else float("nan"),
        "brier": classification.brier(y, probs),
        "ece": classification.top_label_ece(y, probs),
    }
    per_class = {
        c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "auc": aucs[i]}
        | {"support": int(support[i])}
        for i, c in enumerate(classes)
    }
    matrix = confusion_matrix(y, pred, labels=range(k)).tolist()
    return {"scalars": scalars, "per_class": per_class, "confusion": matrix}


def test_set(n: int, n_groups: int, k: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    probs = softmax(rng.normal(0, 1, (n, k)) + 1.2 * np.eye(k)[y])
    return y, probs, rng.integers(0, n_groups, n).astype(str), [f"c{i}" for i in range(k)]


def timed(metrics, data, resamples: int) -> tuple[float, dict]:
    y, probs, groups, classes = data
    own = classification.classification_metrics
    classification.classification_metrics = metrics  # what group_bootstrap calls
    try:
        start = time.perf_counter()
        out = group_bootstrap(y, probs, groups, classes, 1, 0.3, resamples, 0)
        return time.perf_counter() - start, out
    finally:
        classification.classification_metrics = own


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    own = classification.classification_metrics
    print(f"\n{args.resamples} group resamples, medians of {args.repeats} alternated repeats\n")
    print(
        "| test set | scikit-learn's metrics, s | breastcad's, s | speed-up | largest difference |"
    )
    print("|---|---|---|---|---|")
    for name, shape in SETS.items():
        data = test_set(*shape)
        times: dict[str, list[float]] = {"sklearn": [], "own": []}
        for _ in range(args.repeats):
            t_ref, ref = timed(sklearn_metrics, data, args.resamples)
            t_own, mine = timed(own, data, args.resamples)
            times["sklearn"].append(t_ref)
            times["own"].append(t_own)
        worst = max(
            abs(ref[m][key] - mine[m][key])
            for m in SCALARS
            for key in ("value", "ci_low", "ci_high")
        )
        slow, fast = statistics.median(times["sklearn"]), statistics.median(times["own"])
        print(f"| {name} | {slow:.2f} | {fast:.2f} | {slow / fast:.1f}x | {worst:.1e} |")


if __name__ == "__main__":
    main()
