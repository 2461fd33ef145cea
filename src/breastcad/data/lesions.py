"""Where the lesions are: per-image masks in the network's input geometry, from the annotations a
dataset ships (mini-MIAS abnormality centres and radii in `Info.txt`; BUSI's mask images).

A mask is uint8 height x width: `LESION` (1) inside a lesion, 0 outside, `UNKNOWN` (255)
everywhere for an image whose lesion is not annotated (3 abnormal mini-MIAS images), so a loss
can leave it out instead of calling its lesion background. Images of the background class (the
one without lesions: 'normal') are all 0. Masks are drawn at the image's own size and then
resized exactly like its pixels (`imaging.resize`, the same 'pad' / 'crop' / 'stretch'), so
they stay aligned.

mini-MIAS coordinates count rows from the bottom of the image (the `Info.txt` convention):
row = height - y (height 1024 in mini-MIAS; read from the file's header).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from breastcad.config import PreprocessConfig
from breastcad.data.imaging import as_hw, read_image, resize
from breastcad.data.manifest import Manifest
from breastcad.errors import ConfigError, DataError

LESION, UNKNOWN = 1, 255


def annotated(masks: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Per image (first axis): True unless its lesion is unknown (any `UNKNOWN` pixel)."""
    return ~(masks == UNKNOWN).reshape(len(masks), math.prod(masks.shape[1:])).any(1)


def lesion_cells(masks: torch.Tensor, cells: tuple[int, int]) -> torch.Tensor:
    """N x h x w bool: the cells of an h x w grid over each mask that hold any lesion pixel."""
    return F.adaptive_max_pool2d((masks == LESION).float()[:, None], cells)[:, 0].bool()


def has_lesion_annotations(manifest: Manifest) -> bool:
    frame = manifest.frame
    columns = [c for c in ("lesions", "masks") if c in frame.columns]
    return any((frame[c].fillna("") != "").any() for c in columns)


def circles(text: str, height: int) -> list[tuple[float, float, float]]:
    """'CALC:x,y,rR;CIRC:...' (the mini-MIAS manifest column) -> [(row, col, radius)], rows
    counted from the top of an image `height` pixels high."""
    out = []
    for item in filter(None, str(text).split(";")):
        xy, radius = item.split(":")[-1].split(",r")
        x, y = (float(v) for v in xy.split(","))
        out.append((height - y, x, float(radius)))
    return out


def _image_size(path: str) -> tuple[int, int]:
    """(height, width) from the image file's header, without decoding its pixels."""
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the image size ({exc.__class__.__name__})", path) from exc


def draw_circles(shape: tuple[int, int], items: list[tuple[float, float, float]]) -> np.ndarray:
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    mask = np.zeros(shape, dtype=np.uint8)
    for r, c, radius in items:
        mask[(rows - r) ** 2 + (cols - c) ** 2 <= radius**2] = LESION
    return mask


def native_mask(row: dict, background_label: str) -> np.ndarray | None:
    """The mask at the image's own size (an empty 1 x 1 one for the background class); None
    when an image with a lesion has no annotation."""
    if row["label"] == background_label:
        return np.zeros((1, 1), np.uint8)
    if row.get("lesions"):
        height, width = _image_size(row["path"])
        return draw_circles((height, width), circles(row["lesions"], height))
    if row.get("masks"):
        size = _image_size(row["path"])
        union = np.zeros(size, dtype=bool)
        for file in str(row["masks"]).split(";"):
            part = read_image(file)
            if part.shape[:2] != size:
                raise DataError(f"mask is {part.shape[:2]}, its image {size} (height, width)", file)
            union |= (part if part.ndim == 2 else part.max(axis=2)) > 0
        return union.astype(np.uint8) * LESION
    return None


def lesion_masks(
    manifest: Manifest,
    preprocess: PreprocessConfig,
    background_label: str,
    progress: bool = True,
) -> tuple[np.ndarray, list[str]]:
    """Masks of every manifest row (N x height x width uint8) in the geometry of the cache that
    `preprocess` builds, and 'path: problem' for mask files that could not be read (their
    images count as not annotated). Rows of `background_label` are all 0 (no lesion); other
    rows without an annotation are all `UNKNOWN`."""
    if not has_lesion_annotations(manifest):
        raise ConfigError(
            f"{manifest.dataset}: no lesion annotations (mini-MIAS Info.txt coordinates or BUSI "
            "mask images); a lesion-supervised model cannot train on it"
        )
    height, width = as_hw(preprocess.size)
    out = np.zeros((len(manifest), height, width), dtype=np.uint8)
    problems = []
    rows = manifest.frame.to_dict("records")
    for i, row in enumerate(tqdm(rows, desc="lesion masks", unit="img", disable=not progress)):
        try:
            native = native_mask(row, background_label)
        except DataError as exc:
            native = None
            problems.append(f"{row['path']}: lesion annotation unusable ({exc})")
        if native is None:
            out[i] = UNKNOWN
        elif native.any():
            resized = resize(native.astype(np.float32), (height, width), preprocess.resize)
            out[i] = (resized >= 0.5).astype(np.uint8) * LESION
    return out, problems
