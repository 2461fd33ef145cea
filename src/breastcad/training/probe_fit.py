"""Fit a network whose recipe is `closed_form` (the `probe` and `cell_probe` models): the
frozen body's features of every training image once, then a logistic regression, written into
the network's linear head so that the network alone gives its logits (bundle, `predict`, the
service, Grad-CAM and ONNX export see an ordinary network). `cell_probe` regresses the cells of
the last feature map instead (`fit_cell_probe`).

Each training image counts twice, as given and mirrored (the left-right flip every modality
here is trained to accept), both views in the image's group; ten times with test-time `affine`
views (`breastcad.models.tta`), once per view the run will average. The regularisation `C` is
chosen from `C_GRID` by stratified 5-fold cross-validation within the training part, folds cut
by group (patient, woman or near-duplicate cluster: the split's groups), on the ROC AUC of the
positive class (two classes) or the macro one-vs-rest AUC; held-out images are scored as the
run answers (as given, or the mean over its test-time views). The
validation part is not used here: it stays for calibration and the operating point.

Example:
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(40, 3))
    >>> y = (x[:, 0] > 0).astype(int)
    >>> w, b, _ = logistic_head(x, y, 2, 1.0, "none")
    >>> bool(((x @ w.T + b).argmax(1) == y).mean() > 0.9)
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from breastcad.data.datamodule import ImageDataModule
from breastcad.errors import ConfigError
from breastcad.models.image import ImageNetwork
from breastcad.models.tta import views

C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1)
DEFAULT_C = 0.01
"""Used when the training part has too few groups of a class for cross-validation."""


def body_features(
    net: ImageNetwork, loader, device: torch.device, progress: bool, desc: str, tta: str = "none"
) -> tuple[np.ndarray, np.ndarray]:
    """The body's features of each image as given and mirrored (N x 2 x D), or of each of its
    ten views for `tta` affine (N x 10 x D), and the labels."""
    mode = "affine" if tta == "affine" else "flip"
    net.eval().to(device)
    feats, labels = [], []
    with torch.inference_mode():
        for batch in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False):
            x = batch[0].to(device)
            seen = [net.forward_features(v) for v in views(x, mode)]
            feats.append(torch.stack(seen, 1).float().cpu().numpy())
            labels.append(batch[1].numpy())
    net.cpu()
    return np.concatenate(feats), np.concatenate(labels)


def logistic_head(
    x: np.ndarray, y: np.ndarray, num_classes: int, c: float, class_weight: str
) -> tuple[np.ndarray, np.ndarray, Any]:
    """A logistic regression on standardised `x`, as the weights (classes x D) and biases of
    one linear layer on the raw features: softmax of its logits gives the regression's
    probabilities (two classes: logits -z/2 and z/2). Returns them and the fitted model."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    present = np.unique(y)
    if len(present) != num_classes:
        raise ConfigError(
            f"the training part has {len(present)} of {num_classes} classes; a linear probe "
            "needs examples of every class"
        )
    model = make_pipeline(
        StandardScaler(),
        LogisticRegression(
            C=c, max_iter=5000, class_weight="balanced" if class_weight == "balanced" else None
        ),
    ).fit(x, y)
    scaler, reg = model[0], model[1]
    w = reg.coef_ / scaler.scale_
    b = reg.intercept_ - w @ scaler.mean_
    if num_classes == 2:
        w, b = np.concatenate([-w / 2, w / 2]), np.concatenate([-b / 2, b / 2])
    return w, b, model


def _auc(y: np.ndarray, probs: np.ndarray, num_classes: int, positive: int) -> float:
    from sklearn.metrics import roc_auc_score

    if num_classes == 2:
        return float(roc_auc_score(y == positive, probs[:, positive]))
    return float(roc_auc_score(y, probs, multi_class="ovr", average="macro"))


def choose_c(
    feats: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    num_classes: int,
    positive: int,
    class_weight: str,
    seed: int,
    tta: str = "none",
) -> dict[str, Any]:
    """Grouped stratified cross-validation of `C_GRID` on `feats` (N x views x D); the C
    with the highest held-out AUC, and each C's. Held-out images are scored as the run will
    answer (`tta` flip or affine: the mean probability of the image's views)."""
    from sklearn.model_selection import StratifiedGroupKFold

    per_class = [len(set(groups[y == k])) for k in range(num_classes)]
    folds = min(5, *per_class)
    if folds < 2:
        return {
            "C": DEFAULT_C,
            "cross_validation": f"not run: a class has {min(per_class)} group(s) in the "
            f"training part; C = {DEFAULT_C}",
        }
    splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    cuts = list(splitter.split(feats[:, 0], y, groups))
    n_views = feats.shape[1]
    by_c = {}
    for c in C_GRID:
        held_probs = np.zeros((len(y), num_classes))
        for fit, held in cuts:
            _, _, model = logistic_head(
                feats[fit].reshape(-1, feats.shape[-1]),
                np.repeat(y[fit], n_views),
                num_classes,
                c,
                class_weight,
            )
            scored = range(n_views) if tta != "none" else [0]
            held_probs[held] = np.mean([model.predict_proba(feats[held, v]) for v in scored], 0)
        by_c[c] = _auc(y, held_probs, num_classes, positive)
    best = max(by_c, key=lambda c: (by_c[c], -abs(np.log(c / DEFAULT_C))))
    return {
        "C": best,
        "cross_validation": {
            "folds": folds,
            "cut_by": "group",
            "metric": "ROC AUC of the positive class" if num_classes == 2 else "macro AUC",
            "held_out_scored": _scored_text(tta, n_views),
            "by_C": {str(c): round(v, 4) for c, v in by_c.items()},
        },
    }


def _scored_text(tta: str, views: int) -> str:
    if tta == "none":
        return "as given"
    if tta == "flip":
        return "as given and mirrored, averaged"
    return f"its {views} test-time views (affine), averaged"


def _no_epochs(device: torch.device) -> dict[str, Any]:
    """What a trained run records about its epochs, for a fit that has none."""
    from breastcad.devices import device_name

    return {
        "device": device_name(device),
        "epochs_run": 0,
        "best_checkpoint": None,
        "best_val_loss": None,
        "resumed_from": None,
        "stage_switch_epoch": None,
    }


def fit_probe(
    net: ImageNetwork,
    dm: ImageDataModule,
    settings,
    groups: np.ndarray | None = None,
) -> tuple[list[dict[str, float]], dict[str, Any]]:
    """Fit `net`'s linear head in place on the training part of `dm` (`groups`: one per
    manifest row, the split's; default the manifest's group ids). Returns an empty history
    (no epochs) and what was fitted."""
    from breastcad.devices import chosen_device
    from breastcad.training.image_fit import positive_index

    dm.setup()
    train = dm.datasets["train"]
    if groups is None:
        groups = dm.manifest.frame["group_id"].astype(str).to_numpy()
    device = chosen_device(settings.accelerator)
    loader = dm.ordered_dataloader("train")
    feats, y = body_features(net, loader, device, settings.progress, "probe features", settings.tta)
    num_classes = net.num_classes
    positive = positive_index(dm.classes)
    chosen = choose_c(
        feats,
        y,
        np.asarray(groups)[train.rows],
        num_classes,
        positive,
        settings.class_weight,
        settings.seed,
        settings.tta,
    )
    w, b, _ = logistic_head(
        feats.reshape(-1, feats.shape[-1]),
        np.repeat(y, feats.shape[1]),
        num_classes,
        chosen["C"],
        settings.class_weight,
    )
    with torch.no_grad():
        net.head.weight.copy_(torch.as_tensor(w, dtype=torch.float32))
        net.head.bias.copy_(torch.as_tensor(b, dtype=torch.float32))
    net.eval()
    info = {
        **_no_epochs(device),
        "probe": {
            "features": int(feats.shape[-1]),
            "training_images": len(y),
            "samples": "each training image as given and mirrored"
            if feats.shape[1] == 2
            else f"each training image in its {feats.shape[1]} test-time views (affine)",
            "head": "scikit-learn LogisticRegression (L2, lbfgs) on standardised features, "
            f"class weights {settings.class_weight}, folded into the linear layer",
            **chosen,
        },
    }
    return [], info


def fit_cell_probe(
    net: ImageNetwork, dm: ImageDataModule, settings
) -> tuple[list[dict[str, float]], dict[str, Any]]:
    """Fit a `cell_probe`'s 1x1-convolution head (`LesionMapHead`) in place: every cell of the
    frozen body's last feature map of the training images is a sample; a cell with a lesion
    pixel is labelled with its image's class, every cell of an image of the background class
    (a seeded `background_fraction` of them) with the background; cells of lesion images
    off the lesion, and images whose lesion is not annotated, are left out. A logistic
    regression (standardised, C from the network, class weights as the run's) on them gives,
    per lesion class, its logit minus the background's: the cell score the head takes the
    maximum of, then scaled into an image logit on the training images (`_image_scale`).
    The network's `lesion_views` (`breastcad.models.tta.views`) add the lesion cells of each
    lesion image's moved views, its annotation moved with it (background cells and the image
    scale stay with the images as given, the view the network answers on).
    Returns an empty history and what was fitted."""
    from breastcad.devices import chosen_device

    dm.setup()
    if dm.masks is None:
        raise ConfigError("cell_probe needs lesion masks (data with lesion annotations)")
    device = chosen_device(settings.accelerator)
    background, c = int(net.arch["background"]), float(net.arch["c"])
    fraction = float(net.arch["background_fraction"])
    lesion_views = str(net.arch.get("lesion_views", "none"))  # bundles from before it: none
    net.eval().to(device)
    try:
        found = _training_cells(net, dm, settings, device, background, fraction, lesion_views)
    finally:
        net.cpu()
    x_cells, y_cells = np.concatenate(found.xs), np.concatenate(found.labels)
    w, b, _ = logistic_head(x_cells, y_cells, net.num_classes, c, settings.class_weight)
    others = [k for k in range(net.num_classes) if k != background]
    w_cells, b_cells = w[others] - w[background], b[others] - b[background]
    scale = _image_scale(
        np.concatenate(found.every_map), np.concatenate(found.every_y),
        w_cells, b_cells, others, background,
    )  # fmt: skip
    with torch.no_grad():
        score = net.head.score
        w_image = w_cells * scale["a"][:, None]
        score.weight.copy_(torch.as_tensor(w_image, dtype=torch.float32)[..., None, None])
        b_image = b_cells * scale["a"] + scale["b"]
        score.bias.copy_(torch.as_tensor(b_image, dtype=torch.float32))
    net.eval()
    fitted = {
        "features": int(x_cells.shape[1]),
        "grid": found.grid,
        "cells": {
            "lesion": int((y_cells != background).sum()) - found.moved,
            "lesion_moved": found.moved,
            "background": int((y_cells == background).sum()),
        },
        "images": found.images,
        "background_fraction": fraction,
        "lesion_views": lesion_views,
        "C": c,
        "image_scale": {
            dm.classes[k]: {"scale": round(float(a), 4), "offset": round(float(o), 4)}
            for k, a, o in zip(others, scale["a"], scale["b"], strict=True)
        },
        "head": "scikit-learn LogisticRegression (L2, lbfgs) on standardised cell features, "
        f"class weights {settings.class_weight}; each lesion class's logit minus the "
        "background's folded into the 1x1 convolution",
    }
    return [], {**_no_epochs(device), "cell_probe": fitted}


@dataclass
class _Cells:
    """What a `cell_probe` learns from: cell features and labels, the cells of every training
    image (for the image scale), how many images gave lesion or background cells or were left
    out, the lesion cells of moved views, and the feature map's grid."""

    xs: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    every_map: list[np.ndarray] = field(default_factory=list)
    every_y: list[np.ndarray] = field(default_factory=list)
    images: dict[str, int] = field(
        default_factory=lambda: {"lesion": 0, "background": 0, "left out": 0}
    )
    moved: int = 0
    grid: list[int] = field(default_factory=list)


def _training_cells(
    net: ImageNetwork,
    dm: ImageDataModule,
    settings,
    device: torch.device,
    background: int,
    fraction: float,
    lesion_views: str,
) -> _Cells:
    """The cells `fit_cell_probe` learns from, batch by batch through the frozen body."""
    from breastcad.data.lesions import annotated, lesion_cells

    rng = np.random.default_rng(settings.seed)
    found = _Cells()
    loader = dm.ordered_dataloader("train")
    with torch.inference_mode():
        for x, y, masks in tqdm(
            loader, desc="cell features", unit="batch", disable=not settings.progress, leave=False
        ):
            maps = net.forward_features(x.to(device)).float().cpu()  # N x D x h x w
            found.grid = list(maps.shape[-2:])
            found.every_map.append(maps.flatten(2).transpose(1, 2).half().numpy())  # N x h*w x D
            found.every_y.append(y.numpy())
            lesion, known = lesion_cells(masks, maps.shape[-2:]), annotated(masks)
            with_lesion = []  # this batch's images with lesion cells
            for i in range(len(y)):
                cells = maps[i].flatten(1).T.numpy()  # h*w x D
                if not known[i]:
                    found.images["left out"] += 1
                    continue
                if int(y[i]) == background:
                    keep = rng.random(len(cells)) < fraction
                    found.images["background"] += 1
                else:
                    keep = lesion[i].flatten().numpy()
                    found.images["lesion" if keep.any() else "left out"] += 1
                    if keep.any():
                        with_lesion.append(i)
                found.xs.append(cells[keep])
                found.labels.append(np.full(int(keep.sum()), int(y[i])))
            if lesion_views != "none" and with_lesion:
                moved = _moved_lesion_cells(
                    net, x[with_lesion], masks[with_lesion], lesion_views, device
                )
                for view_cells in moved:  # per moved view, per image
                    for i, cells in zip(with_lesion, view_cells, strict=True):
                        found.xs.append(cells)
                        found.labels.append(np.full(len(cells), int(y[i])))
                        found.moved += len(cells)
    return found


def _moved_lesion_cells(
    net: ImageNetwork, x: torch.Tensor, masks: torch.Tensor, mode: str, device: torch.device
) -> list[list[np.ndarray]]:
    """For each moved view of `views(x, mode)` (the first, the images as given, left out):
    per image, the body's features of the view's cells that hold a pixel of the moved lesion
    (cells x D)."""
    from breastcad.data.lesions import LESION, lesion_cells

    shown = (masks == LESION).float()[:, None]
    out = []
    for seen, drawn in zip(views(x, mode)[1:], views(shown, mode)[1:], strict=True):
        maps = net.forward_features(seen.to(device)).float().cpu()  # N x D x h x w
        moved = torch.where(drawn[:, 0] >= 0.5, LESION, 0).to(torch.uint8)
        lesion = lesion_cells(moved, maps.shape[-2:]).flatten(1).numpy()
        cells = maps.flatten(2).transpose(1, 2).numpy()  # N x h*w x D
        out.append([cells[j][lesion[j]] for j in range(len(x))])
    return out


def _image_scale(
    maps: np.ndarray,
    y: np.ndarray,
    w_cells: np.ndarray,
    b_cells: np.ndarray,
    others: list[int],
    background: int,
) -> dict[str, np.ndarray]:
    """Per lesion class k, the image-level logit a_k * m_k + b_k of its highest cell score m_k:
    the cell regression says which cell looks most like a lesion, not how likely an image with
    such a cell is to have one (of 1,024 cells of a normal mammogram the highest scores high).
    A one-feature logistic regression of class k against the background over the training
    images of the two (balanced weights, almost no penalty); a must stay positive, so the
    most lesion-like cell stays the one that decides."""
    from sklearn.linear_model import LogisticRegression

    top = np.stack(
        [(maps[i].astype(np.float32) @ w_cells.T + b_cells).max(axis=0) for i in range(len(maps))]
    )  # N x (classes - 1)
    a, b = np.ones(len(others)), np.zeros(len(others))
    for j, k in enumerate(others):
        pair = (y == k) | (y == background)
        if len(np.unique(y[pair])) < 2:
            continue  # nothing to scale against: the cell scores as they are
        fit = LogisticRegression(C=1e4, class_weight="balanced", max_iter=1000)
        fit.fit(top[pair, j : j + 1], (y[pair] == k).astype(int))
        a[j], b[j] = float(fit.coef_[0, 0]), float(fit.intercept_[0])
        if a[j] <= 0:  # higher cells mean fewer lesions: no signal; nearly flat instead
            a[j] = 1e-3
            b[j] = -a[j] * float(np.median(top[pair, j]))
    return {"a": a, "b": b}
