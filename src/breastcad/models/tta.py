"""Test-time augmentation: a network's class probabilities averaged over views of each image.

`flip` averages the image and its mirror image (left-right), the one view every modality here
is trained to accept (histology, ultrasound and mammograms are all augmented with left-right
flips, and a left breast's mammogram is a mirrored right one). `affine` averages ten views: the
image and its mirror image, each as given, rotated by +-10 degrees and shifted by +-5% of its
side along both axes (corners the move uncovers are black); a linear probe (`probe`) run with
it also learns from all ten views of each training image. A run with `--tta` fits its
temperature and operating point on the averaged answers, and its bundle records the setting, so
`evaluate`, `predict`, the service and the ONNX runtime average the same views, and Grad-CAM
explains the average (each view's map moved back onto the image). The lesion localisation
check of a run scores the cell maps of the image as given.

Example:
    >>> from breastcad.models import create_model
    >>> net = create_model("idc_cnn", size=24).eval()
    >>> x = torch.randint(0, 256, (2, 24, 24, 3), dtype=torch.uint8)
    >>> same = with_views(net, x, "flip"), with_views(net, x.flip(2), "flip")
    >>> bool(torch.allclose(*same, atol=1e-5))  # a mirror image gets the same answer
    True
    >>> len(views(x, "affine")), views(x, "affine")[3].shape == x.shape
    (10, True)
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from breastcad.errors import ConfigError
from breastcad.models.ensemble import mean_probability_logits

MODES = ("none", "flip", "affine")
AFFINE_MOVES = ((0.0, 0.0), (10.0, 0.0), (-10.0, 0.0), (0.0, 0.05), (0.0, -0.05))
"""`affine`'s moves of the image and of its mirror image: (rotation in degrees, clockwise as
shown, about the centre; shift right and down as a fraction of the width and height)."""


def mirror(x: torch.Tensor) -> torch.Tensor:
    """Left-right mirror image of a uint8 (N, H, W, C) or float (N, C, H, W) batch."""
    return x.flip(2 if x.dtype == torch.uint8 else 3)


def views(x: torch.Tensor, mode: str) -> list[torch.Tensor]:
    """The views of a uint8 (N, H, W, C) or float (N, C, H, W) batch that `mode` averages:
    none the batch itself, flip the batch and its mirror image, affine ten (`AFFINE_MOVES` of
    the batch, then of its mirror image)."""
    check_mode(mode)
    if mode == "none":
        return [x]
    if mode == "flip":
        return [x, mirror(x)]
    return [_moved(v, angle, shift) for v in (x, mirror(x)) for angle, shift in AFFINE_MOVES]


def unview(maps: list[torch.Tensor], mode: str) -> list[torch.Tensor]:
    """Maps (N, H, W) computed on each of `views(x, mode)`, moved back onto `x` (the part a
    move pushed out of the picture is zero)."""
    check_mode(mode)
    if mode == "none":
        return [maps[0]]
    if mode == "flip":
        return [maps[0], maps[1].flip(2)]
    n = len(AFFINE_MOVES)
    back = [
        _moved(m[:, None], -angle, -shift)[:, 0]
        for m, (angle, shift) in zip(maps, AFFINE_MOVES * 2, strict=True)
    ]
    return back[:n] + [b.flip(2) for b in back[n:]]  # the mirror image's moved, then mirrored


def _moved(x: torch.Tensor, angle: float, shift: float) -> torch.Tensor:
    """`x` rotated by `angle` degrees about its centre and shifted by `shift` of its width
    and height (bilinear, black where nothing comes in); uint8 batches are (N, H, W, C),
    float ones (N, C, H, W)."""
    import torchvision.transforms.v2.functional as tf

    if angle == 0.0 and shift == 0.0:
        return x
    channels_last = x.dtype == torch.uint8
    image = x.permute(0, 3, 1, 2) if channels_last else x
    height, width = image.shape[-2:]
    moved = tf.affine(
        image,
        angle=angle,
        translate=[round(shift * width), round(shift * height)],
        scale=1.0,
        shear=[0.0, 0.0],
        interpolation=tf.InterpolationMode.BILINEAR,
    )
    return moved.permute(0, 2, 3, 1).contiguous() if channels_last else moved


def with_views(
    forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, mode: str
) -> torch.Tensor:
    """`forward(x)` for `mode` none; otherwise the log of the mean softmax of `forward` on each
    of `views(x, mode)`. Works for any output whose last axis holds classes (an ensemble's
    member logits too)."""
    answers = [forward(v) for v in views(x, mode)]
    return answers[0] if mode == "none" else mean_probability_logits(torch.stack(answers))


def check_mode(mode: str) -> None:
    """A ConfigError unless `mode` is one of `MODES`."""
    if mode not in MODES:
        raise ConfigError(
            f"unknown test-time augmentation '{mode}'; choose from {', '.join(MODES)}"
        )
