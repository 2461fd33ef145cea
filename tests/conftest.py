"""Shared fixtures: small synthetic tables and CSVs written by the tests themselves."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from breastcad.config import ProtocolConfig, RunConfig, TrainConfig
from breastcad.data.tabular import load_wdbc

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_dir(name: str) -> Path:
    """`../shared/data/<name>`, or skip the test with the reason when that data set is absent
    (a machine may hold only some of them)."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} not found (that part of the shared data is absent)")
    return path


def synthetic_table(n: int = 120, n_features: int = 6, seed: int = 0, shift: float = 2.0):
    """Two Gaussian classes, separable enough for any model to learn quickly."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 3 == 0).astype(int)  # about 1/3 malignant
    X = rng.normal(size=(n, n_features)) + shift * y[:, None] * np.linspace(1, 0.2, n_features)
    return X, y


@pytest.fixture(scope="session", autouse=True)
def _own_cache(tmp_path_factory):
    """The decode and audit caches of this test session in its own folder, not the user's
    `~/.cache/breastcad` (tests that name a cache folder keep theirs)."""
    before = os.environ.get("BREASTCAD_CACHE")
    os.environ["BREASTCAD_CACHE"] = str(tmp_path_factory.mktemp("breastcad-cache"))
    yield
    if before is None:
        os.environ.pop("BREASTCAD_CACHE", None)
    else:
        os.environ["BREASTCAD_CACHE"] = before


@pytest.fixture(scope="session")
def wdbc():
    return load_wdbc()


@pytest.fixture
def kaggle_csv(tmp_path: Path, wdbc) -> Path:
    """The WDBC data as users download it: id, diagnosis M/B, `radius_mean`-style names and the
    empty trailing column of the Kaggle file."""
    stats = {"mean": "{}_mean", "error": "{}_se", "worst": "{}_worst"}
    columns = []
    for name in wdbc.feature_names:
        if name.startswith("mean "):
            columns.append(stats["mean"].format(name[5:]))
        elif name.startswith("worst "):
            columns.append(stats["worst"].format(name[6:]))
        else:
            columns.append(stats["error"].format(name[: -len(" error")]))
    frame = pd.DataFrame(wdbc.X, columns=columns)
    frame.insert(0, "diagnosis", np.where(wdbc.y == 1, "M", "B"))
    frame.insert(0, "id", [842302 + i for i in range(len(frame))])
    frame["Unnamed: 32"] = np.nan
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    return path


def small_run_config() -> RunConfig:
    """A run small enough for unit tests: two cheap models, tiny CV, few epochs."""
    return RunConfig(
        models=["logreg", "cnn1d"],
        protocols=[
            ProtocolConfig(kind="published"),
            ProtocolConfig(kind="cv", n_splits=3, n_repeats=1),
        ],
        train=TrainConfig(epochs=3, progress=False),
        model_params={"logreg": {"grid": {"C": [0.1, 1.0]}, "inner_splits": 3}},
    )


def with_training_hashes(bundle: Path, images: list[Path], out: Path) -> Path:
    """A copy of `bundle` in `out` that keeps the hashes of `images` as its training images
    (`data.fingerprints`; near duplicates within 4 bits), as a trained run's bundle would."""
    from breastcad.bundle import ImageModel, load_bundle, save_bundle
    from breastcad.data import fingerprints

    loaded = load_bundle(bundle)
    hashes = fingerprints.training_record([str(i) for i in images], 4, 1, False, out / "cache")
    return save_bundle(out / "bundle", ImageModel(loaded.estimator.net), loaded.manifest, hashes)


def make_image_bundle(
    folder: Path,
    model: str = "idc_cnn",
    classes: tuple[str, ...] = ("benign", "idc"),
    size: int = 50,
    channels: int = 3,
    modality: str = "histopathology",
    **overrides,
) -> Path:
    """A real image bundle (seeded random weights) for tests that need a model but not a
    trained one: service, export, explanations; `overrides` replace manifest entries."""
    from breastcad.bundle import untrained_image_bundle

    return untrained_image_bundle(
        folder,
        model,
        list(classes),
        size,
        channels,
        modality=modality,
        temperature=1.5,
        threshold={"value": 0.3, "policy": "fixed at 0.3 (test bundle)"},
        metrics={"macro_auc": {"value": 0.5, "ci_low": 0.4, "ci_high": 0.6}},
        trained_on={"dataset": "synthetic"},
        intended_use="Research use only; not a medical device.",
        **overrides,
    )


def make_wdbc_bundle(folder: Path) -> Path:
    """A logistic regression on the 569 WDBC samples, as a tabular bundle."""
    from breastcad.bundle import save_bundle
    from breastcad.models import create_model

    data = load_wdbc()
    model = create_model("logreg").fit(data.X, data.y)
    return save_bundle(
        folder,
        model,
        {
            "modality": "tabular",
            "model": {"name": "logreg", "params": {}, "description": "test"},
            "feature_names": list(data.feature_names),
            "threshold": {"value": 0.5, "policy": "fixed at 0.5 (test bundle)"},
            "training_data": {"source": "wdbc"},
        },
    )
