import numpy as np
import pytest
import torch

from breastcad.config import TrainConfig
from breastcad.evaluation.metrics import roc_auc
from breastcad.models import create_model, list_models
from breastcad.models.preprocess import Standardizer
from breastcad.models.tabular import CNN1D
from tests.conftest import synthetic_table


def test_cnn1d_matches_published_keras_parameter_count():
    net = CNN1D(30)
    trainable = sum(p.numel() for p in net.parameters())
    # Keras summary of the published model: 119,265 trainable (+192 BN moving statistics)
    assert trainable == 119_265
    moving = sum(b.numel() for n, b in net.named_buffers() if "running" in n)
    assert moving == 192
    assert net(torch.randn(5, 30)).shape == (5, 1)


@pytest.mark.parametrize("name", list_models("tabular"))
def test_every_tabular_model_learns_separable_data(name):
    X, y = synthetic_table(150, seed=1)
    X_test, y_test = synthetic_table(90, seed=2)
    params = {"train": TrainConfig(epochs=15, progress=False, lr=3e-3)}
    model = create_model(name, **params).fit(X, y, seed=0)
    proba = model.predict_proba(X_test)
    assert proba.shape == (90,) and ((proba >= 0) & (proba <= 1)).all()
    assert roc_auc(y_test, proba) > 0.9
    inner = model.inner_predictions()
    assert inner is not None and len(inner[0]) == len(inner[1]) <= len(y)


def test_standardizer_imputes_training_median_and_roundtrips(tmp_path):
    X = np.array([[1.0, 10.0], [3.0, np.nan], [5.0, 30.0], [np.nan, 20.0]])
    prep = Standardizer().fit(X)
    np.testing.assert_allclose(prep.median_, [3.0, 20.0])
    out = prep.transform(X)
    assert not np.isnan(out).any()
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-12)
    prep.save(tmp_path / "p.json")
    np.testing.assert_allclose(Standardizer.load(tmp_path / "p.json").transform(X), out)
    with pytest.raises(ValueError, match="expected 2 features"):
        prep.transform(np.ones((2, 3)))


def test_same_seed_same_model_whatever_ran_before():
    X, y = synthetic_table(80, seed=3)
    train = TrainConfig(epochs=2, progress=False)
    first = create_model("cnn1d", train=train).fit(X, y, seed=5).predict_proba(X)
    torch.rand(1000)  # other work consuming the global generator in between
    again = create_model("cnn1d", train=train).fit(X, y, seed=5).predict_proba(X)
    np.testing.assert_allclose(first, again, rtol=1e-6)
    other = create_model("cnn1d", train=train).fit(X, y, seed=6).predict_proba(X)
    assert not np.allclose(first, other)
