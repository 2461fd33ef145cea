"""Evaluation protocols: the published single split and repeated stratified k-fold CV.

Every fold is fitted on its training indices only. Preprocessing, hyper-parameter search and
the threshold all come from inside the fitted estimator (see `models.estimators`), so no test
row ever reaches a fit. `tests/evaluation/test_protocol.py` checks this with a recording model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.model_selection import RepeatedStratifiedKFold, train_test_split
from tqdm.auto import tqdm

from breastcad.config import ProtocolConfig, RunConfig, ThresholdConfig
from breastcad.errors import ConfigError
from breastcad.evaluation.metrics import (
    METRICS,
    binary_metrics,
    bootstrap_metrics,
    choose_threshold,
    cv_interval,
)
from breastcad.models import create_model


@dataclass
class Split:
    repeat: int
    fold: int
    train: np.ndarray
    test: np.ndarray


@dataclass
class FoldResult:
    repeat: int
    fold: int
    test: np.ndarray
    proba: np.ndarray
    threshold: float
    metrics: dict[str, float]
    chosen_params: dict[str, Any] | None
    history: list[dict[str, float]] | None
    fit_seconds: float


@dataclass
class ModelEvaluation:
    """One model under one protocol: per-fold results and the summary with intervals."""

    model: str
    protocol: ProtocolConfig
    threshold: ThresholdConfig
    folds: list[FoldResult]
    summary: dict[str, dict[str, float]] = field(default_factory=dict)
    interval_method: str = ""


def make_splits(y: np.ndarray, protocol: ProtocolConfig) -> list[Split]:
    """The protocol's train/test index pairs (stratified, seeded by `random_state`)."""
    idx = np.arange(len(y))
    if protocol.kind == "published":
        train, test = train_test_split(
            idx, test_size=protocol.test_size, stratify=y, random_state=protocol.random_state
        )
        return [Split(0, 0, np.sort(train), np.sort(test))]
    cv = RepeatedStratifiedKFold(
        n_splits=protocol.n_splits,
        n_repeats=protocol.n_repeats,
        random_state=protocol.random_state,
    )
    return [
        Split(i // protocol.n_splits, i % protocol.n_splits, train, test)
        for i, (train, test) in enumerate(cv.split(idx, y))
    ]


def protocol_settings(
    cfg: RunConfig, protocol: ProtocolConfig
) -> tuple[RunConfig, ThresholdConfig]:
    """The training config and threshold policy a protocol runs with."""
    if protocol.kind == "published":
        train = cfg.train.model_copy(update={"val_fraction": cfg.published_val_fraction})
        return cfg.model_copy(update={"train": train}), cfg.published_threshold
    return cfg, cfg.threshold


def build_model(name: str, cfg: RunConfig, progress: bool) -> Any:
    train = cfg.train.model_copy(update={"progress": progress})
    return create_model(name, train=train, **cfg.model_params.get(name, {}))


def fit_fold(
    X: np.ndarray,
    y: np.ndarray,
    split: Split,
    name: str,
    cfg: RunConfig,
    threshold: ThresholdConfig,
    seed: int,
    progress: bool = False,
) -> FoldResult:
    """Fit on `split.train`, choose the threshold inside it, score `split.test`."""
    import torch

    if cfg.n_jobs > 1:  # one thread per worker process: the workers share the cores
        torch.set_num_threads(1)
    model = build_model(name, cfg, progress)
    start = time.perf_counter()
    model.fit(X[split.train], y[split.train], seed=seed)
    fit_seconds = time.perf_counter() - start
    if threshold.policy == "fixed":
        thr = threshold.value
    else:
        inner = model.inner_predictions()
        if inner is None:
            raise ConfigError(
                f"threshold policy '{threshold.policy}' needs predictions inside the training "
                f"data, but model '{name}' has none: set train.val_fraction > 0"
            )
        thr = choose_threshold(*inner, threshold)
    proba = model.predict_proba(X[split.test])
    return FoldResult(
        split.repeat,
        split.fold,
        split.test,
        proba,
        thr,
        binary_metrics(y[split.test], proba, thr),
        model.chosen_params_,
        model.history_,
        fit_seconds,
    )


def bootstrap_summary(boot: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Bootstrap figures of one evaluation (`bootstrap_metrics`) in the shape of a
    cross-validated summary: no standard deviation, n = 1."""
    return {
        m: {
            "mean": v["value"],
            "sd": float("nan"),
            "ci_low": v["ci_low"],
            "ci_high": v["ci_high"],
            "n": 1,
        }
        for m, v in boot.items()
    }


def evaluate_model(
    X: np.ndarray,
    y: np.ndarray,
    name: str,
    cfg: RunConfig,
    protocol: ProtocolConfig,
    progress: bool = True,
) -> ModelEvaluation:
    """Run one model through one protocol and summarise it."""
    run_cfg, threshold = protocol_settings(cfg, protocol)
    splits = make_splits(y, protocol)
    single = len(splits) == 1
    jobs = [(s, run_cfg.seed + i) for i, s in enumerate(splits)]
    desc = f"{name} | {protocol.kind}"
    if run_cfg.n_jobs > 1 and not single:
        from joblib import Parallel, delayed

        results = Parallel(n_jobs=run_cfg.n_jobs, return_as="generator")(
            delayed(fit_fold)(X, y, s, name, run_cfg, threshold, seed) for s, seed in jobs
        )
        folds = list(tqdm(results, total=len(jobs), desc=desc, disable=not progress))
    else:
        folds = [
            fit_fold(X, y, s, name, run_cfg, threshold, seed, progress=progress and single)
            for s, seed in tqdm(jobs, desc=desc, disable=not progress or single)
        ]
    evaluation = ModelEvaluation(name, protocol, threshold, folds)
    if single:
        fold = folds[0]
        boot = bootstrap_metrics(y[fold.test], fold.proba, fold.threshold, seed=cfg.seed)
        evaluation.summary = bootstrap_summary(boot)
        evaluation.interval_method = "95% percentile bootstrap over test samples (2000 resamples)"
    else:
        n_test = int(np.mean([len(f.test) for f in folds]))
        n_train = len(y) - n_test
        evaluation.summary = {
            m: cv_interval([f.metrics[m] for f in folds], n_train, n_test) for m in METRICS
        }
        evaluation.interval_method = (
            "mean and SD over folds; 95% corrected resampled t interval (Nadeau & Bengio 2003)"
        )
    return evaluation
