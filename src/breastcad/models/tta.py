"""Test-time augmentation: a network's class probabilities averaged over views of each image.

`flip` averages the image and its mirror image (left-right), the one view every modality here
is trained to accept (histology, ultrasound and mammograms are all augmented with left-right
flips, and a left breast's mammogram is a mirrored right one). A run with `--tta flip` fits its
temperature and operating point on the averaged answers, and its bundle records the setting, so
`evaluate`, `predict`, the service and the ONNX runtime average the same views, and Grad-CAM
explains the average (both views' maps, the mirror's mirrored back). The lesion localisation
check of a run scores the cell maps of the image as given.

Example:
    >>> from breastcad.models import create_model
    >>> net = create_model("idc_cnn", size=24).eval()
    >>> x = torch.randint(0, 256, (2, 24, 24, 3), dtype=torch.uint8)
    >>> same = with_views(net, x, "flip"), with_views(net, x.flip(2), "flip")
    >>> bool(torch.allclose(*same, atol=1e-5))  # a mirror image gets the same answer
    True
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from breastcad.errors import ConfigError
from breastcad.models.ensemble import mean_probability_logits

MODES = ("none", "flip")


def mirror(x: torch.Tensor) -> torch.Tensor:
    """Left-right mirror image of a uint8 (N, H, W, C) or float (N, C, H, W) batch."""
    return x.flip(2 if x.dtype == torch.uint8 else 3)


def with_views(
    forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, mode: str
) -> torch.Tensor:
    """`forward(x)` for `mode` none; for flip the log of the mean softmax of `forward` on `x`
    and on its mirror image. Works for any output whose last axis holds classes (an
    ensemble's member logits too)."""
    check_mode(mode)
    if mode == "none":
        return forward(x)
    return mean_probability_logits(torch.stack([forward(x), forward(mirror(x))]))


def check_mode(mode: str) -> None:
    """A ConfigError unless `mode` is one of `MODES`."""
    if mode not in MODES:
        raise ConfigError(
            f"unknown test-time augmentation '{mode}'; choose from {', '.join(MODES)}"
        )
