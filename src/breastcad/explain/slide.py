"""The IDC slide view the published work never shows: a patient's whole-slide region rebuilt
from its 50x50 patches (file names carry x and y), the pathologist's IDC annotation beside the
model's predicted probability for every patch.

Example:
    >>> slide_heatmap(predictor, Path("idc"), "10253", Path("out"))  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from breastcad.errors import ConfigError, DataError

PATCH = 50


@dataclass
class SlideResult:
    """Files written and the patch-level numbers shown in the figure."""

    png: Path
    csv: Path
    patches: int
    idc_patches: int
    auc: float | None
    """Patch-level ROC AUC on this patient (None when only one class is present)."""


def slide_heatmap(
    predictor, root: Path, patient: str, out: Path, batch_size: int = 256, progress: bool = True
) -> SlideResult:
    """Predict every patch of `patient` under the IDC `root` and draw tissue, annotation and
    predicted P(IDC) side by side (PNG) with a CSV of x, y, label and probability."""
    from breastcad.data.sources import scan

    if predictor.kind != "image" or "idc" not in predictor.classes:
        raise ConfigError(
            f"{predictor.bundle.path}: the slide view needs an IDC model (classes benign/idc); "
            f"this one has {predictor.classes}"
        )
    manifest = scan("idc", Path(root))
    frame = manifest.frame
    rows = frame.loc[frame["group_id"].astype(str) == str(patient)]
    if rows.empty:
        known = sorted(frame["group_id"].astype(str).unique())
        raise DataError(
            f"no patches of patient {patient}; patients here: {', '.join(known[:10])}"
            + (" ..." if len(known) > 10 else ""),
            root,
        )
    table = predictor.predict_paths(rows["path"].tolist(), batch_size, progress=progress)
    table = table.merge(
        rows[["path", "label", "x", "y"]].astype({"path": str}), on="path", how="left"
    )
    table = table.loc[table["error"] == ""].copy()
    if table.empty:
        raise DataError(f"no readable patch of patient {patient}", root)
    table["p_idc"] = table["p_idc"].astype(float)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv = out / f"slide_{patient}.csv"
    table[["x", "y", "label", "p_idc", "prediction"]].to_csv(csv, index=False)
    auc = _auc(table)
    png = out / f"slide_{patient}.png"
    _draw(table, patient, auc, predictor, png)
    return SlideResult(png, csv, len(table), int((table["label"] == "idc").sum()), auc)


def _auc(table: pd.DataFrame) -> float | None:
    from sklearn.metrics import roc_auc_score

    truth = (table["label"] == "idc").to_numpy()
    if truth.all() or not truth.any():
        return None
    return float(roc_auc_score(truth, table["p_idc"]))


def _canvases(table: pd.DataFrame, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tissue (RGB), annotation and probability maps on one grid (NaN where no patch)."""
    from PIL import Image

    from breastcad.data.imaging import read_image, to_uint8

    cell = max(1, round(PATCH * scale))
    x0, y0 = int(table["x"].min()), int(table["y"].min())
    cols = (int(table["x"].max()) - x0) // PATCH + 1
    rows = (int(table["y"].max()) - y0) // PATCH + 1
    tissue = np.full((rows * cell, cols * cell, 3), 255, dtype=np.uint8)
    truth = np.full((rows, cols), np.nan)
    prob = np.full((rows, cols), np.nan)
    for rec in table.itertuples():
        r, c = (int(rec.y) - y0) // PATCH, (int(rec.x) - x0) // PATCH
        truth[r, c] = float(rec.label == "idc")
        prob[r, c] = rec.p_idc
        image = to_uint8(read_image(rec.path))
        image = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
        h, w = image.shape[:2]  # edge patches can be smaller than 50 x 50
        small = np.asarray(
            Image.fromarray(image).resize((max(1, round(w * scale)), max(1, round(h * scale))))
        )
        tissue[r * cell : r * cell + small.shape[0], c * cell : c * cell + small.shape[1]] = small
    return tissue, truth, prob


def _draw(table: pd.DataFrame, patient: str, auc: float | None, predictor, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    span = max(table["x"].max() - table["x"].min(), table["y"].max() - table["y"].min()) + PATCH
    scale = min(1.0, 1000.0 / span)
    tissue, truth, prob = _canvases(table, scale)
    extent = (0, tissue.shape[1], tissue.shape[0], 0)
    fig, axes = plt.subplots(1, 3, figsize=(16, 6), constrained_layout=True)
    axes[0].imshow(tissue)
    axes[0].set_title(f"patient {patient}: {len(table)} patches")
    axes[1].imshow(tissue)
    axes[1].imshow(np.ma.masked_where(truth != 1, truth), cmap="autumn", alpha=0.5, extent=extent)
    axes[1].set_title(f"annotated IDC ({int(np.nansum(truth))} patches)")
    shown = axes[2].imshow(prob, cmap="magma", vmin=0, vmax=1, extent=extent)
    axes[2].set_facecolor("white")
    threshold = predictor.threshold
    title = "predicted P(IDC)" + (f", AUC {auc:.3f}" if auc is not None else "")
    axes[2].set_title(title + (f", threshold {threshold:.2f}" if threshold is not None else ""))
    fig.colorbar(shown, ax=axes[2], fraction=0.046, label="P(IDC), calibrated")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        f"{predictor.bundle.model_id}: patch predictions placed at their slide coordinates "
        "(research use only)"
    )
    fig.savefig(png, dpi=110)
    plt.close(fig)
