"""The group bootstrap every image run and `breastcad evaluate` make (1,000 resamples of whole
groups, every metric of `classification_metrics` on each): breastcad's own per-class figures
(one confusion matrix) and its Mann-Whitney AUC, against the same loop with scikit-learn's
`precision_recall_fscore_support`, `confusion_matrix` and `roc_auc_score` in their place (what
breastcad used before). Both on the same synthetic test sets, alternated; medians of the
repeats, their ratio, and the largest difference between the two sets of figures.

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
from breastcad.evaluation.classification import SCALARS, group_bootstrap, softmax

SETS = {  # name: images, groups, classes
    "BUSI 3-class": (126, 98, 3),
    "BreastMNIST": (78, 78, 2),
    "mini-MIAS": (64, 32, 2),
    "IDC patches": (2180, 3, 2),
}


def sklearn_auc(y_bin: np.ndarray, score: np.ndarray) -> float:
    """What `classification._auc` was: scikit-learn's ROC AUC."""
    if not 0 < y_bin.sum() < len(y_bin):
        return float("nan")
    return float(roc_auc_score(y_bin, score))


def sklearn_per_class(matrix: np.ndarray) -> tuple[np.ndarray, ...]:
    """What `classification._per_class` replaces: scikit-learn's per-class figures (of the
    labels and decisions the confusion matrix counts, in another order)."""
    k = len(matrix)
    y = np.repeat(np.arange(k), matrix.sum(axis=1))
    pred = np.concatenate([np.repeat(np.arange(k), row) for row in matrix])
    confusion_matrix(y, pred, labels=range(k))  # what the old code computed besides
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return precision_recall_fscore_support(y, pred, labels=range(k), zero_division=0)


def test_set(n: int, n_groups: int, k: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    probs = softmax(rng.normal(0, 1, (n, k)) + 1.2 * np.eye(k)[y])
    return y, probs, rng.integers(0, n_groups, n).astype(str), [f"c{i}" for i in range(k)]


def timed(helpers: tuple | None, data, resamples: int) -> tuple[float, dict]:
    """Seconds of a group bootstrap, and its figures, with `helpers` (AUC, per-class figures)
    in place of breastcad's own (None: breastcad's)."""
    y, probs, groups, classes = data
    own = classification._auc, classification._per_class
    if helpers:
        classification._auc, classification._per_class = helpers
    try:
        start = time.perf_counter()
        out = group_bootstrap(y, probs, groups, classes, 1, 0.3, resamples, 0)
        return time.perf_counter() - start, out
    finally:
        classification._auc, classification._per_class = own


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    print(f"\n{args.resamples} group resamples, medians of {args.repeats} alternated repeats\n")
    print(
        "| test set | scikit-learn's metrics, s | breastcad's, s | speed-up | largest difference |"
    )
    print("|---|---|---|---|---|")
    for name, shape in SETS.items():
        data = test_set(*shape)
        times: dict[str, list[float]] = {"sklearn": [], "own": []}
        for _ in range(args.repeats):
            t_ref, ref = timed((sklearn_auc, sklearn_per_class), data, args.resamples)
            t_own, mine = timed(None, data, args.resamples)
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
