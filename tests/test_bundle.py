import json

import numpy as np
import pytest

from breastcad.bundle import load_bundle, save_bundle
from breastcad.config import TrainConfig
from breastcad.errors import BundleError
from breastcad.models import create_model
from tests.conftest import synthetic_table


def make_bundle(tmp_path, name="logreg"):
    X, y = synthetic_table(90)
    model = create_model(name, train=TrainConfig(epochs=2, progress=False)).fit(X, y)
    folder = save_bundle(
        tmp_path / name,
        model,
        {
            "modality": "tabular",
            "model": {"name": name, "params": {}, "description": "test"},
            "feature_names": [f"f{i}" for i in range(X.shape[1])],
            "threshold": {"value": 0.4, "policy": "fixed at 0.4"},
            "training_data": {"source": "synthetic", "fingerprint": "0" * 64},
        },
    )
    return folder, model, X


@pytest.mark.parametrize("name", ["logreg", "cnn1d"])
def test_round_trip_gives_identical_predictions(tmp_path, name):
    folder, model, X = make_bundle(tmp_path, name)
    bundle = load_bundle(folder)
    np.testing.assert_allclose(bundle.estimator.predict_proba(X), model.predict_proba(X), rtol=1e-6)
    assert bundle.threshold == 0.4
    assert bundle.feature_names[0] == "f0"
    manifest = json.loads((folder / "bundle.json").read_text())
    assert set(manifest["files"]) == {p.name for p in folder.iterdir()} - {
        "bundle.json",
        "bundle.json.sha256",
    }


def test_modified_model_file_is_refused_before_loading(tmp_path):
    folder, _, _ = make_bundle(tmp_path)
    with open(folder / "model.joblib", "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match=r"model\.joblib: checksum mismatch"):
        load_bundle(folder)


def test_modified_manifest_is_refused(tmp_path):
    folder, _, _ = make_bundle(tmp_path)
    text = (folder / "bundle.json").read_text().replace('"value": 0.4', '"value": 0.1')
    (folder / "bundle.json").write_text(text)
    with pytest.raises(BundleError, match=r"bundle\.json: checksum mismatch"):
        load_bundle(folder)


def test_missing_file_and_missing_folder(tmp_path):
    folder, _, _ = make_bundle(tmp_path, "cnn1d")
    (folder / "weights.pt").unlink()
    with pytest.raises(BundleError, match=r"weights\.pt: missing"):
        load_bundle(folder)
    with pytest.raises(BundleError, match="not a bundle folder"):
        load_bundle(tmp_path / "nothing")
