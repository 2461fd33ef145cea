"""Audit figures: class balance, a sample grid per class, and a gallery of duplicate pairs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from breastcad.data.imaging import read_image, resize, to_uint8
from breastcad.evaluation import plots

if TYPE_CHECKING:
    from breastcad.data.audit import AuditResult


def _thumb(path: str, size: int = 96) -> np.ndarray:
    return resize(to_uint8(read_image(path)), size, "pad")


def sample_grid(result: AuditResult, path: Path, per_class: int = 6, seed: int = 0) -> Path:
    rec = result.records[result.records["readable"]]
    classes = [c for c in result.manifest.classes if (rec["label"] == c).any()]
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(
        len(classes), per_class, figsize=(1.6 * per_class, 1.8 * len(classes)), squeeze=False
    )
    for row, label in enumerate(classes):
        paths = rec.loc[rec["label"] == label, "path"].to_numpy()
        pick = rng.choice(paths, size=min(per_class, len(paths)), replace=False)
        for col, ax in enumerate(axes[row]):
            ax.axis("off")
            if col < len(pick):
                thumb = _thumb(pick[col])
                ax.imshow(thumb, cmap="gray" if thumb.ndim == 2 else None)
        axes[row][0].set_title(label, loc="left", fontsize=10)
    fig.suptitle(f"{result.manifest.dataset}: random samples per class")
    return plots._save(fig, path)


def duplicate_gallery(result: AuditResult, path: Path, n: int = 24) -> Path | None:
    """Closest duplicate pairs first; pairs whose labels disagree are titled in red."""
    pairs = result.pairs.sort_values(["label_conflict", "distance"], ascending=[False, True])
    pairs = pairs.head(n)
    if pairs.empty:
        return None
    rec = result.records
    cols = 4
    rows = int(np.ceil(len(pairs) / cols))
    fig, axes = plt.subplots(rows, cols * 2, figsize=(2.2 * cols * 2, 2.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, (i, j, d, conflict) in enumerate(
        pairs[["i", "j", "distance", "label_conflict"]].itertuples(index=False)
    ):
        r, c = divmod(k, cols)
        for side, idx in enumerate((i, j)):
            ax = axes[r][2 * c + side]
            thumb = _thumb(rec.at[idx, "path"])
            ax.imshow(thumb, cmap="gray" if thumb.ndim == 2 else None)
            ax.set_title(
                f"{Path(rec.at[idx, 'path']).name[:18]}\n{rec.at[idx, 'label']} d={d}",
                fontsize=7,
                color="red" if conflict else "black",
            )
    fig.suptitle(
        f"Near-duplicate pairs (pHash distance <= {result.max_distance}); red: labels disagree"
    )
    return plots._save(fig, path)


def write_all(result: AuditResult, folder: Path, gallery: int) -> dict[str, Path]:
    figures = {
        "class_balance": plots.class_balance(
            result.manifest.class_counts(),
            folder / "class_balance.png",
            f"Class balance, {result.manifest.dataset}",
        ),
        "samples": sample_grid(result, folder / "samples.png"),
    }
    dup = duplicate_gallery(result, folder / "duplicates.png", gallery)
    if dup is not None:
        figures["duplicates"] = dup
    return figures
