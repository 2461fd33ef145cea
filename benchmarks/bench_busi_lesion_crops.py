"""BUSI: does a crop around the lesion add to the whole image's linear-probe features? On the
development images only; prints one table of grouped 5-fold cross-validated figures.

    .venv/bin/python benchmarks/bench_busi_lesion_crops.py [--seed 0] [--detector-size 320]

The seed-0 split `bench_image_models.py` gives its BUSI runs (duplicate-aware); only its
training and validation images (498) are read, the test images are not touched. Features are
the `probe` model's (frozen EfficientNet-Lite0 with its offline ImageNet weights, global
average of the last feature map and of every stage, 160 px, images padded to square):
- whole: the image;
- mask crop (oracle): the bounding box of the annotated lesion masks, 25% margin, as if a
  perfect segmentation were at hand; normal images (no lesion) keep the whole image, so this
  row's three-class figures are flattered by the crop itself telling "normal" apart: read its
  benign-vs-malignant AUC;
- detector crop: what could run without masks. A lesion-cell detector (`cell_probe`'s recipe:
  logistic regression, C=0.001, on the last feature map's cells at `--detector-size`, lesion
  cells = at least half inside a mask, against a seeded quarter of the lesion-free cells),
  cross-fitted over the same five folds, marks its most lesion-like cell; the box is the
  connected cells around it scoring at least half that cell's probability, 25% margin.
Each row is a logistic regression (standardised, balanced, C=0.01) on the features,
cross-validated over five folds cut by near-duplicate cluster. About 7 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

from breastcad.data.imaging import read_image, to_gray_float
from breastcad.data.lesions import native_mask
from breastcad.data.sources import scan
from breastcad.data.splits import split_dataset
from breastcad.models.registry import create_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "busi"
SIZE, MARGIN, C = 160, 0.25, 0.01


def square(a: np.ndarray) -> np.ndarray:
    """`a` centred on a zero square (the `pad` resize every BUSI run uses)."""
    h, w = a.shape
    s = max(h, w)
    out = np.zeros((s, s), np.float32)
    out[(s - h) // 2 : (s - h) // 2 + h, (s - w) // 2 : (s - w) // 2 + w] = a
    return out


def as_input(a: np.ndarray, size: int) -> torch.Tensor:
    """Gray [0, 1] image -> 1 x 3 x size x size in the backbone's [-1, 1] range."""
    t = torch.from_numpy(square(a))[None, None]
    t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return (t.repeat(1, 3, 1, 1) - 0.5) / 0.5


def crop(a: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """`box` (y0, y1, x0, x1 on the padded square) widened by MARGIN, cut from the square."""
    y0, y1, x0, x1 = box
    dy, dx = (y1 - y0) * MARGIN + 8, (x1 - x0) * MARGIN + 8
    s = square(a)
    return s[max(0, int(y0 - dy)) : int(y1 + dy), max(0, int(x0 - dx)) : int(x1 + dx)]


def detector_box(pmap: np.ndarray, side: int) -> tuple[float, float, float, float]:
    """The connected cells around the most lesion-like one that score >= half of it."""
    labels, _ = ndimage.label(pmap >= 0.5 * pmap.max())
    iy, ix = np.unravel_index(pmap.argmax(), pmap.shape)
    ys, xs = np.nonzero(labels == labels[iy, ix])
    cell = side / pmap.shape[0]
    return ys.min() * cell, (ys.max() + 1) * cell, xs.min() * cell, (xs.max() + 1) * cell


def scores(x: np.ndarray, y: np.ndarray, cuts, classes: list[str]) -> tuple[float, float, float]:
    """Cross-validated macro AUC, argmax accuracy and benign-vs-malignant AUC."""
    p = np.zeros((len(y), len(classes)))
    for fit, held in cuts:
        model = make_pipeline(
            StandardScaler(), LogisticRegression(C=C, max_iter=5000, class_weight="balanced")
        ).fit(x[fit], y[fit])
        p[held] = model.predict_proba(x[held])
    lesion = y != classes.index("normal")
    malignant = classes.index("malignant")
    return (
        roc_auc_score(y, p, multi_class="ovr", average="macro"),
        float((p.argmax(1) == y).mean()),
        roc_auc_score(y[lesion] == malignant, p[lesion, malignant]),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--detector-size", type=int, default=320)
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"{DATA}: BUSI not found (see ../shared/data/README.md)")
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    manifest = scan("busi", DATA)
    split, _, _ = split_dataset(manifest, seed=args.seed, progress=False)
    dev = split[split["partition"] != "test"]
    rows = manifest.frame.set_index("path").loc[dev["path"]].reset_index().to_dict("records")
    classes = sorted(manifest.classes)
    y = np.array([classes.index(r["label"]) for r in rows])
    groups = dev["split_group"].to_numpy()
    probe = create_model("probe", num_classes=len(classes), size=SIZE).eval()
    detector = create_model("transfer", num_classes=len(classes), size=args.detector_size).eval()

    whole, oracle, cells, targets, images = [], [], [], [], []
    with torch.inference_mode():
        for r in tqdm(rows, desc="features", unit="img"):
            a = to_gray_float(read_image(r["path"]))
            mask = native_mask(r, "normal")
            lesion = mask.shape == a.shape and bool(mask.any())
            whole.append(probe.body(as_input(a, SIZE))[0].numpy())
            if lesion:
                ys, xs = np.nonzero(square(mask.astype(np.float32)))
                box = (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1)
                oracle.append(probe.body(as_input(crop(a, box), SIZE))[0].numpy())
            else:
                oracle.append(whole[-1])
            f = detector.body(as_input(a, args.detector_size))[0]
            cells.append(f.permute(1, 2, 0).numpy())
            m = torch.from_numpy(square((mask > 0).astype(np.float32) if lesion else 0 * a))
            inside = F.adaptive_avg_pool2d(m[None, None], f.shape[-2:])[0, 0].numpy()
            targets.append(np.where(inside >= 0.5, 1, np.where(inside == 0, 0, -1)))
            images.append(a)
    whole, oracle, cells, targets = map(np.stack, (whole, oracle, cells, targets))
    cuts = list(
        StratifiedGroupKFold(5, shuffle=True, random_state=args.seed).split(whole, y, groups)
    )

    rng = np.random.default_rng(args.seed)
    maps = np.zeros(targets.shape, np.float32)
    for fit, held in cuts:
        x, t = cells[fit].reshape(-1, cells.shape[-1]), targets[fit].reshape(-1)
        keep = (t == 1) | ((t == 0) & (rng.random(len(t)) < 0.25))
        cell_model = make_pipeline(
            StandardScaler(), LogisticRegression(C=0.001, max_iter=3000, class_weight="balanced")
        ).fit(x[keep], t[keep])
        held_cells = cells[held].reshape(-1, cells.shape[-1])
        maps[held] = cell_model.predict_proba(held_cells)[:, 1].reshape(maps[held].shape)
    known = targets.reshape(-1) >= 0
    cell_auc = roc_auc_score(targets.reshape(-1)[known], maps.reshape(-1)[known])
    found, detected = [], []
    with torch.inference_mode():
        for a, pmap, t in zip(images, maps, targets, strict=True):
            box = detector_box(pmap, max(a.shape))
            detected.append(probe.body(as_input(crop(a, box), SIZE))[0].numpy())
            if (t == 1).any():  # lesion cells inside the box's cells
                g = pmap.shape[0] / max(a.shape)
                y0, y1, x0, x1 = (round(v * g) for v in box)
                found.append((t[y0:y1, x0:x1] == 1).sum() / (t == 1).sum())
    detected = np.stack(detected)

    print(
        f"\nBUSI development images of the seed-{args.seed} split: {len(y)} "
        f"({dev['label'].value_counts().to_dict()}), "
        f"5 folds by near-duplicate cluster; detector at {args.detector_size} px: held-out cell "
        f"AUC {cell_auc:.3f}; lesions with at least half their cells in the box: "
        f"{int((np.array(found) >= 0.5).sum())} of {len(found)}\n"
    )
    print("| features | macro AUC | accuracy (argmax) | benign vs malignant AUC |")
    print("|---|---|---|---|")
    for name, x in (
        ("whole image", whole),
        ("mask crop (oracle)", oracle),
        ("whole + mask crop (oracle)", np.hstack([whole, oracle])),
        ("detector crop", detected),
        ("whole + detector crop", np.hstack([whole, detected])),
    ):
        auc, acc, bm = scores(x, y, cuts, classes)
        print(f"| {name} | {auc:.3f} | {acc:.3f} | {bm:.3f} |")
    print(f"\n{(time.perf_counter() - start) / 60:.1f} minutes")


if __name__ == "__main__":
    main()
