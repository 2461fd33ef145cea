"""Where a lesion-supervised network looks: its cell scores against the lesion annotations of
held-out images, with group-bootstrap intervals (training runs and `breastcad evaluate`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from breastcad.data.lesions import annotated, lesion_cells
from breastcad.devices import device_of
from breastcad.evaluation.classification import group_resamples
from breastcad.evaluation.metrics import roc_auc
from breastcad.models.ensemble import EnsembleNetwork
from breastcad.models.image import ImageNetwork


def cell_scores(
    net: ImageNetwork | EnsembleNetwork, pixels: np.ndarray, batch_size: int = 16
) -> torch.Tensor:
    """How much each cell of each image's feature map looks like a lesion (N x h x w; an
    ensemble's members averaged), on the image as given, in batches, where the network is."""
    net.eval()
    scores = []
    with torch.inference_mode():
        for start in range(0, len(pixels), batch_size):
            x = torch.from_numpy(np.array(pixels[start : start + batch_size]))
            x = x.to(device_of(net))
            if isinstance(net, EnsembleNetwork):
                scores.append(net.score_map(x).float().cpu())
            else:
                scores.append(net.head.score_map(net.forward_features(x)).float().cpu())
    return torch.cat(scores)


def lesion_localisation(
    net: ImageNetwork | EnsembleNetwork,
    pixels: np.ndarray,
    masks: np.ndarray,
    groups: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Where a lesion-supervised network (`lesion_map`) looks, against the annotations of
    held-out images: the ROC AUC of its cell scores for lesion cells against the other cells
    (all annotated images), and how often its most lesion-like cell (for two classes the one
    that sets P(positive)) lies on the lesion in images that have one (with the rate a random
    cell would reach). Both with 95% percentile intervals from resampling whole `groups`
    (patients, women, duplicate clusters; each image its own group when none are given)."""
    cells = cell_scores(net, pixels, batch_size)
    lesion = lesion_cells(torch.from_numpy(masks), cells.shape[-2:])
    known = torch.from_numpy(annotated(masks))
    with_lesion = known & lesion.flatten(1).any(dim=1)
    top = cells.flatten(1).argmax(dim=1)
    # per image: lesion labels and scores of its cells, whether its top cell is on the lesion
    labels, values = lesion.flatten(1).numpy(), cells.flatten(1).numpy()
    hit = lesion.flatten(1)[torch.arange(len(top)), top].numpy()
    known_np, with_lesion_np = known.numpy(), with_lesion.numpy()

    def figures(idx: np.ndarray) -> tuple[float, float]:
        k, w = idx[known_np[idx]], idx[with_lesion_np[idx]]
        cell_labels = labels[k].ravel()
        auc = (
            roc_auc(cell_labels, values[k].ravel())
            if 0 < cell_labels.sum() < len(cell_labels)
            else float("nan")
        )
        return auc, float(hit[w].mean()) if len(w) else float("nan")

    everyone = np.arange(len(top))
    cell_auc, rate = figures(everyone)
    groups = everyone if groups is None else np.asarray(groups)
    boot = np.array([figures(i) for i in group_resamples(groups, n_boot, seed)]).reshape(-1, 2)

    def interval(column: int) -> list[float] | None:
        drawn = boot[:, column][~np.isnan(boot[:, column])]
        return [float(v) for v in np.percentile(drawn, [2.5, 97.5])] if len(drawn) else None

    return {
        "images": int(known.sum()),
        "images_with_lesion": int(with_lesion.sum()),
        "cells_per_image": f"{cells.shape[1]} x {cells.shape[2]}",
        "cell_auc": None if np.isnan(cell_auc) else cell_auc,
        "cell_auc_ci": interval(0),
        "top_cell_on_lesion": int(hit[with_lesion_np].sum()),
        "top_cell_on_lesion_rate": None if np.isnan(rate) else rate,
        "top_cell_on_lesion_rate_ci": interval(1),
        "random_cell_rate": float(lesion.flatten(1)[with_lesion].float().mean(dim=1).mean())
        if with_lesion.any()
        else None,
        "interval": f"95% percentile bootstrap, {n_boot} resamples of "
        f"{len(np.unique(groups))} groups",
    }
