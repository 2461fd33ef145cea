"""Tabular estimators behind one interface: scikit-learn pipelines and PyTorch networks alike.

Every estimator:
- `fit(X, y, seed=...)` sees only the training data it is given; preprocessing, hyper-parameter
  search and the data for threshold choice all come from inside it;
- `predict_proba(X)` returns P(malignant) per row;
- `inner_predictions()` returns (labels, probabilities) computed inside the training data
  (inner cross-validation or a held-out validation part), from which a threshold is chosen;
- `save(folder)` / `load(folder, params)` write and read the files of a bundle.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_predict
from sklearn.pipeline import Pipeline

from breastcad.config import TrainConfig
from breastcad.models.preprocess import Standardizer


class TabularEstimator(ABC):
    """Common interface of tabular models (see module docstring)."""

    name: str
    history_: list[dict[str, float]] | None = None
    chosen_params_: dict[str, Any] | None = None

    @abstractmethod
    def fit(self, X: np.ndarray, y: np.ndarray, *, seed: int = 0) -> TabularEstimator: ...

    @abstractmethod
    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def inner_predictions(self) -> tuple[np.ndarray, np.ndarray] | None: ...

    @abstractmethod
    def save(self, folder: Path) -> list[str]:
        """Write the fitted model into `folder`; return the names of the files written."""

    @classmethod
    @abstractmethod
    def load(cls, folder: Path, **params: Any) -> TabularEstimator: ...


class SklearnTabular(TabularEstimator):
    """A scikit-learn classifier after `Standardizer`, with an optional inner grid search."""

    MODEL_FILE = "model.joblib"

    def __init__(
        self,
        name: str,
        make: Callable[[int], Any],
        grid: dict[str, list[Any]] | None = None,
        inner_splits: int = 5,
    ) -> None:
        self.name = name
        self.make = make
        self.grid = grid or {}
        self.inner_splits = inner_splits

    def fit(self, X: np.ndarray, y: np.ndarray, *, seed: int = 0) -> SklearnTabular:
        self._X, self._y, self._seed = X, y, seed
        pipeline = Pipeline([("prep", Standardizer()), ("clf", self.make(seed))])
        if self.grid:
            search = GridSearchCV(
                pipeline,
                {f"clf__{k}": v for k, v in self.grid.items()},
                cv=self._inner_cv(seed),
                scoring="roc_auc",
                refit=True,
            )
            self.pipeline_ = search.fit(X, y).best_estimator_
            self.chosen_params_ = {
                k.removeprefix("clf__"): v for k, v in search.best_params_.items()
            }
        else:
            self.pipeline_ = pipeline.fit(X, y)
        self._inner: tuple[np.ndarray, np.ndarray] | None = None
        return self

    def _inner_cv(self, seed: int) -> StratifiedKFold:
        return StratifiedKFold(self.inner_splits, shuffle=True, random_state=seed)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.pipeline_.predict_proba(np.asarray(X, dtype=np.float64))[:, 1]

    def inner_predictions(self) -> tuple[np.ndarray, np.ndarray]:
        """Out-of-fold probabilities of the chosen configuration over the training data."""
        if self._inner is None:
            proba = cross_val_predict(
                clone(self.pipeline_),
                self._X,
                self._y,
                cv=self._inner_cv(self._seed),
                method="predict_proba",
            )[:, 1]
            self._inner = (self._y, proba)
        return self._inner

    def save(self, folder: Path) -> list[str]:
        joblib.dump(self.pipeline_, Path(folder) / self.MODEL_FILE)
        return [self.MODEL_FILE]

    @classmethod
    def load(cls, folder: Path, **params: Any) -> SklearnTabular:
        from breastcad.models.registry import create_model

        self = create_model(params.pop("name"), **params)
        self.pipeline_ = joblib.load(Path(folder) / cls.MODEL_FILE)
        return self


class TorchTabular(TabularEstimator):
    """A PyTorch network on standardised features, trained through Lightning."""

    WEIGHTS_FILE = "weights.pt"
    PREP_FILE = "preprocess.json"

    def __init__(
        self,
        name: str,
        build: Callable[[int], Any],
        defaults: dict[str, Any],
        train: TrainConfig | None = None,
    ) -> None:
        self.name = name
        self.build = build
        self.train = train or TrainConfig()
        t = self.train
        self.epochs = t.epochs or defaults["epochs"]
        self.batch_size = t.batch_size or defaults["batch_size"]
        self.lr = t.lr or defaults["lr"]

    def fit(self, X: np.ndarray, y: np.ndarray, *, seed: int = 0) -> TorchTabular:
        import torch
        from sklearn.model_selection import train_test_split

        from breastcad.training.fit import FitSettings, fit_binary

        idx = np.arange(len(y))
        fit_idx, val_idx = idx, idx[:0]
        if self.train.val_fraction > 0:
            fit_idx, val_idx = train_test_split(
                idx, test_size=self.train.val_fraction, stratify=y, random_state=seed
            )
        self.prep_ = Standardizer().fit(X[fit_idx])
        tensors = [
            (
                torch.as_tensor(self.prep_.transform(X[i]), dtype=torch.float32),
                torch.as_tensor(y[i], dtype=torch.float32),
            )
            for i in (fit_idx, val_idx)
        ]
        torch.manual_seed(seed)  # the initial weights depend on the seed alone
        self.net_ = self.build(X.shape[1])
        settings = FitSettings(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            seed=seed,
            patience=self.train.early_stopping_patience,
            accelerator=self.train.accelerator,
            deterministic=self.train.deterministic,
            progress=self.train.progress,
            class_weight=self.train.class_weight,
        )
        self.history_ = fit_binary(
            self.net_, tensors[0], tensors[1] if len(val_idx) else None, settings
        )
        self._inner = (y[val_idx], self.predict_proba(X[val_idx])) if len(val_idx) else None
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        import torch

        self.net_.eval()
        with torch.no_grad():
            x = torch.as_tensor(self.prep_.transform(X), dtype=torch.float32)
            return torch.sigmoid(self.net_(x).squeeze(-1)).double().numpy()

    def inner_predictions(self) -> tuple[np.ndarray, np.ndarray] | None:
        return self._inner

    def save(self, folder: Path) -> list[str]:
        import torch

        folder = Path(folder)
        torch.save(self.net_.state_dict(), folder / self.WEIGHTS_FILE)
        self.prep_.save(folder / self.PREP_FILE)
        return [self.WEIGHTS_FILE, self.PREP_FILE]

    @classmethod
    def load(cls, folder: Path, **params: Any) -> TorchTabular:
        import torch

        from breastcad.models.registry import create_model

        folder = Path(folder)
        self = create_model(params.pop("name"), **params)
        self.prep_ = Standardizer.load(folder / cls.PREP_FILE)
        self.net_ = self.build(self.prep_.n_features_in_)
        state = torch.load(folder / cls.WEIGHTS_FILE, map_location="cpu", weights_only=True)
        self.net_.load_state_dict(state)
        self.net_.eval()
        return self


def describe_params(estimator: TabularEstimator) -> str:
    """The hyper-parameters chosen inside the training data, as text for reports."""
    return json.dumps(estimator.chosen_params_) if estimator.chosen_params_ else "fixed"
