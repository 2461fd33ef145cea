"""Each breast against the woman's other breast, at evaluation."""

import numpy as np
import pytest

from breastcad.config import ThresholdConfig
from breastcad.evaluation.bilateral import (
    bilateral_comparison,
    bilateral_probability,
    bilateral_scores,
    fit_bilateral,
    log_odds,
)

SENSITIVE = ThresholdConfig(policy="min_sensitivity", value=0.95)


def _women(n_women: int, seed: int = 0, effect: float = 1.0):
    """Two breasts per woman; in half of the women one breast is abnormal. A woman-level offset
    (say, density) moves both of her scores and dwarfs the lesion's own effect."""
    rng = np.random.default_rng(seed)
    offset = np.repeat(rng.normal(0, 3, n_women), 2)
    y = np.zeros(2 * n_women, dtype=int)
    y[np.arange(0, n_women, 2) * 2] = 1  # the first breast of every other woman
    score = offset + effect * y
    p = 1 / (1 + np.exp(-score))
    probs = np.stack([1 - p, p], axis=1)
    other = np.arange(2 * n_women) ^ 1  # 0<->1, 2<->3, ...
    groups = np.repeat(np.arange(n_women), 2)
    return y, probs, other, groups


def test_bilateral_score_removes_what_both_breasts_share():
    y, probs, other, groups = _women(40)
    out = bilateral_comparison(y, probs, other, groups, positive=1, n_boot=200)
    assert out is not None and out["images"] == 80 and out["positives"] == 20
    assert out["auc_bilateral"] == pytest.approx(1.0, abs=1e-9)  # the offset cancels exactly
    assert out["auc_single"] < 0.8  # the offset hides the lesion when each breast is alone
    low, high = out["auc_difference_ci"]
    assert 0 < low <= high and out["without_partner"] == 0
    assert out["auc_single_ci"][0] <= out["auc_single"] <= out["auc_single_ci"][1]
    assert "40 women" in out["interval"]


def test_unpaired_images_are_left_out_and_degenerate_input_gives_none():
    y, probs, other, groups = _women(10)
    other = other.copy()
    other[[0, 1]] = -1  # one woman's pair unknown
    scores = bilateral_scores(log_odds(probs, 1), other)
    assert np.isnan(scores[:2]).all() and not np.isnan(scores[2:]).any()
    out = bilateral_comparison(y, probs, other, groups, positive=1, n_boot=50)
    assert out["images"] == 18 and out["without_partner"] == 2
    unresampled = bilateral_comparison(y, probs, other, groups, positive=1, n_boot=0)
    assert unresampled["auc_bilateral"] == out["auc_bilateral"]
    assert unresampled["auc_bilateral_ci"] is None and unresampled["auc_difference_ci"] is None
    assert bilateral_comparison(y, probs, np.full(20, -1), groups, 1) is None  # no pairs
    normal = np.zeros_like(y)
    assert bilateral_comparison(normal, probs, other, groups, 1) is None  # one class only
    assert np.isfinite(log_odds(np.array([[0.0, 1.0], [1.0, 0.0]]), 1)).all()


def test_a_bilateral_fit_on_validation_women_decides_on_other_women():
    """Fitted on one set of women, the bilateral probability rises with the score and its
    threshold keeps the sensitivity asked for; on other women, whose density offsets differ
    and whose lesions are a little clearer (on equal ones the threshold sits exactly on their
    score, where rounding decides), it decides every breast right."""
    y, probs, other, _ = _women(40, seed=0)
    fit = fit_bilateral(probs, other, y, 1, SENSITIVE)
    assert fit is not None and fit["slope"] > 0
    assert fit["validation"]["sensitivity"] >= 0.95 and fit["validation"]["positives"] == 20
    assert 0 < fit["threshold"] < 1
    score = bilateral_scores(log_odds(probs, 1), other)
    p = bilateral_probability(score, fit)
    assert np.all(np.diff(p[np.argsort(score)]) >= 0)  # monotone in the score
    y2, probs2, other2, groups2 = _women(40, seed=1, effect=1.5)
    out = bilateral_comparison(y2, probs2, other2, groups2, 1, n_boot=0, fit=fit)
    decided = out["at_operating_point"]
    assert decided["sensitivity"] == 1.0 and decided["specificity"] == 1.0
    assert decided["accuracy"] == 1.0 and decided["threshold"] == fit["threshold"]
    assert "at_operating_point" not in bilateral_comparison(y2, probs2, other2, groups2, 1, 0)


def test_no_bilateral_fit_without_pairs_of_both_classes_or_a_rising_score():
    y, probs, other, _ = _women(10)
    assert fit_bilateral(probs, np.full(20, -1), y, 1, SENSITIVE) is None  # no pairs
    assert fit_bilateral(probs, other, np.zeros_like(y), 1, SENSITIVE) is None  # one class
    few = np.full(20, -1)
    few[[0, 1]] = [1, 0]  # one woman: two images with a partner
    assert fit_bilateral(probs, few, y, 1, SENSITIVE) is None
    assert fit_bilateral(probs, other, 1 - y, 1, SENSITIVE) is None  # falls with the label
