"""Tabular models for the 30 WDBC features: the published 1D-CNN, an MLP, scikit-learn baselines."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from torch import nn

from breastcad.config import TrainConfig
from breastcad.models.layers import BatchNormChannelsLast, Conv1dChannelsLast, Dropout
from breastcad.models.registry import register_model

if TYPE_CHECKING:  # scikit-learn (1.5 s to import) only where a tabular model is made
    from breastcad.models.estimators import SklearnTabular, TorchTabular


def keras_init(module: nn.Module) -> None:
    """Keras defaults, so the published Keras models are reproduced faithfully:
    glorot-uniform weights, zero biases, batch norm with momentum 0.99 and epsilon 1e-3."""
    for m in module.modules():
        if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            m.momentum, m.eps = 0.01, 1e-3
    for m in module.modules():
        if isinstance(m, Conv1dChannelsLast):
            # Keras' Conv1D kernel is (k, in, out): fan_in = k*in, fan_out = k*out.
            out_channels, fan_in = m.linear.weight.shape
            bound = math.sqrt(6.0 / (fan_in + m.kernel_size * out_channels))
            nn.init.uniform_(m.linear.weight, -bound, bound)


class CNN1D(nn.Module):
    """The published 1D-CNN, layer for layer, in Keras' channels-last layout.

    Conv1D 32 k=2 (ReLU), BN, Dropout 0.2, Conv1D 64 k=2 (ReLU), BN, Dropout 0.5, Flatten,
    Dense 64 ReLU, Dropout 0.5, Dense 1 (a logit; the published sigmoid is applied in the loss
    and at prediction).
    """

    def __init__(self, n_features: int = 30) -> None:
        super().__init__()
        self.features = nn.Sequential(
            Conv1dChannelsLast(1, 32, 2),
            nn.ReLU(),
            BatchNormChannelsLast(32),
            Dropout(0.2),
            Conv1dChannelsLast(32, 64, 2),
            nn.ReLU(),
            BatchNormChannelsLast(64),
            Dropout(0.5),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * (n_features - 2), 64),
            nn.ReLU(),
            Dropout(0.5),
            nn.Linear(64, 1),
        )
        keras_init(self)

    def forward_features(self, x):
        return self.features(x.unsqueeze(-1))

    def forward(self, x):
        return self.head(self.forward_features(x))


class MLP(nn.Module):
    """A small multilayer perceptron: Linear-ReLU-Dropout blocks, then a logit."""

    def __init__(self, n_features: int, hidden: tuple[int, ...] = (64, 32), dropout: float = 0.2):
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), Dropout(dropout)]
            width = h
        self.net = nn.Sequential(*layers, nn.Linear(width, 1))
        keras_init(self)

    def forward(self, x):
        return self.net(x)


@register_model(
    "cnn1d",
    family="torch",
    modality="tabular",
    description="Published 1D-CNN (Conv1D 32/64, BN, dropout; Adam 5e-5, 50 epochs, batch 32)",
)
def cnn1d(train: TrainConfig | None = None) -> TorchTabular:
    from breastcad.models.estimators import TorchTabular

    return TorchTabular("cnn1d", CNN1D, {"epochs": 50, "batch_size": 32, "lr": 5e-5}, train)


@register_model(
    "mlp",
    family="torch",
    modality="tabular",
    description="MLP 64-32 with dropout 0.2 (Adam 1e-3, 60 epochs, batch 64)",
)
def mlp(
    train: TrainConfig | None = None, hidden: tuple[int, ...] = (64, 32), dropout: float = 0.2
) -> TorchTabular:
    from breastcad.models.estimators import TorchTabular

    def build(n: int) -> MLP:
        return MLP(n, tuple(hidden), dropout)

    return TorchTabular("mlp", build, {"epochs": 60, "batch_size": 64, "lr": 1e-3}, train)


@register_model(
    "logreg",
    family="sklearn",
    modality="tabular",
    description="Logistic regression, C chosen by inner 5-fold CV (ROC AUC)",
)
def logreg(
    grid: dict[str, list[Any]] | None = None,
    inner_splits: int = 5,
    train: TrainConfig | None = None,
) -> SklearnTabular:
    from sklearn.linear_model import LogisticRegression

    from breastcad.models.estimators import SklearnTabular

    return SklearnTabular(
        "logreg",
        lambda seed: LogisticRegression(max_iter=5000),
        grid if grid is not None else {"C": [0.01, 0.1, 1.0, 10.0, 100.0]},
        inner_splits,
    )


@register_model(
    "svm_rbf",
    family="sklearn",
    modality="tabular",
    description="RBF SVM with Platt probabilities, C and gamma chosen by inner 5-fold CV",
)
def svm_rbf(
    grid: dict[str, list[Any]] | None = None,
    inner_splits: int = 5,
    train: TrainConfig | None = None,
) -> SklearnTabular:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import SVC

    from breastcad.models.estimators import SklearnTabular

    return SklearnTabular(
        "svm_rbf",
        lambda seed: CalibratedClassifierCV(
            SVC(kernel="rbf", random_state=seed), method="sigmoid", ensemble=False
        ),
        grid
        if grid is not None
        else {"estimator__C": [0.3, 1.0, 3.0, 10.0], "estimator__gamma": ["scale", 0.01]},
        inner_splits,
    )


@register_model(
    "gboost",
    family="sklearn",
    modality="tabular",
    description="Histogram gradient boosting (200 iterations, learning rate 0.1, fixed)",
)
def gboost(
    grid: dict[str, list[Any]] | None = None,
    inner_splits: int = 5,
    train: TrainConfig | None = None,
) -> SklearnTabular:
    from sklearn.ensemble import HistGradientBoostingClassifier

    from breastcad.models.estimators import SklearnTabular

    return SklearnTabular(
        "gboost",
        lambda seed: HistGradientBoostingClassifier(
            max_iter=200, learning_rate=0.1, early_stopping=False, random_state=seed
        ),
        grid or {},
        inner_splits,
    )
