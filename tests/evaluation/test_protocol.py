"""The protocol never lets a test row reach a fit: checked with a recording model."""

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from breastcad.config import ProtocolConfig, RunConfig, ThresholdConfig, TrainConfig
from breastcad.evaluation.protocol import evaluate_model, make_splits
from breastcad.models import registry
from breastcad.models.estimators import SklearnTabular, TorchTabular
from breastcad.models.tabular import cnn1d, logreg

SEEN: list[np.ndarray] = []


class RecordingLogreg(SklearnTabular):
    def fit(self, X, y, *, seed=0):
        SEEN.append(X.copy())
        return super().fit(X, y, seed=seed)


class RecordingCNN(TorchTabular):
    def fit(self, X, y, *, seed=0):
        SEEN.append(X.copy())
        return super().fit(X, y, seed=seed)


@pytest.fixture(scope="module", autouse=True)
def recording_models():
    def make_logreg(**kw):
        base = logreg(**kw)
        return RecordingLogreg(base.name, base.make, base.grid, base.inner_splits)

    def make_cnn(train=None):
        base = cnn1d(train)
        rec = RecordingCNN.__new__(RecordingCNN)
        rec.__dict__.update(base.__dict__)
        return rec

    registry.register_model(
        "rec_logreg", family="sklearn", modality="test", description="records its training rows"
    )(make_logreg)
    registry.register_model(
        "rec_cnn", family="torch", modality="test", description="records its training rows"
    )(make_cnn)
    yield
    del registry._REGISTRY["rec_logreg"], registry._REGISTRY["rec_cnn"]


def rows(X):
    return {tuple(r) for r in np.round(X, 12)}


def test_published_split_is_sklearn_stratified_80_20_seed_0(wdbc):
    split = make_splits(wdbc.y, ProtocolConfig(kind="published"))[0]
    train, test = train_test_split(np.arange(569), test_size=0.2, stratify=wdbc.y, random_state=0)
    assert (len(split.train), len(split.test)) == (455, 114)
    assert set(split.test) == set(test) and set(split.train) == set(train)


def test_repeated_cv_partitions_each_repeat_and_stratifies(wdbc):
    splits = make_splits(wdbc.y, ProtocolConfig(kind="cv", n_splits=10, n_repeats=3))
    assert len(splits) == 30
    for r in range(3):
        tests = [s.test for s in splits if s.repeat == r]
        assert sorted(np.concatenate(tests).tolist()) == list(range(569))
        for t in tests:
            assert abs(wdbc.y[t].mean() - wdbc.y.mean()) < 0.05
    for s in splits:
        assert not set(s.train) & set(s.test)


@pytest.mark.parametrize("name", ["rec_logreg", "rec_cnn"])
def test_no_test_row_is_ever_seen_in_fitting(wdbc, name):
    SEEN.clear()
    cfg = RunConfig(
        models=[name],
        threshold=ThresholdConfig(policy="youden"),
        train=TrainConfig(epochs=1, progress=False),
        model_params={"rec_logreg": {"grid": {"C": [0.1, 1.0]}, "inner_splits": 3}},
    )
    protocol = ProtocolConfig(kind="cv", n_splits=4, n_repeats=2)
    evaluation = evaluate_model(wdbc.X, wdbc.y, name, cfg, protocol, progress=False)
    splits = make_splits(wdbc.y, protocol)
    assert len(SEEN) == len(splits) == len(evaluation.folds)
    for seen, split in zip(SEEN, splits, strict=True):
        assert not rows(seen) & rows(wdbc.X[split.test])
        assert rows(seen) == rows(wdbc.X[split.train])
    for fold in evaluation.folds:  # thresholds come from inside the training data
        assert 0.0 <= fold.threshold <= 1.0


def test_threshold_policy_without_inner_data_is_a_clear_error(wdbc):
    cfg = RunConfig(
        models=["cnn1d"],
        threshold=ThresholdConfig(policy="youden"),
        train=TrainConfig(epochs=1, val_fraction=0.0, progress=False),
    )
    with pytest.raises(ValueError, match="val_fraction > 0"):
        evaluate_model(
            wdbc.X,
            wdbc.y,
            "cnn1d",
            cfg,
            ProtocolConfig(kind="cv", n_splits=2, n_repeats=1),
            progress=False,
        )


def test_cv_summary_has_every_metric_with_interval(wdbc):
    cfg = RunConfig(model_params={"logreg": {"grid": {"C": [1.0]}, "inner_splits": 3}})
    evaluation = evaluate_model(
        wdbc.X,
        wdbc.y,
        "logreg",
        cfg,
        ProtocolConfig(kind="cv", n_splits=5, n_repeats=2),
        progress=False,
    )
    auc = evaluation.summary["roc_auc"]
    assert auc["n"] == 10 and auc["ci_low"] <= auc["mean"] <= auc["ci_high"]
    assert auc["mean"] > 0.98
    assert "Nadeau" in evaluation.interval_method
