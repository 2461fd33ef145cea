"""Test-time views: what each `affine` view is, that maps go back where they came from, and
that the answer is the mean probability over the views."""

import numpy as np
import pytest
import torch

from breastcad.errors import ConfigError
from breastcad.models.tta import AFFINE_MOVES, MODES, unview, views, with_views


def _dot(size: int = 40, row: int = 20, col: int = 28) -> torch.Tensor:
    """One uint8 (1, H, W, 3) image, black but for a 3 x 3 white square centred at (row, col)."""
    x = torch.zeros((1, size, size, 3), dtype=torch.uint8)
    x[0, row - 1 : row + 2, col - 1 : col + 2] = 255
    return x


def _centre(view: torch.Tensor) -> tuple[float, float]:
    """Brightness-weighted (row, col) of a uint8 (1, H, W, C) image."""
    w = view[0, ..., 0].double()
    rows, cols = torch.meshgrid(torch.arange(w.shape[0]), torch.arange(w.shape[1]), indexing="ij")
    return float((w * rows).sum() / w.sum()), float((w * cols).sum() / w.sum())


def test_affine_has_ten_views_the_image_first_and_the_mirror_image_sixth():
    x = _dot()
    seen = views(x, "affine")
    assert MODES == ("none", "flip", "affine") and len(seen) == 2 * len(AFFINE_MOVES) == 10
    assert all(v.shape == x.shape and v.dtype == torch.uint8 for v in seen)
    assert torch.equal(seen[0], x) and torch.equal(seen[5], x.flip(2))
    assert len(views(x, "flip")) == 2 and torch.equal(views(x, "none")[0], x)
    assert len({tuple(v.flatten().tolist()) for v in seen}) == 10  # all different


def test_each_affine_view_moves_the_picture_as_documented():
    """Shifts move by 5% of the side (2 px of 40) along both axes; the rotations turn the dot
    by 10 degrees about the centre (torchvision's `affine`: a positive angle turns clockwise as
    shown, rows counted downwards)."""
    size, (row, col) = 40, (20.0, 28.0)
    seen = views(_dot(size, int(row), int(col)), "affine")
    assert _centre(seen[3]) == pytest.approx((row + 2, col + 2), abs=0.05)
    assert _centre(seen[4]) == pytest.approx((row - 2, col - 2), abs=0.05)
    mid = (size - 1) / 2
    for view, angle in ((seen[1], 10.0), (seen[2], -10.0)):
        a = np.deg2rad(angle)
        dy, dx = row - mid, col - mid
        expected = (mid + dy * np.cos(a) + dx * np.sin(a), mid - dy * np.sin(a) + dx * np.cos(a))
        assert _centre(view) == pytest.approx(expected, abs=0.35)
        assert _centre(view)[0] != pytest.approx(row, abs=0.5)  # it did move
    mirrored_shift = _centre(seen[8])  # the mirror image (col 11), shifted by +2 px
    assert mirrored_shift == pytest.approx((row + 2, size - 1 - col + 2), abs=0.05)


def test_unview_moves_each_views_map_back_onto_the_image():
    """A smooth map carried along with each view, then moved back, matches the original map
    away from the borders a move uncovers; without moving back it does not."""
    size = 48
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    blob = torch.exp(-((rows - 20.0) ** 2 + (cols - 30.0) ** 2) / 40.0)[None].float()
    seen = [v[:, 0] for v in views(blob[:, None], "affine")]  # float (N, C, H, W) views
    back = unview(seen, "affine")
    inner = (slice(None), slice(8, -8), slice(8, -8))
    for moved, returned in zip(seen[1:], back[1:], strict=True):
        assert torch.allclose(returned[inner], blob[inner], atol=0.08)
        assert not torch.allclose(moved[inner], blob[inner], atol=0.08)
    assert torch.equal(unview([blob, blob.flip(2)], "flip")[1], blob)


def test_with_views_is_the_log_of_the_mean_softmax_over_the_views():
    def forward(x: torch.Tensor) -> torch.Tensor:  # a toy network that sees where things are
        f = x.float().mean(-1) / 255
        halves = [f[:, :, :20].mean((1, 2)) - f[:, :, 20:].mean((1, 2))]
        halves += [f[:, :20].mean((1, 2)) - f[:, 20:].mean((1, 2)), torch.zeros(len(x))]
        return torch.stack(halves, 1) * 20

    ramp = torch.linspace(0, 200, 40)[None, None, :, None]
    x = (torch.randint(0, 56, (4, 40, 40, 3)) + ramp).to(torch.uint8)
    expected = torch.stack([forward(v).softmax(1) for v in views(x, "affine")]).mean(0)
    got = with_views(forward, x, "affine")
    assert torch.allclose(got.softmax(1), expected, atol=1e-6)
    assert not torch.allclose(got.softmax(1), forward(x).softmax(1), atol=1e-3)
    with pytest.raises(ConfigError, match="unknown test-time augmentation 'rotate'"):
        views(x, "rotate")
