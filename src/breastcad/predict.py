"""The one Predictor: CLI, Python API and (later) the web service all predict through it.

Example:
    >>> predictor = Predictor.from_bundle("runs/demo/bundles/logreg")  # doctest: +SKIP
    >>> predictor.predict_csv("data.csv").head()  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from breastcad.bundle import Bundle, load_bundle
from breastcad.data.tabular import canonical_feature_name, numeric_features, read_csv
from breastcad.errors import DataError


class Predictor:
    """Calibrated-as-trained probabilities and classes from a verified bundle."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle

    @classmethod
    def from_bundle(cls, path: str | Path) -> Predictor:
        return cls(load_bundle(Path(path)))

    @property
    def threshold(self) -> float:
        return self.bundle.threshold

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """P(malignant) for rows already in the bundle's feature order."""
        return self.bundle.estimator.predict_proba(np.asarray(X, dtype=np.float64))

    def features_from_frame(self, frame: pd.DataFrame, source: str = "input") -> np.ndarray:
        """The bundle's features from a table; accepts UCI/Kaggle and scikit-learn names."""
        renamed = frame.rename(columns=lambda c: canonical_feature_name(str(c)))
        missing = [f for f in self.bundle.feature_names if f not in renamed.columns]
        if missing:
            raise DataError(
                f"{len(missing)} features the model needs are missing: {', '.join(missing[:8])}"
                + (" ..." if len(missing) > 8 else ""),
                source,
            )
        return numeric_features(renamed[self.bundle.feature_names], source)

    def predict_frame(self, frame: pd.DataFrame, source: str = "input") -> pd.DataFrame:
        """Per row: id (when the table has one), P(malignant), predicted class, threshold."""
        proba = self.predict_proba(self.features_from_frame(frame, source))
        out = pd.DataFrame(
            {
                "p_malignant": proba,
                "prediction": np.where(proba >= self.threshold, "malignant", "benign"),
                "threshold": self.threshold,
            }
        )
        if "id" in frame.columns:
            out.insert(0, "id", frame["id"].to_numpy())
        return out

    def predict_csv(self, path: str | Path) -> pd.DataFrame:
        return self.predict_frame(read_csv(Path(path)), str(path))
