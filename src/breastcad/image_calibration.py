"""After an image run has trained: calibration (temperature, and the prior shift where asked
for) and the operating point, fitted on the validation part, or on the out-of-fold answers of
a cross-fitted ensemble; then the test set, scored once with both, its figures with group
intervals, each ensemble member alone beside the ensemble, and the prediction tables
(`predictions.csv`; `out_of_fold_predictions.csv` for a cross-fitted run).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from breastcad.config import ImageRunConfig
from breastcad.data.datamodule import ImageDataModule
from breastcad.data.pairs import contralateral
from breastcad.evaluation.bilateral import (
    bilateral_probability,
    bilateral_scores,
    fit_bilateral,
    log_odds,
)
from breastcad.evaluation.classification import decide, fit_temperature, prior_shift, softmax
from breastcad.evaluation.image_evaluation import (
    evaluate_predictions,
    predict_logits,
    predict_member_logits,
    write_predictions,
)
from breastcad.evaluation.localisation import lesion_localisation
from breastcad.evaluation.metrics import choose_threshold, operating_point_support
from breastcad.models.ensemble import EnsembleNetwork
from breastcad.models.image import ImageNetwork
from breastcad.training.image_fit import ImageFitSettings, positive_index


@dataclass
class Tested:
    """What calibration chose and what the test set said."""

    evaluation: dict[str, Any]
    operating_point: dict[str, Any]
    logits: np.ndarray
    y: np.ndarray
    probs: np.ndarray
    pred: np.ndarray


def calibrate_and_test(
    cfg: ImageRunConfig,
    net: ImageNetwork | EnsembleNetwork,
    dm: ImageDataModule,
    settings: ImageFitSettings,
    split: pd.DataFrame,
    out: Path,
    members: list[dict[str, Any]],
    member_data: list[ImageDataModule] | None,
    masks: np.ndarray | None,
) -> Tested:
    """Temperature and operating point on what is deployed (`cfg.train.tta`), then the test
    set; `members` (an ensemble's records) get each member's own test figures."""
    classes = dm.classes
    positive = positive_index(classes)
    val = _validation_answers(cfg, net, dm, member_data)
    test_logits, test_y, member_logits = _test_answers(net, dm, cfg.train.tta, bool(members))
    shift = _prior_shift(settings, cfg, dm, len(classes))
    temperature = fit_temperature(val.logits + shift, val.y)
    val_probs = softmax(val.logits, temperature, shift)
    threshold = choose_threshold(
        (val.y == positive).astype(int), val_probs[:, positive], cfg.operating_point
    )
    test_rows = dm.datasets["test"].rows
    frame = dm.manifest.frame
    groups = split.set_index("path").loc[frame["path"].iloc[test_rows], "split_group"]
    val_rows = dm.datasets["val"].rows if val.rows is None else val.rows
    test_other = contralateral(frame.iloc[test_rows])  # a woman's breasts, where known
    bilateral_fit = fit_bilateral(
        val_probs, contralateral(frame.iloc[val_rows]), val.y, positive, cfg.operating_point
    )
    evaluation = evaluate_predictions(
        test_logits, test_y, groups.to_numpy(), classes, positive, temperature, threshold,
        cfg.bootstrap, cfg.seed, test_other, shift, bilateral_fit,
    )  # fmt: skip
    evaluation["calibration"]["fitted_on"] = val.scored
    evaluation["calibration"]["prior_shift_from"] = _shift_text(settings, cfg, dm)
    if masks is not None:  # annotations of the test images judge where the model looks
        evaluation["localisation"] = lesion_localisation(
            net, dm.cache.pixels[test_rows], masks[test_rows], groups.to_numpy(),
            cfg.bootstrap, cfg.seed,
        )  # fmt: skip
    if members:  # each member alone on the same test images, beside the ensemble
        _member_figures(members, member_logits, test_y, classes, positive, shift)
    probs = softmax(test_logits, temperature, shift)
    pred = decide(probs, positive, threshold)
    extra = _bilateral_columns(frame.iloc[test_rows], test_other, probs, positive, bilateral_fit)
    write_predictions(
        out, dm.manifest, test_rows, test_y, probs, pred, classes, threshold, extra=extra
    )
    if val.rows is not None:  # what calibration and the operating point of a cross-fit saw
        oof_pred = decide(val_probs, positive, threshold)
        write_predictions(
            out, dm.manifest, val.rows, val.y, val_probs, oof_pred, classes, threshold,
            "out_of_fold_predictions.csv",
        )  # fmt: skip
    operating_point = _operating_point(cfg, classes, val, val_probs, threshold, bilateral_fit)
    return Tested(evaluation, operating_point, test_logits, test_y, probs, pred)


def _test_answers(
    net: ImageNetwork | EnsembleNetwork, dm: ImageDataModule, tta: str, members: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The test part's logits and labels, and (`members`: an ensemble's) each member's logits,
    kept for its own figures."""
    if not members:
        return (*predict_logits(net, dm.test_dataloader(), tta), None)
    member_logits, test_y = predict_member_logits(net, dm.test_dataloader(), tta)
    test_logits = EnsembleNetwork.combine(torch.from_numpy(member_logits)).numpy()
    return test_logits, test_y, member_logits


def _operating_point(
    cfg: ImageRunConfig,
    classes: list[str],
    val: _Answers,
    val_probs: np.ndarray,
    threshold: float | None,
    bilateral_fit: dict[str, Any] | None,
) -> dict[str, Any]:
    """The record of the operating point: its policy, threshold and what it promises on the
    images it was chosen on (and the bilateral fit's, where there is one)."""
    positive = positive_index(classes)
    record = {
        "policy": _policy_text(cfg, classes[positive]),
        "threshold": threshold,
        "chosen_on": f"{val.scored}, after calibration",
        "validation": {
            **operating_point_support(val.y == positive, val_probs[:, positive], threshold),
            "scored": val.scored,
        },
    }
    if bilateral_fit is not None:
        record["bilateral"] = {**bilateral_fit, "chosen_on": val.scored}
    return record


def _bilateral_columns(
    frame: pd.DataFrame,
    other: np.ndarray,
    probs: np.ndarray,
    positive: int,
    fit: dict[str, Any] | None,
) -> dict[str, Any] | None:
    """`predictions.csv`'s columns for each image against its other breast: the partner's
    path and, with a fit, P(positive) of the bilateral score (empty where there is none)."""
    if fit is None or not (other >= 0).any():
        return None
    paths = frame["path"].to_numpy()
    score = bilateral_scores(log_odds(probs, positive), other)  # NaN without a partner
    return {
        "partner": [paths[j] if j >= 0 else "" for j in other],
        "p_bilateral": bilateral_probability(score, fit),  # and so NaN there too
    }


@dataclass
class _Answers:
    """The answers calibration and the operating point are fitted on."""

    logits: np.ndarray
    y: np.ndarray
    rows: np.ndarray | None
    """Cache rows of the images (cross-fitting only)."""
    scored: str


def _validation_answers(
    cfg: ImageRunConfig,
    net: ImageNetwork | EnsembleNetwork,
    dm: ImageDataModule,
    member_data: list[ImageDataModule] | None,
) -> _Answers:
    """The validation part's logits, or a cross-fitted ensemble's out-of-fold ones."""
    if member_data is None:
        logits, y = predict_logits(net, dm.val_dataloader(), cfg.train.tta)
        return _Answers(logits, y, None, "the validation part")
    logits, y, rows = _out_of_fold_logits(net, member_data, cfg.train.tta)
    scored = (
        f"out-of-fold predictions of the {len(y)} development images ({cfg.train.members} folds)"
    )
    return _Answers(logits, y, rows, scored)


def _out_of_fold_logits(
    net: EnsembleNetwork, member_data: list[ImageDataModule], tta: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits, labels and cache rows of every development image, each scored by the one
    cross-fitted member that did not learn from it (member k on fold k)."""
    scored = [
        predict_logits(m, d.val_dataloader(), tta)
        for m, d in zip(net.members, member_data, strict=True)
    ]
    rows = np.concatenate([d.datasets["val"].rows for d in member_data])
    return (
        np.concatenate([logits for logits, _ in scored]),
        np.concatenate([y for _, y in scored]),
        rows,
    )


def _policy_text(cfg: ImageRunConfig, positive: str) -> str:
    op = cfg.operating_point
    if op.policy == "fixed":
        return f"P({positive}) >= {op.value:g} (fixed)"
    if op.policy == "youden":
        return f"P({positive}) threshold maximising Youden's J"
    return f"highest P({positive}) threshold with sensitivity >= {op.value:g}"


def _member_figures(
    members: list[dict[str, Any]],
    member_logits: np.ndarray,
    y: np.ndarray,
    classes: list[str],
    positive: int,
    shift: np.ndarray,
) -> None:
    """Each member's own test figures (argmax accuracy, after the run's prior shift where it
    has one; macro AUC), in its record."""
    from breastcad.evaluation.classification import classification_metrics

    for record, logits in zip(members, member_logits, strict=True):
        probs = softmax(logits, 1.0, shift)
        scores = classification_metrics(y, probs, classes, positive)["scalars"]
        record["test_alone"] = {k: scores[k] for k in ("accuracy", "macro_auc", "auc_positive")}
        record.pop("history", None)  # already in the run's history, with a member column


def _reweighted(settings: ImageFitSettings, cfg: ImageRunConfig) -> str | None:
    """How training was pulled towards equal classes, if it was."""
    if cfg.train.sampling != "none":
        return f"{cfg.train.sampling} to equal classes"
    return "balanced class weights" if settings.class_weight == "balanced" else None


def _prior_shift(
    settings: ImageFitSettings, cfg: ImageRunConfig, dm: ImageDataModule, num_classes: int
) -> np.ndarray:
    """With `--calibration prior-shift`, the logit shift that undoes re-weighting
    (`classification.prior_shift`, from the training part's class counts); zeros where it
    was not asked for or training saw the data's own frequencies."""
    if cfg.calibration != "prior-shift" or _reweighted(settings, cfg) is None:
        return np.zeros(num_classes)
    return prior_shift(np.bincount(dm.datasets["train"].targets, minlength=num_classes))


def _shift_text(settings: ImageFitSettings, cfg: ImageRunConfig, dm: ImageDataModule) -> str:
    how = _reweighted(settings, cfg)
    if cfg.calibration != "prior-shift":
        return "none (temperature only)"
    if how is None:
        return "none (trained on the data's own class frequencies)"
    counts = ", ".join(f"{c} {n}" for c, n in dm.counts()["train"].items())
    return f"log class frequencies of the training part ({counts}), undoing {how}"
