"""Lesion-supervised recipes on the pretrained backbones (`breastcad.models.backbones`).

- `lesion_map`: not a published recipe; for data that says where the lesions are (mini-MIAS
  centres and radii, BUSI masks) and has one class without lesions ('normal'). The whole
  network trains as in `full_finetune`, but the head scores every cell of the last feature map
  for each lesion class (a 1x1 convolution) and the image's logit for a class is its highest
  cell; training adds a loss on the cells themselves: lesion cells carry their image's class,
  all others the background class (`LesionMapHead`). The network is told where to look
  instead of having to find the lesion from one label per image; prediction needs no
  annotation.
- `cell_probe`: the same head fitted in closed form on a frozen backbone (no epochs): a
  logistic regression on every feature-map cell, lesion cells against cells of images without
  lesions (`breastcad.training.probe_fit.fit_cell_probe`); the mini-MIAS lesion-cell detector.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from breastcad.data.lesions import annotated, lesion_cells
from breastcad.errors import ConfigError
from breastcad.models.backbones import WHOLE_NETWORK, branch_models, pretrained_network
from breastcad.models.image import ImageNetwork, Recipe
from breastcad.models.registry import register_model
from breastcad.models.tta import MODES


class LesionMapHead(nn.Module):
    """Dropout 0.2 and a 1x1 convolution: for every cell of the feature map, a logit per
    lesion class against the `background` class (the class without lesions, e.g. 'normal',
    whose logit is 0). The image's logit for a lesion class is its highest cell; the
    background's stays 0, so with two classes P(lesion class) is the sigmoid of the most
    suspicious place. `supervised` also returns the cell loss against lesion masks, weighted
    by `lesion_weight`."""

    def __init__(
        self, num_features: int, num_classes: int, background: int = 0, lesion_weight: float = 1.0
    ) -> None:
        super().__init__()
        if num_classes < 2 or not 0 <= background < num_classes:
            raise ConfigError(
                f"lesion_map needs 2 or more classes and a background class among them (the "
                f"class without lesions), not {num_classes} classes with background {background}"
            )
        self.background, self.lesion_weight = background, lesion_weight
        self.dropout = nn.Dropout(0.2)
        self.score = nn.Conv2d(num_features, num_classes - 1, 1)

    def lesion_scores(self, features: torch.Tensor) -> torch.Tensor:
        """N x (classes - 1) x h x w: each lesion class's score against the background."""
        return self.score(self.dropout(features))

    def cell_logits(self, features: torch.Tensor) -> torch.Tensor:
        """N x classes x h x w: the lesion classes' scores with the background's 0 in place."""
        scores = self.lesion_scores(features)
        zero = scores.new_zeros(scores.shape[0], 1, *scores.shape[2:])
        b = self.background
        return torch.cat([scores[:, :b], zero, scores[:, b:]], dim=1)

    def score_map(self, features: torch.Tensor) -> torch.Tensor:
        """N x h x w: how much each cell looks like any lesion (the highest lesion score)."""
        return self.lesion_scores(features).amax(dim=1)

    def pool(self, cells: torch.Tensor) -> torch.Tensor:
        return cells.amax(dim=(2, 3))  # the background's 0 everywhere stays 0

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.pool(self.cell_logits(features))

    def supervised(
        self, features: torch.Tensor, masks: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and the weighted cell loss: cross-entropy per cell, a lesion cell (any of its
        pixels in the lesion) labelled with its image's class and every other cell with the
        background class; the mean over lesion cells and the mean over the other cells count
        equally; images whose lesion is not annotated are left out."""
        cells = self.cell_logits(features)
        loss = cell_loss(cells, masks, targets, self.background)
        return self.pool(cells), self.lesion_weight * loss


def cell_loss(
    cells: torch.Tensor, masks: torch.Tensor, targets: torch.Tensor, background: int
) -> torch.Tensor:
    """Balanced cell-level cross-entropy of `cells` (N x classes x h x w logits) against
    `masks` (N x H x W, `LESION` / 0 / `UNKNOWN`, max-pooled to the cells) and the images'
    classes `targets`."""
    lesion = lesion_cells(masks, cells.shape[-2:])
    wanted = torch.where(
        lesion, targets[:, None, None], torch.full_like(targets, background)[:, None, None]
    )
    known = annotated(masks)
    losses = F.cross_entropy(cells, wanted, reduction="none")[known]
    lesion = lesion[known]
    parts = [losses[kind].mean() for kind in (lesion, ~lesion) if kind.any()]
    return torch.stack(parts).mean() if parts else cells.sum() * 0.0


def lesion_background(classes: Sequence[str], positive: int) -> int:
    """The class without lesions: 'normal' where there is one, else (two classes) the class
    that is not the positive one."""
    if "normal" in classes:
        return list(classes).index("normal")
    if len(classes) == 2:
        return 1 - positive
    raise ConfigError(
        f"lesion_map needs a class without lesions ('normal', or two classes); got {classes}"
    )


@register_model(
    "cell_probe",
    family="pretrained",
    modality="image",
    description="Frozen pretrained backbone, a logistic regression on every feature-map cell "
    "(lesion cells from the annotations, of each lesion image and of its moved views, against "
    "cells of images without lesions), image logit = highest cell: the lesion_map head "
    "fitted in closed form, no epochs (the mini-MIAS "
    "lesion-cell detector; not a published recipe)",
)
def cell_probe(
    num_classes: int = 2,
    backbone: str = "tf_efficientnet_lite0",
    weights: str = "imagenet",
    size: int | Sequence[int] = 1024,
    background: int = 0,
    c: float = 0.001,
    background_fraction: float = 0.25,
    lesion_views: str = "affine",
    branches: Sequence[str] | str | None = None,
) -> ImageNetwork:
    """`branches`: more backbones whose last feature maps join each cell's features, as
    `probe`'s ('name@size' or 'name', a list or one comma-separated string; their maps are
    resized to the first backbone's grid where they differ). `c`: the regression's inverse
    L2 strength (0.001 cross-validated best on mini-MIAS's development women,
    `benchmarks/bench_mias_detector_variants.py`); `background_fraction`:
    the seeded share of the background images' cells it learns from (memory);
    `lesion_views`: the views of each training image with a lesion whose lesion cells it
    learns from (`breastcad.models.tta.views`: none the image as given, flip it and its
    mirror image, affine ten moved views, the annotation moved with each; cross-validated on
    the same development women); background cells come from the images as given, and the
    network answers on the image as given (`--tta` is separate)."""
    if lesion_views not in MODES:
        raise ConfigError(
            f"cell_probe: lesion_views must be one of {', '.join(MODES)}, not '{lesion_views}'"
        )
    if not 0 < background_fraction <= 1 or c <= 0:
        raise ConfigError(
            f"cell_probe: c must be > 0 and background_fraction in (0, 1], not {c} and "
            f"{background_fraction}"
        )
    recipe = Recipe(
        epochs=0, batch_size=8, lr=0.0, size=size, resize="pad", lesion_masks=True, closed_form=True
    )
    built, branches = branch_models("cell_probe", backbone, weights, size, branches)
    return _lesion_network(
        "cell_probe",
        recipe,
        num_classes,
        backbone,
        weights,
        size,
        background,
        frozen=True,
        c=c,
        background_fraction=background_fraction,
        lesion_views=lesion_views,
        extra_models=built,
        **({"branches": branches} if branches else {}),
    )


@register_model(
    "lesion_map",
    family="pretrained",
    modality="image",
    description="Whole pretrained network, 1x1-convolution lesion scores per feature-map cell, "
    "image logit = highest cell; trained with a cell loss from lesion annotations (mini-MIAS "
    "centres, BUSI masks) besides the image label (not a published recipe)",
)
def lesion_map(
    num_classes: int = 2,
    backbone: str = "tf_efficientnet_lite0",
    weights: str = "imagenet",
    size: int | Sequence[int] = 224,
    background: int = 0,
) -> ImageNetwork:
    recipe = Recipe(**WHOLE_NETWORK, batch_size=16, size=size, lesion_masks=True)
    return _lesion_network(
        "lesion_map", recipe, num_classes, backbone, weights, size, background, frozen=False
    )


def _lesion_network(
    name: str,
    recipe: Recipe,
    num_classes: int,
    backbone: str,
    weights: str,
    size: int | Sequence[int],
    background: int,
    frozen: bool,
    **arch: Any,
) -> ImageNetwork:
    """A network with `LesionMapHead` (lesion scores per cell, image logit = highest cell)."""
    head = partial(LesionMapHead, background=background)
    return pretrained_network(
        name,
        head,
        recipe,
        num_classes,
        backbone,
        weights,
        size,
        frozen=frozen,
        background=background,
        **arch,
    )
