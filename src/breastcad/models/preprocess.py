"""Tabular preprocessing fitted on training data only: median imputation, then standardisation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted


class Standardizer(TransformerMixin, BaseEstimator):
    """Impute missing values with the training median, then scale to zero mean, unit variance.

    Stored as plain JSON in a bundle, so loading it runs no pickled code.
    """

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> Standardizer:
        X = np.asarray(X, dtype=np.float64)
        median = np.nanmedian(X, axis=0)
        self.median_ = np.where(np.isnan(median), 0.0, median)
        filled = np.where(np.isnan(X), self.median_, X)
        self.mean_ = filled.mean(axis=0)
        scale = filled.std(axis=0)
        self.scale_ = np.where(scale > 0, scale, 1.0)
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "mean_")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"expected {self.n_features_in_} features, got shape {X.shape}")
        filled = np.where(np.isnan(X), self.median_, X)
        return (filled - self.mean_) / self.scale_

    def save(self, path: Path) -> None:
        check_is_fitted(self, "mean_")
        state = {k: getattr(self, k).tolist() for k in ("median_", "mean_", "scale_")}
        Path(path).write_text(json.dumps(state))

    @classmethod
    def load(cls, path: Path) -> Standardizer:
        state = json.loads(Path(path).read_text())
        self = cls()
        for key, values in state.items():
            setattr(self, key, np.asarray(values, dtype=np.float64))
        self.n_features_in_ = len(self.mean_)
        return self
