"""BUSI: does a crop around the lesion add to the whole image's linear-probe features? On the
development images only; prints one table of grouped 5-fold cross-validated figures.

    .venv/bin/python benchmarks/bench_busi_lesion_crops.py [--seed 0] [--level 0.5]

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
  connected cells around it scoring at least half that cell's probability, 25% margin;
- pixel-detector crop: a finer lesion map from the same forward pass. Every stage's output and
  the last feature map, pooled or upsampled to stride 8 (a 40 x 40 "hypercolumn" grid of 1,792
  features at 320 px), a logistic regression per grid pixel (C=`--pixel-c`, lesion pixels
  against a seeded `--pixel-background` share of lesion-free ones), cross-fitted over the same
  five folds; the box is the connected pixels around the most lesion-like one with probability
  >= `--level` (half the highest where none reaches it), 25% margin. It prints the box's
  intersection over union with the mask's box, beside the cell detector's.
Each row is a logistic regression (standardised, balanced, C=0.01) on the features,
cross-validated over five folds cut by near-duplicate cluster. About 3-7 minutes on 2 cores.
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
SIZE, MARGIN, C, LEVEL = 160, 0.25, 0.01, 0.5


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


def hypercolumns(model, x: torch.Tensor) -> torch.Tensor:
    """Every stage's output and the last feature map of `model` at stride 8 (average-pooled
    or bilinearly upsampled): D x H/8 x W/8, and the last map itself (for the cell detector)."""
    final, stages = model.forward_intermediates(x)
    grid = stages[2].shape[-2:]
    parts = [
        F.adaptive_avg_pool2d(s, grid)
        if s.shape[-1] > grid[-1]
        else F.interpolate(s, size=grid, mode="bilinear", align_corners=False)
        for s in [*stages, final]
    ]
    return torch.cat(parts, 1)[0], final[0]


def pixel_box(pmap: np.ndarray, side: int, level: float) -> tuple[float, float, float, float]:
    """The connected pixels (stride 8) around the most lesion-like one with probability >=
    `level` (or >= half the highest, where none reaches it)."""
    labels, _ = ndimage.label(pmap >= (level if pmap.max() >= level else 0.5 * pmap.max()))
    iy, ix = np.unravel_index(pmap.argmax(), pmap.shape)
    ys, xs = np.nonzero(labels == labels[iy, ix])
    cell = side / pmap.shape[0]
    return ys.min() * cell, (ys.max() + 1) * cell, xs.min() * cell, (xs.max() + 1) * cell


def iou(a: tuple, b: tuple) -> float:
    """Intersection over union of two (y0, y1, x0, x1) boxes."""
    h = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    w = max(0.0, min(a[3], b[3]) - max(a[2], b[2]))
    area = lambda r: (r[1] - r[0]) * (r[3] - r[2])  # noqa: E731
    return h * w / (area(a) + area(b) - h * w)


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
    parser.add_argument("--pixel-c", type=float, default=0.001)
    parser.add_argument("--pixel-background", type=float, default=0.1)
    parser.add_argument("--level", type=float, default=LEVEL)
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
    pixels, pixel_targets, truth = [], [], []
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
            columns, f = hypercolumns(detector.body.model, as_input(a, args.detector_size))
            cells.append(f.permute(1, 2, 0).numpy())
            pixels.append(columns.permute(1, 2, 0).half().numpy())
            m = torch.from_numpy(square((mask > 0).astype(np.float32) if lesion else 0 * a))
            for grid, out in ((f.shape[-2:], targets), (columns.shape[-2:], pixel_targets)):
                inside = F.adaptive_avg_pool2d(m[None, None], grid)[0, 0].numpy()
                out.append(np.where(inside >= 0.5, 1, np.where(inside == 0, 0, -1)))
            truth.append(box if lesion else None)
            images.append(a)
    whole, oracle, cells, targets = map(np.stack, (whole, oracle, cells, targets))
    pixels, pixel_targets = np.stack(pixels), np.stack(pixel_targets)
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

    pixel_maps = np.zeros(pixel_targets.shape, np.float32)
    for fit, held in tqdm(cuts, desc="pixel detector", unit="fold"):
        t = pixel_targets[fit].reshape(-1)
        keep = (t == 1) | ((t == 0) & (rng.random(len(t)) < args.pixel_background))
        x = pixels[fit].reshape(-1, pixels.shape[-1])[keep].astype(np.float32)
        pixel_model = make_pipeline(
            StandardScaler(),
            LogisticRegression(C=args.pixel_c, max_iter=3000, class_weight="balanced"),
        ).fit(x, t[keep])
        for i in held:
            p = pixel_model.predict_proba(
                pixels[i].reshape(-1, pixels.shape[-1]).astype(np.float32)
            )
            pixel_maps[i] = p[:, 1].reshape(pixel_maps.shape[1:])
    known = pixel_targets.reshape(-1) >= 0
    pixel_auc = roc_auc_score(pixel_targets.reshape(-1)[known], pixel_maps.reshape(-1)[known])
    segmented, pixel_found, overlaps, cell_overlaps = [], [], [], []
    with torch.inference_mode():
        for a, pmap, cmap, t, true_box in zip(
            images, pixel_maps, maps, pixel_targets, truth, strict=True
        ):
            box = pixel_box(pmap, max(a.shape), args.level)
            segmented.append(probe.body(as_input(crop(a, box), SIZE))[0].numpy())
            if true_box is not None:
                overlaps.append(iou(box, true_box))
                cell_overlaps.append(iou(detector_box(cmap, max(a.shape)), true_box))
            if (t == 1).any():
                g = pmap.shape[0] / max(a.shape)
                y0, y1, x0, x1 = (round(v * g) for v in box)
                pixel_found.append((t[y0:y1, x0:x1] == 1).sum() / (t == 1).sum())
    segmented = np.stack(segmented)
    print(
        f"pixel detector (stride 8, {pixels.shape[-1]} features, C={args.pixel_c}, level "
        f"{args.level}): held-out "
        f"pixel AUC {pixel_auc:.3f}; lesions with at least half their pixels in the box: "
        f"{int((np.array(pixel_found) >= 0.5).sum())} of {len(pixel_found)}; box IoU with the "
        f"mask's box, median {np.median(overlaps):.2f} (cell detector "
        f"{np.median(cell_overlaps):.2f}), >= 0.5 in {np.mean(np.array(overlaps) >= 0.5):.2f} "
        f"({np.mean(np.array(cell_overlaps) >= 0.5):.2f})"
    )

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
        ("pixel-detector crop", segmented),
        ("whole + pixel-detector crop", np.hstack([whole, segmented])),
    ):
        auc, acc, bm = scores(x, y, cuts, classes)
        print(f"| {name} | {auc:.3f} | {acc:.3f} | {bm:.3f} |")
    print(f"\n{(time.perf_counter() - start) / 60:.1f} minutes")


if __name__ == "__main__":
    main()
