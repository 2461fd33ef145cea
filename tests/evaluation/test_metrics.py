import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from breastcad.config import ThresholdConfig
from breastcad.evaluation.metrics import (
    average_precision,
    binary_metrics,
    bootstrap_metrics,
    choose_threshold,
    cv_interval,
    expected_calibration_error,
    operating_point_support,
    roc_auc,
    sensitivity_lower_bound,
)


def test_binary_metrics_by_hand():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.3, 0.6, 0.2, 0.1, 0.1, 0.4])
    m = binary_metrics(y, p, threshold=0.5)
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (2, 1, 1, 4)
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(4 / 5)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["npv"] == pytest.approx(4 / 5)
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["brier"] == pytest.approx(np.mean((p - y) ** 2))


def test_undefined_metrics_are_nan_not_errors():
    m = binary_metrics(np.array([0, 0, 0]), np.array([0.1, 0.2, 0.3]), 0.5)
    assert np.isnan(m["roc_auc"]) and np.isnan(m["sensitivity"]) and np.isnan(m["precision"])
    assert m["specificity"] == 1.0


def test_auc_and_average_precision_equal_sklearn_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(4, 50))
        y = rng.integers(0, 2, n)
        if len(set(y)) < 2:
            continue
        p = np.round(rng.random(n), 1)  # many ties
        assert roc_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
        assert average_precision(y, p) == pytest.approx(average_precision_score(y, p), abs=1e-12)


def test_ece_zero_when_calibrated_and_large_when_overconfident():
    rng = np.random.default_rng(0)
    p = rng.random(200_000)
    y = (rng.random(200_000) < p).astype(int)
    assert expected_calibration_error(y, p) < 0.01
    assert expected_calibration_error(y, np.where(p > 0.5, 1.0, 0.0)) > 0.2


def test_threshold_policies():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.45, 0.4, 0.7, 0.8, 0.9])
    assert choose_threshold(y, p, ThresholdConfig(policy="fixed", value=0.3)) == 0.3
    youden = choose_threshold(y, p, ThresholdConfig(policy="youden"))
    assert binary_metrics(y, p, youden)["balanced_accuracy"] == pytest.approx(7 / 8)
    sens = choose_threshold(y, p, ThresholdConfig(policy="min_sensitivity", value=1.0))
    assert sens == 0.4 and binary_metrics(y, p, sens)["sensitivity"] == 1.0


def test_cv_interval_is_corrected_and_clipped():
    values = [0.95, 0.97, 0.96, 0.99, 0.94, 0.98, 0.96, 0.97, 0.95, 1.0]
    s = cv_interval(values, n_train=512, n_test=57)
    naive_half = 1.96 * np.std(values, ddof=1) / np.sqrt(len(values))
    assert s["mean"] == pytest.approx(np.mean(values))
    assert s["ci_high"] - s["mean"] > naive_half or s["ci_high"] == 1.0
    assert s["mean"] - s["ci_low"] > naive_half
    assert s["ci_low"] >= 0.0 and s["ci_high"] <= 1.0


def test_bootstrap_contains_point_and_groups_widen_interval():
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(40), 5)  # 40 "patients" with 5 correlated images each
    patient_p = rng.random(40)
    y = np.repeat((rng.random(40) < patient_p).astype(int), 5)
    p = np.repeat(patient_p, 5)
    flat = bootstrap_metrics(y, p, 0.5, n_boot=500)
    grouped = bootstrap_metrics(y, p, 0.5, groups=groups, n_boot=500)
    for result in (flat, grouped):
        acc = result["accuracy"]
        assert acc["ci_low"] <= acc["value"] <= acc["ci_high"]
    width = lambda r: r["accuracy"]["ci_high"] - r["accuracy"]["ci_low"]  # noqa: E731
    assert width(grouped) > 1.5 * width(flat)  # images of a patient are not independent


def test_sensitivity_lower_bound_is_clopper_pearson():
    assert sensitivity_lower_bound(17, 17) == pytest.approx(0.05 ** (1 / 17))  # 0.838
    assert sensitivity_lower_bound(59, 59) > 0.95 > sensitivity_lower_bound(58, 58)
    assert sensitivity_lower_bound(16, 17) < sensitivity_lower_bound(17, 17)
    assert sensitivity_lower_bound(0, 5) == 0.0


def test_operating_point_support_counts_what_the_threshold_rests_on():
    is_pos = np.array([1, 1, 1, 1, 0, 0, 0], dtype=bool)
    scores = np.array([0.9, 0.8, 0.3, 0.1, 0.5, 0.2, 0.05])
    s = operating_point_support(is_pos, scores, 0.3)
    assert (s["positives"], s["detected"], s["negatives"]) == (4, 3, 3)
    assert s["sensitivity"] == 0.75 and s["specificity"] == pytest.approx(2 / 3)
    assert s["sensitivity_lower_95"] == pytest.approx(sensitivity_lower_bound(3, 4))
