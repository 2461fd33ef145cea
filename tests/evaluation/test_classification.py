import numpy as np
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from breastcad.evaluation.classification import (
    classification_metrics,
    decide,
    fit_temperature,
    group_bootstrap,
    group_level,
    nll,
    softmax,
)


def _data(n=300, k=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), y] += 1.5
    return y, logits


def test_metrics_match_sklearn_and_threshold_moves_the_decision():
    y, logits = _data()
    probs = softmax(logits)
    m = classification_metrics(y, probs, ["benign", "malignant", "normal"], positive=1)
    assert np.isclose(
        m["scalars"]["balanced_accuracy"], balanced_accuracy_score(y, probs.argmax(1))
    )
    assert np.isclose(m["scalars"]["auc_positive"], roc_auc_score(y == 1, probs[:, 1]))
    assert np.asarray(m["confusion"]).sum() == len(y)
    low = classification_metrics(y, probs, ["b", "m", "n"], 1, threshold=0.05)["scalars"]
    assert (
        low["sensitivity"] > m["scalars"]["sensitivity"]
        and low["specificity"] < m["scalars"]["specificity"]
    )
    assert (decide(probs, 1, 0.0) == 1).all()


def test_temperature_scaling_fixes_overconfidence_without_changing_decisions():
    y, logits = _data(seed=1)
    hot = logits * 4  # overconfident
    t = fit_temperature(hot, y)
    assert t > 2
    assert nll(hot, y, t) < nll(hot, y)
    assert (softmax(hot, t).argmax(1) == softmax(hot).argmax(1)).all()


def test_group_bootstrap_resamples_groups_and_group_level_results():
    y, logits = _data(n=200, k=2)
    groups = np.repeat(np.arange(20), 10)
    probs = softmax(logits)
    ci = group_bootstrap(y, probs, groups, ["benign", "malignant"], 1, 0.5, n_boot=200)
    assert ci["n_groups"]["value"] == 20
    for key in ("accuracy", "macro_auc", "sensitivity"):
        assert ci[key]["ci_low"] <= ci[key]["value"] <= ci[key]["ci_high"]
    mixed = group_level(y, probs, groups, 1, 0.5)
    assert mixed["kind"].startswith("mixed") and len(mixed["per_group_accuracy"]) == 20
    pure_y = np.repeat(np.arange(20) % 2, 10)
    pure = group_level(pure_y, probs, groups, 1, 0.5)
    assert pure["kind"] == "one label per group" and pure["n_groups"] == 20
