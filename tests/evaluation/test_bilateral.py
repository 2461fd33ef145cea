"""Each breast against the woman's other breast, at evaluation."""

import numpy as np
import pytest

from breastcad.evaluation.bilateral import bilateral_comparison, bilateral_scores, log_odds


def _women(n_women: int, seed: int = 0):
    """Two breasts per woman; in half of the women one breast is abnormal. A woman-level offset
    (say, density) moves both of her scores and dwarfs the lesion's own effect."""
    rng = np.random.default_rng(seed)
    offset = np.repeat(rng.normal(0, 3, n_women), 2)
    y = np.zeros(2 * n_women, dtype=int)
    y[np.arange(0, n_women, 2) * 2] = 1  # the first breast of every other woman
    score = offset + 1.0 * y
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
