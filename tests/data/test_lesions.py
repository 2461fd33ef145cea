import numpy as np
import pandas as pd
import pytest

from breastcad.config import PreprocessConfig
from breastcad.data.cache import ImageCache
from breastcad.data.lesions import LESION, UNKNOWN, circles, lesion_masks
from breastcad.data.manifest import Manifest
from breastcad.data.sources import scan
from breastcad.errors import ConfigError
from tests.data.conftest import save


def _mias(tmp_path, rows):
    """A mini-MIAS-like folder: one 100 x 80 image per (ref, lesion) with a bright disc drawn
    where Info.txt says (rows counted from the bottom, as in mini-MIAS)."""
    lines = []
    for ref, lesion in rows:
        img = np.full((100, 80), 30, np.uint8)
        if lesion:
            x, y, r = lesion
            yy, xx = np.mgrid[:100, :80]
            img[(yy - (100 - y)) ** 2 + (xx - x) ** 2 <= r**2] = 250
            lines.append(f"{ref} F CIRC B {x} {y} {r}")
        elif lesion is None:
            lines.append(f"{ref} F ARCH M")  # abnormal, no coordinates given
        else:
            lines.append(f"{ref} F NORM")
        save(tmp_path / f"{ref}.png", img)
    (tmp_path / "Info.txt").write_text("\n".join(lines) + "\n")
    return scan("mini-mias", tmp_path)


def test_mias_rows_count_from_the_bottom():
    assert circles("CIRC:10,30,r5;CALC:1,2,r3", 100) == [(70.0, 10.0, 5.0), (98.0, 1.0, 3.0)]


@pytest.mark.parametrize("size", [40, (40, 64), (64, 40)])
def test_masks_follow_the_cache_geometry(tmp_path, size):
    """Wherever padding puts the image, the mask covers the disc the image shows."""
    manifest = _mias(tmp_path, [("mdb001", (50, 60, 12)), ("mdb002", ()), ("mdb003", None)])
    pre = PreprocessConfig(size=size, channels=1)
    masks, problems = lesion_masks(manifest, pre, "normal", progress=False)
    pixels = ImageCache.build(manifest, pre, tmp_path / "cache", progress=False).pixels[..., 0]
    labels = manifest.frame["label"].tolist()
    assert labels == ["abnormal", "normal", "abnormal"] and not problems
    disc = pixels[0] > 140
    lesion = masks[0] == LESION
    assert lesion.sum() > 10 and (disc & lesion).sum() / (disc | lesion).sum() > 0.8
    assert (masks[1] == 0).all()  # a normal image has no lesion
    assert (masks[2] == UNKNOWN).all()  # abnormal without coordinates: unknown, not "none"


def test_mask_images_union_and_none_for_the_background_class(tmp_path):
    a = np.zeros((20, 20), np.uint8)
    a[2:6, 2:6] = 255
    b = np.zeros((20, 20), np.uint8)
    b[10:14, 10:14] = 255
    for name, img in (("m.png", a), ("m_1.png", b), ("img.png", a)):
        save(tmp_path / name, img)
    (tmp_path / "broken_mask.png").write_bytes(b"not a png")
    save(tmp_path / "small_mask.png", np.zeros((10, 20), np.uint8))
    frame = pd.DataFrame(
        {
            "path": [str(tmp_path / "img.png")] * 4,
            "label": ["malignant", "benign", "malignant", "malignant"],
            "group_id": ["1", "2", "3", "4"],
            "dataset": "busi",
            "masks": [
                f"{tmp_path / 'm.png'};{tmp_path / 'm_1.png'}",
                str(tmp_path / "m.png"),
                str(tmp_path / "broken_mask.png"),
                str(tmp_path / "small_mask.png"),
            ],
        }
    )
    manifest = Manifest(frame, tmp_path, ["benign", "malignant"])
    masks, problems = lesion_masks(manifest, PreprocessConfig(size=20), "benign", False)
    assert masks[0].sum() == 32 and masks[0][3, 3] == masks[0][12, 12] == LESION
    assert (masks[1] == 0).all()  # the background class ('benign' here) has no lesion
    assert (masks[2] == UNKNOWN).all() and (masks[3] == UNKNOWN).all()
    assert len(problems) == 2 and "broken_mask.png" in problems[0]
    assert "small_mask.png" in problems[1] and "(10, 20)" in problems[1]


def test_data_without_annotations_is_refused(tmp_path):
    save(tmp_path / "a" / "x.png", np.zeros((8, 8), np.uint8))
    save(tmp_path / "b" / "y.png", np.zeros((8, 8), np.uint8))
    manifest = scan("folder", tmp_path)
    with pytest.raises(ConfigError, match="no lesion annotations"):
        lesion_masks(manifest, PreprocessConfig(size=8), "a", progress=False)
