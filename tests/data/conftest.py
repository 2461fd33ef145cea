"""Synthetic dataset trees in every supported layout, written by the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def blob_image(seed: int, size: tuple[int, int] = (64, 80), rgb: bool = False) -> np.ndarray:
    """A distinct image per seed: a few bright ellipses on noise."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    img = rng.normal(40, 10, size)
    for _ in range(3):
        (cy, cx), (ry, rx) = rng.uniform(0.2, 0.8, 2) * (h, w), rng.uniform(0.1, 0.3, 2) * (h, w)
        img += 150 * (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1)
    img = np.clip(img, 0, 255).astype(np.uint8)
    return np.stack([img, np.roll(img, 3, 1), img // 2], -1) if rgb else img


def save(path: Path, array: np.ndarray, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)
    return path


def scene_frames(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Two frames of one scene in `folder`, a.png and b.png: a moment apart (shifted by 3 px,
    new noise), the second with a caliper line drawn on it; and other.png, another scene."""
    scene = blob_image(21, (130, 170)).astype(float)

    def frame(shift: int, seed: int) -> np.ndarray:
        noise = np.random.default_rng(seed).normal(0, 12, scene.shape)
        return np.clip(np.roll(scene, shift, axis=1) + noise, 0, 255).astype(np.uint8)

    first, later = frame(0, 1), frame(3, 2)
    later[70:72, 30:140] = 255  # a caliper line
    for name, image in (("a", first), ("b", later), ("other", blob_image(22, (130, 170)))):
        save(folder / f"{name}.png", image)
    return first, later


@pytest.fixture
def busi_tree(tmp_path: Path) -> Path:
    base = tmp_path / "Dataset_BUSI_with_GT"
    seed = 0
    for label, n in (("benign", 8), ("malignant", 6), ("normal", 4)):
        for i in range(1, n + 1):
            seed += 1
            save(base / label / f"{label} ({i}).png", blob_image(seed))
            save(base / label / f"{label} ({i})_mask.png", np.zeros((64, 80), np.uint8))
    save(base / "benign" / "benign (1)_mask_1.png", np.zeros((64, 80), np.uint8))
    # the same image filed under two classes, as BUSI has
    save(base / "malignant" / "malignant (7).png", blob_image(1))
    # a truncated file
    good = (base / "benign" / "benign (2).png").read_bytes()
    (base / "benign" / "benign (9).png").write_bytes(good[: len(good) // 2])
    return tmp_path
