"""BUSI: does a crop around the lesion add to the whole image's linear-probe features? Prints
one table of grouped 5-fold cross-validated figures on the development images, and with
`--test` a second of the test images, scored once by everything fitted on the development ones.

    .venv/bin/python benchmarks/bench_busi_lesion_crops.py [--seed 0] [--level 0.5] [--test]

The split `bench_image_models.py` gives its BUSI runs at that seed (duplicate-aware); without
`--test` only its training and validation images (498) are read. Features are
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
cross-validated over five folds cut by near-duplicate cluster; with `--test` also fitted on
all development images and scored on the test images (the development images' detector crops
it learns from are the cross-fitted ones, as a detector crops images it has not seen; the test
images' come from detectors fitted on all development images). About 3-7 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

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


def detector_box(
    pmap: np.ndarray, side: int, level: float | None = None
) -> tuple[float, float, float, float]:
    """The connected cells of the map around the most lesion-like one with probability >=
    `level`, or >= half the highest where `level` is None or above it; in the padded square's
    pixels (`side`)."""
    top = pmap.max()
    labels, _ = ndimage.label(pmap >= (level if level is not None and top >= level else top / 2))
    iy, ix = np.unravel_index(pmap.argmax(), pmap.shape)
    ys, xs = np.nonzero(labels == labels[iy, ix])
    cell = side / pmap.shape[0]
    return ys.min() * cell, (ys.max() + 1) * cell, xs.min() * cell, (xs.max() + 1) * cell


def hypercolumns(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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


def iou(a: tuple, b: tuple) -> float:
    """Intersection over union of two (y0, y1, x0, x1) boxes."""
    h = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    w = max(0.0, min(a[3], b[3]) - max(a[2], b[2]))
    areas = [(r[1] - r[0]) * (r[3] - r[2]) for r in (a, b)]
    return h * w / (sum(areas) - h * w)


def scores(x: np.ndarray, y: np.ndarray, cuts, classes: list[str]) -> tuple[float, float, float]:
    """Macro AUC, argmax accuracy and benign-vs-malignant AUC of a logistic regression on `x`:
    cross-validated over `cuts`, or (`cuts` = (fit, scored) index arrays once) fitted on one
    part and scored on the other."""
    p = np.zeros((len(y), len(classes)))
    for fit, held in cuts:
        model = make_pipeline(
            StandardScaler(), LogisticRegression(C=C, max_iter=5000, class_weight="balanced")
        ).fit(x[fit], y[fit])
        p[held] = model.predict_proba(x[held])
    scored = np.concatenate([held for _, held in cuts])
    y, p = y[scored], p[scored]
    lesion = y != classes.index("normal")
    malignant = classes.index("malignant")
    return (
        roc_auc_score(y, p, multi_class="ovr", average="macro"),
        float((p.argmax(1) == y).mean()),
        roc_auc_score(y[lesion] == malignant, p[lesion, malignant]),
    )


def read_features(rows: list[dict], probe, detector, size: int) -> dict[str, Any]:
    """Per image: the probe's features of the whole image and of the mask's box (the whole
    image where there is no lesion), the detector's last feature map (cells) and hypercolumns
    (pixels) with their lesion targets (1: at least half inside a mask, 0: none, -1: left out),
    the mask's box and the image itself."""
    out: dict[str, list] = {
        k: [] for k in ("whole", "oracle", "cells", "targets", "pixels", "pixel_targets")
    }
    truth, images = [], []
    with torch.inference_mode():
        for r in tqdm(rows, desc="features", unit="img"):
            a = to_gray_float(read_image(r["path"]))
            mask = native_mask(r, "normal")
            lesion = mask.shape == a.shape and bool(mask.any())
            out["whole"].append(probe.body(as_input(a, SIZE))[0].numpy())
            box = None
            if lesion:
                ys, xs = np.nonzero(square(mask.astype(np.float32)))
                box = (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1)
                out["oracle"].append(probe.body(as_input(crop(a, box), SIZE))[0].numpy())
            else:
                out["oracle"].append(out["whole"][-1])
            columns, f = hypercolumns(detector.body.model, as_input(a, size))
            out["cells"].append(f.permute(1, 2, 0).numpy())
            out["pixels"].append(columns.permute(1, 2, 0).half().numpy())
            m = torch.from_numpy(square((mask > 0).astype(np.float32) if lesion else 0 * a))
            for grid, key in ((f.shape[-2:], "targets"), (columns.shape[-2:], "pixel_targets")):
                inside = F.adaptive_avg_pool2d(m[None, None], grid)[0, 0].numpy()
                out[key].append(np.where(inside >= 0.5, 1, np.where(inside == 0, 0, -1)))
            truth.append(box)
            images.append(a)
    return {**{k: np.stack(v) for k, v in out.items()}, "truth": truth, "images": images}


def lesion_maps(x: np.ndarray, t: np.ndarray, cuts, c: float, background: float, rng) -> np.ndarray:
    """Each image's map of lesion probabilities (x: images x h x w x D, t: targets) from a
    logistic regression fitted, for each (fit, held) cut, on the lesion cells of the fit images
    and a seeded `background` share of their lesion-free cells, and applied to the held ones."""
    maps = np.zeros(t.shape, np.float32)
    for fit, held in tqdm(cuts, desc="lesion detector", unit="fit", leave=False):
        tf = t[fit].reshape(-1)
        keep = (tf == 1) | ((tf == 0) & (rng.random(len(tf)) < background))
        model = make_pipeline(
            StandardScaler(), LogisticRegression(C=c, max_iter=3000, class_weight="balanced")
        ).fit(x[fit].reshape(-1, x.shape[-1])[keep].astype(np.float32), tf[keep])
        for i in held:
            p = model.predict_proba(x[i].reshape(-1, x.shape[-1]).astype(np.float32))
            maps[i] = p[:, 1].reshape(maps.shape[1:])
    return maps


def cropped(feats: dict[str, Any], maps: np.ndarray, box_of, targets, probe, scored) -> tuple:
    """The probe's features of the crop at `box_of(map, side)` of each `scored` image (zeros
    for the others), the share of each scored lesion's target cells inside its box, and each
    scored lesion's box IoU with the mask's box."""
    crops = np.zeros_like(feats["whole"])
    found, overlaps = [], []
    with torch.inference_mode():
        for i in scored:
            a, pmap, t, true_box = feats["images"][i], maps[i], targets[i], feats["truth"][i]
            box = box_of(pmap, max(a.shape))
            crops[i] = probe.body(as_input(crop(a, box), SIZE))[0].numpy()
            if true_box is not None:
                overlaps.append(iou(box, true_box))
            if (t == 1).any():
                g = pmap.shape[0] / max(a.shape)
                y0, y1, x0, x1 = (round(v * g) for v in box)
                found.append((t[y0:y1, x0:x1] == 1).sum() / (t == 1).sum())
    return crops, np.array(found), np.array(overlaps)


def detected_crops(feats: dict[str, Any], cuts, args, probe) -> dict[str, Any]:
    """Both detectors' maps over `cuts`, their crops and how well their boxes fit the lesions."""
    rng = np.random.default_rng(args.seed)
    cell_maps = lesion_maps(feats["cells"], feats["targets"], cuts, 0.001, 0.25, rng)
    pixel_maps = lesion_maps(
        feats["pixels"], feats["pixel_targets"], cuts, args.pixel_c, args.pixel_background, rng
    )
    scored = np.concatenate([held for _, held in cuts])
    cell = cropped(feats, cell_maps, detector_box, feats["targets"], probe, scored)
    pixel = cropped(
        feats,
        pixel_maps,
        lambda m, side: detector_box(m, side, args.level),
        feats["pixel_targets"],
        probe,
        scored,
    )

    def auc(t: np.ndarray, maps: np.ndarray) -> float:
        known = t[scored].reshape(-1) >= 0
        return roc_auc_score(t[scored].reshape(-1)[known], maps[scored].reshape(-1)[known])

    return {
        "cell": cell,
        "pixel": pixel,
        "cell_auc": auc(feats["targets"], cell_maps),
        "pixel_auc": auc(feats["pixel_targets"], pixel_maps),
    }


def table(feats: dict[str, Any], found: dict[str, Any], y, cuts, classes) -> None:
    """One row of figures per feature set."""
    whole = feats["whole"]
    print("| features | macro AUC | accuracy (argmax) | benign vs malignant AUC |")
    print("|---|---|---|---|")
    for name, x in (
        ("whole image", whole),
        ("mask crop (oracle)", feats["oracle"]),
        ("whole + mask crop (oracle)", np.hstack([whole, feats["oracle"]])),
        ("detector crop", found["cell"][0]),
        ("whole + detector crop", np.hstack([whole, found["cell"][0]])),
        ("pixel-detector crop", found["pixel"][0]),
        ("whole + pixel-detector crop", np.hstack([whole, found["pixel"][0]])),
    ):
        auc, acc, bm = scores(x, y, cuts, classes)
        print(f"| {name} | {auc:.3f} | {acc:.3f} | {bm:.3f} |")


def describe(found: dict[str, Any], args) -> str:
    """How well the detectors find the lesions."""
    (_, cell_in, cell_iou), (_, pixel_in, pixel_iou) = found["cell"], found["pixel"]
    return (
        f"cell detector ({args.detector_size} px, last feature map): cell AUC "
        f"{found['cell_auc']:.3f}, lesions with at least half their cells in the box "
        f"{int((cell_in >= 0.5).sum())} of {len(cell_in)}, box IoU with the mask's box median "
        f"{np.median(cell_iou):.2f} (>= 0.5: {np.mean(cell_iou >= 0.5):.2f}); pixel detector "
        f"(stride 8, C={args.pixel_c}, level {args.level}): pixel AUC {found['pixel_auc']:.3f}, "
        f"lesions with at least half their pixels in the box {int((pixel_in >= 0.5).sum())} "
        f"of {len(pixel_in)}, box IoU median {np.median(pixel_iou):.2f} (>= 0.5: "
        f"{np.mean(pixel_iou >= 0.5):.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--detector-size", type=int, default=320)
    parser.add_argument("--pixel-c", type=float, default=0.001)
    parser.add_argument("--pixel-background", type=float, default=0.1)
    parser.add_argument("--level", type=float, default=LEVEL)
    parser.add_argument(
        "--test",
        action="store_true",
        help="also fit everything on the development images and score the test images once",
    )
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"{DATA}: BUSI not found (see ../shared/data/README.md)")
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    manifest = scan("busi", DATA)
    split, _, _ = split_dataset(manifest, seed=args.seed, progress=False)
    parts = ["train", "val", "test"] if args.test else ["train", "val"]
    used = split[split["partition"].isin(parts)].reset_index(drop=True)
    rows = manifest.frame.set_index("path").loc[used["path"]].reset_index().to_dict("records")
    classes = sorted(manifest.classes)
    y = np.array([classes.index(r["label"]) for r in rows])
    probe = create_model("probe", num_classes=len(classes), size=SIZE).eval()
    detector = create_model("transfer", num_classes=len(classes), size=args.detector_size).eval()
    feats = read_features(rows, probe, detector, args.detector_size)

    dev = np.flatnonzero(used["partition"] != "test")
    cuts = [
        (dev[fit], dev[held])
        for fit, held in StratifiedGroupKFold(5, shuffle=True, random_state=args.seed).split(
            dev, y[dev], used["split_group"].to_numpy()[dev]
        )
    ]
    counts = used.loc[dev, "label"].value_counts().to_dict()
    found = detected_crops(feats, cuts, args, probe)
    print(
        f"\nBUSI development images of the seed-{args.seed} split: {len(dev)} ({counts}), "
        f"5 folds by near-duplicate cluster, held-out figures; {describe(found, args)}\n"
    )
    table(feats, found, y, cuts, classes)
    if args.test:
        test = np.flatnonzero(used["partition"] == "test")
        once = [(dev, test)]
        held_out = found  # the development images' crops, each from a detector not fitted on it
        found = detected_crops(feats, once, args, probe)
        for key in ("cell", "pixel"):  # test crops from the detector fitted on all of them
            found[key] = (held_out[key][0] + found[key][0], *found[key][1:])
        counts = used.loc[test, "label"].value_counts().to_dict()
        print(
            f"\nTest images, scored once: {len(test)} ({counts}); detectors and regressions "
            f"fitted on all development images; {describe(found, args)}\n"
        )
        table(feats, found, y, once, classes)
    print(f"\n{(time.perf_counter() - start) / 60:.1f} minutes")


if __name__ == "__main__":
    main()
