import numpy as np
from sklearn.metrics import (
    balanced_accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

from breastcad.evaluation.classification import (
    classification_metrics,
    decide,
    fit_temperature,
    group_bootstrap,
    group_level,
    nll,
    prior_shift,
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


def test_per_class_figures_and_aucs_equal_sklearns_with_ties_and_empty_classes():
    """The bootstrap's own per-class figures and AUCs are scikit-learn's, where scores tie
    (rounded probabilities), a class is never predicted, or a class is absent."""
    rng = np.random.default_rng(3)
    for k, absent, never_called in ((2, None, None), (3, None, 2), (4, 3, 0)):
        y = rng.integers(0, k, 200)
        if absent is not None:
            y[y == absent] = 0
        probs = np.round(softmax(rng.normal(0, 1, (200, k)) + 2.0 * np.eye(k)[y]), 1) + 0.05
        if never_called is not None:
            probs[:, never_called] = 0.0
        probs /= probs.sum(1, keepdims=True)
        classes = [f"c{i}" for i in range(k)]
        m = classification_metrics(y, probs, classes, positive=1)
        pred = decide(probs, 1, None)
        p, r, f, support = precision_recall_fscore_support(
            y, pred, labels=range(k), zero_division=0
        )
        mine = np.array(
            [[m["per_class"][c][key] for c in classes] for key in ("precision", "recall", "f1")]
        )
        assert np.allclose(mine, [p, r, f], atol=1e-12)
        assert [m["per_class"][c]["support"] for c in classes] == support.tolist()
        assert m["confusion"] == confusion_matrix(y, pred, labels=range(k)).tolist()
        for i, c in enumerate(classes):
            present = 0 < (y == i).sum() < len(y)
            auc = m["per_class"][c]["auc"]
            assert (
                np.isnan(auc)
                if not present
                else np.isclose(auc, roc_auc_score(y == i, probs[:, i]), atol=1e-12)
            )


def test_temperature_scaling_fixes_overconfidence_without_changing_decisions():
    y, logits = _data(seed=1)
    hot = logits * 4  # overconfident
    t = fit_temperature(hot, y)
    assert t > 2
    assert nll(hot, y, t) < nll(hot, y)
    assert (softmax(hot, t).argmax(1) == softmax(hot).argmax(1)).all()


def test_the_prior_shift_turns_a_class_weighted_model_into_the_unweighted_ones_posterior():
    """Balanced class weights train towards equal classes; adding log pi_k of the training
    counts gives back the data's own posterior: mean P(positive) near the prevalence, the
    unweighted fit's probabilities, and a better argmax accuracy (same ranking)."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    y = (rng.random(4000) < 0.2).astype(int)
    x = rng.normal(0, 1, (4000, 2)) + y[:, None] * 1.2
    balanced = LogisticRegression(class_weight="balanced").fit(x, y)
    plain = LogisticRegression().fit(x, y)
    z = balanced.decision_function(x)
    logits = np.stack([-z / 2, z / 2], axis=1)
    shift = prior_shift(np.bincount(y))
    assert np.isclose(shift[1] - shift[0], np.log(y.mean() / (1 - y.mean())))
    raw, shifted = softmax(logits), softmax(logits, 1.0, shift)
    assert raw[:, 1].mean() > y.mean() + 0.1  # as trained: towards one half
    assert abs(shifted[:, 1].mean() - y.mean()) < 0.02
    assert np.abs(shifted[:, 1] - plain.predict_proba(x)[:, 1]).max() < 0.05
    assert (shifted.argmax(1) == y).mean() > (raw.argmax(1) == y).mean() + 0.05
    assert np.allclose(softmax(logits, 2.0, shift), softmax(logits + shift, 2.0))
    assert np.isfinite(prior_shift(np.array([10, 0, 5]))).all()  # an absent class


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
