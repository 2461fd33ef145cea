"""mini-MIAS lesion-cell detector (`bench_mias_bilateral.py`): what else was tried, on the
development women only. Prints one table of grouped 5-fold cross-validated AUCs.

    .venv/bin/python benchmarks/bench_mias_detector_variants.py [--seed 0] [--cv-repeats 2]

The same seed-0 split by woman as `bench_mias_bilateral.py`; only the training and validation
images (192 images, 96 women) are read: the test women are not touched, so nothing here can
have been tuned on them. Each variant changes one thing against the chosen detector (1024 px,
frozen EfficientNet-Lite0, 32 x 32 px cells of its last feature map, logistic regression with
C=0.001 on lesion cells against a quarter of the normal images' cells, image score its most
lesion-like cell):
- the image score: mean of the 3 or 10 most lesion-like cells, or their log-sum-exp, or the
  most lesion-like cell inside the breast (background, film labels and edges left out);
- the comparison with the other breast cell by cell: each cell minus the most lesion-like cell
  in the same k x k neighbourhood of the other (mirrored) breast, instead of image minus image;
- the regularisation C;
- finer features: the last stride-16 stage (16 px cells) alone, or average- and max-pooled to
  the 32 px cells and appended;
- other negatives: cells of abnormal mammograms more than 4 cells from any lesion, every
  normal cell instead of a quarter, or a refit with the 2% or 0.5% most lesion-like normal
  cells added (hard-negative mining);
- a small neural network head instead of the linear one;
- more lesion cells: those of moved views of each lesion image (`breastcad.models.tta`'s ten
  affine views: mirrored, rotated +-10 degrees, shifted +-5%; the annotation moved with each),
  all nine moved views, the mirror image only, rotations only or shifts only; the background
  cells and the scored image stay as given (`cell_probe`'s `lesion_views`);
- with `--lite2`, more features: EfficientNet-Lite2's last feature map at 1024 px (the same
  32 x 32 grid) stacked on Lite0's in each cell (`cell_probe`'s `branches`), as given and with
  the moved views' lesion cells, at C=0.001 and 0.0003.
About 25 minutes on 2 CPU cores (4 of them in the backbone), 9 of them for the moved views,
on the slower CPU of earlier sessions; `--lite2` adds about 15 minutes on the faster one.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

from bench_mias_bilateral import cell_features, cell_targets, fit_detector, mias_split
from breastcad.data.imaging import read_image, resize, to_gray_float
from breastcad.data.pairs import contralateral
from breastcad.evaluation.metrics import roc_auc

Fit = Callable[[np.ndarray, np.ndarray, int, np.ndarray], object]
"""(features, cell targets, seed, the images' positions in the development frame) -> model"""


def regression(c: float):
    """The chosen detector's cell regression, unfitted: standardised features, L2 with
    inverse strength `c`, balanced class weights (as `bench_mias_bilateral.fit_detector`)."""
    return make_pipeline(
        StandardScaler(), LogisticRegression(C=c, max_iter=3000, class_weight="balanced")
    )


def kept_cells(targets: np.ndarray, seed: int, neg_frac: float) -> np.ndarray:
    t = targets.reshape(-1)
    rng = np.random.default_rng(seed)
    return (t == 1) | ((t == 0) & (rng.random(len(t)) < neg_frac))


def logistic(c: float, neg_frac: float = 0.25) -> Fit:
    def fit(feats: np.ndarray, targets: np.ndarray, seed: int, idx: np.ndarray):
        if neg_frac == 0.25:
            return fit_detector(feats, targets, c, seed)  # the chosen detector, as benchmarked
        x = feats.reshape(-1, feats.shape[-1])
        keep = kept_cells(targets, seed, neg_frac)
        return regression(c).fit(x[keep].astype(np.float32), targets.reshape(-1)[keep])

    return fit


def hard_negatives(c: float, share: float) -> Fit:
    """Fit, then refit with the `share` most lesion-like normal cells added."""

    def fit(feats: np.ndarray, targets: np.ndarray, seed: int, idx: np.ndarray):
        model = fit_detector(feats, targets, c, seed)
        x, t = feats.reshape(-1, feats.shape[-1]), targets.reshape(-1)
        negatives = np.flatnonzero(t == 0)
        score = model.decision_function(x[negatives].astype(np.float32))
        keep = kept_cells(targets, seed, 0.25)
        keep[negatives[score >= np.quantile(score, 1 - share)]] = True
        return regression(c).fit(x[keep].astype(np.float32), t[keep])

    return fit


class MLPHead:
    """Standardised features -> dropout -> hidden ReLU layer -> dropout -> logit."""

    def __init__(self, hidden: int, epochs: int, seed: int) -> None:
        self.hidden, self.epochs, self.seed = hidden, epochs, seed

    def fit(self, x: np.ndarray, t: np.ndarray) -> MLPHead:
        torch.manual_seed(self.seed)
        self.mean, self.scale = x.mean(0), x.std(0) + 1e-3
        xt, tt = torch.from_numpy((x - self.mean) / self.scale), torch.from_numpy(t).float()
        self.net = torch.nn.Sequential(
            torch.nn.Dropout(0.5),
            torch.nn.Linear(x.shape[1], self.hidden),
            torch.nn.ReLU(),
            torch.nn.Dropout(0.5),
            torch.nn.Linear(self.hidden, 1),
        )
        opt = torch.optim.AdamW(self.net.parameters(), 1e-3, weight_decay=0.05)
        loss = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor((t == 0).sum() / (t == 1).sum()))
        order = torch.Generator().manual_seed(self.seed)
        self.net.train()
        for _ in range(self.epochs):
            for batch in torch.randperm(len(xt), generator=order).split(256):
                opt.zero_grad()
                loss(self.net(xt[batch])[:, 0], tt[batch]).backward()
                opt.step()
        self.net.eval()
        return self

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.net(torch.from_numpy((x - self.mean) / self.scale))[:, 0].numpy()


def mlp(hidden: int, epochs: int) -> Fit:
    def fit(feats: np.ndarray, targets: np.ndarray, seed: int, idx: np.ndarray):
        x = feats.reshape(-1, feats.shape[-1])
        keep = kept_cells(targets, seed, 0.25)
        head = MLPHead(hidden, epochs, seed)
        return head.fit(x[keep].astype(np.float32), targets.reshape(-1)[keep])

    return fit


def moved_lesion_cells(manifest, sides, size: int, backbone: str) -> list[list[np.ndarray]]:
    """Per image, per moved view of `views(image, "affine")` (the nine after the image as
    given): the frozen backbone's cells (float16, cells x C) that hold a pixel of the moved
    lesion, as `cell_probe`'s `lesion_views` takes them; empty for images without an
    annotated lesion. Same preprocessing as `cell_features` (right breasts mirrored first)."""
    from breastcad.config import PreprocessConfig
    from breastcad.data.lesions import LESION, annotated, lesion_cells, lesion_masks
    from breastcad.models.pretrained import create_backbone
    from breastcad.models.tta import views

    frame = manifest.frame
    masks, _ = lesion_masks(manifest, PreprocessConfig(size=size), "normal", False)
    flip = sides == "right"
    masks[flip] = masks[flip][:, :, ::-1]
    with_lesion = annotated(masks) & (frame["label"] != "normal").to_numpy()
    net, _ = create_backbone(backbone)
    net.eval()
    out: list[list[np.ndarray]] = []
    with torch.inference_mode():
        for i, path in enumerate(tqdm(frame["path"], desc="moved lesion views", unit="img")):
            if not with_lesion[i]:
                out.append([])
                continue
            gray = resize(to_gray_float(read_image(path)), size, "pad")
            gray = gray[:, ::-1] if flip[i] else gray
            image = torch.from_numpy(np.ascontiguousarray(gray, dtype=np.float32))[None, None]
            shown = torch.from_numpy((masks[i] == LESION).astype(np.float32))[None, None]
            moved = torch.cat(views(image, "affine")[1:])  # 9 x 1 x H x W, black corners
            drawn = torch.cat(views(shown, "affine")[1:])[:, 0]
            maps = net.forward_features((moved * 2.0 - 1.0).expand(-1, 3, -1, -1))
            lesion = lesion_cells(
                torch.where(drawn >= 0.5, LESION, 0).to(torch.uint8), maps.shape[-2:]
            )
            cells = maps.permute(0, 2, 3, 1).flatten(1, 2).numpy().astype(np.float16)
            out.append([cells[v][lesion[v].flatten().numpy()] for v in range(len(cells))])
    return out


def with_moved_lesions(c: float, moved: list[list[np.ndarray]], which: list[int]) -> Fit:
    """The chosen detector with the lesion cells of moved views `which` (1-9, the positions in
    `views(image, "affine")`) of each training image added as lesion cells."""

    def fit(feats: np.ndarray, targets: np.ndarray, seed: int, idx: np.ndarray):
        x = feats.reshape(-1, feats.shape[-1])
        t = targets.reshape(-1)
        keep = kept_cells(targets, seed, 0.25)  # the chosen detector's cells, same draws
        extra = [moved[i][v - 1] for i in idx if moved[i] for v in which]
        cells = np.concatenate([x[keep], *extra]).astype(np.float32)
        labels = np.concatenate([t[keep], np.ones(sum(len(e) for e in extra), dtype=t.dtype)])
        return regression(c).fit(cells, labels)

    return fit


def image_scores(maps: np.ndarray, breast: np.ndarray | None) -> dict[str, np.ndarray]:
    """Image scores from cell maps; `breast`: each cell's share inside the breast (same grid)."""
    flat = maps.reshape(len(maps), -1)
    top = np.sort(flat, axis=1)[:, ::-1]
    peak = top[:, 0]
    scores = {
        "max cell": peak,
        "mean of top 3": top[:, :3].mean(1),
        "mean of top 10": top[:, :10].mean(1),
        "log-sum-exp": peak + np.log(np.exp(flat - peak[:, None]).sum(1)),
    }
    if breast is not None:
        inside = np.where(breast.reshape(len(maps), -1) >= 0.5, flat, -np.inf).max(1)
        scores["max cell inside the breast"] = np.where(np.isfinite(inside), inside, peak)
    return scores


def breast_fraction(paths, sides, size: int, grid: tuple[int, int]) -> np.ndarray:
    """N x grid: the share of each cell inside the breast (pixels above Otsu's threshold, the
    largest connected region, holes filled), so that background, film labels and the film's
    edge can be left out of the image score."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    out = []
    for path, side in zip(paths, sides, strict=True):
        gray = resize(to_gray_float(read_image(path)), size, "pad")
        gray = gray[:, ::-1] if side == "right" else gray
        mask = gray > threshold_otsu(gray)
        labels, n = ndimage.label(mask)
        if n:
            mask = labels == 1 + int(np.argmax(ndimage.sum(mask, labels, range(1, n + 1))))
        mask = ndimage.binary_fill_holes(mask)
        h, w = grid
        out.append(mask.reshape(h, size // h, w, size // w).mean(axis=(1, 3)))
    return np.stack(out)


def cell_by_cell(maps: np.ndarray, other: np.ndarray, k: int) -> np.ndarray:
    """Each cell minus the most lesion-like cell of the other breast's k x k neighbourhood;
    the image's score is the largest difference (NaN without a partner)."""
    near = F.max_pool2d(torch.from_numpy(maps)[:, None], k, 1, k // 2)[:, 0].numpy()
    out = np.full(len(maps), np.nan)
    for i in np.flatnonzero(other >= 0):
        out[i] = (maps[i] - near[other[i]]).max()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="the split's seed")
    parser.add_argument("--cv-repeats", type=int, default=2)
    parser.add_argument(
        "--lite2",
        action="store_true",
        help="also EfficientNet-Lite2's cells stacked on Lite0's (cell_probe's branches; "
        "its features of every image and moved view, about 15 more minutes here)",
    )
    args = parser.parse_args()
    start = time.perf_counter()
    manifest, split = mias_split(args.seed)
    dev_paths = split.loc[split["partition"] != "test", "path"]
    manifest = manifest.subset(manifest.frame["path"].isin(dev_paths))
    frame = manifest.frame
    women = frame["group_id"].astype(str).to_numpy()
    sides = frame["side"].to_numpy()
    y = (frame["label"] == "abnormal").to_numpy().astype(int)
    other = contralateral(frame)
    paired = other >= 0
    coarse, fine, _ = cell_features(frame["path"], sides, 1024, "tf_efficientnet_lite0", True)
    targets = cell_targets(manifest, 1024, sides, coarse.shape[1:3])
    breast = breast_fraction(frame["path"], sides, 1024, coarse.shape[1:3])
    fine_targets = cell_targets(manifest, 1024, sides, fine.shape[1:3])
    fine_t = torch.from_numpy(fine.astype(np.float32)).permute(0, 3, 1, 2)
    pooled = torch.cat([F.avg_pool2d(fine_t, 2), F.max_pool2d(fine_t, 2)], 1)
    appended = np.concatenate([coarse, pooled.permute(0, 2, 3, 1).numpy().astype(np.float16)], -1)
    del fine_t, pooled
    # cells of abnormal images more than 4 cells from any lesion cell become negatives too
    lesion = torch.from_numpy((targets == 1).astype(np.float32))[:, None]
    near_lesion = F.max_pool2d(lesion, 9, 1, 4)[:, 0].numpy() > 0
    far_targets = targets.copy()
    far_targets[(targets == 1).any(axis=(1, 2))[:, None, None] & ~near_lesion] = 0
    moved = moved_lesion_cells(manifest, sides, 1024, "tf_efficientnet_lite0")

    variants: list[tuple[str, np.ndarray, np.ndarray, Fit, bool]] = [
        ("chosen (C=0.001)", coarse, targets, logistic(0.001), True),
        ("C=0.0003", coarse, targets, logistic(0.0003), False),
        ("C=0.003", coarse, targets, logistic(0.003), False),
        ("stride-16 cells (16 px) alone", fine, fine_targets, logistic(0.001, 0.0625), False),
        ("stride-16 features pooled and appended", appended, targets, logistic(0.001), False),
        ("far cells of abnormal images as negatives", coarse, far_targets, logistic(0.001), False),
        ("every normal cell", coarse, targets, logistic(0.001, 1.0), False),
        ("hard negatives, 2%", coarse, targets, hard_negatives(0.001, 0.02), False),
        ("hard negatives, 0.5%", coarse, targets, hard_negatives(0.001, 0.005), False),
        ("MLP head, 256 hidden, 5 epochs", coarse, targets, mlp(256, 5), False),
        ("MLP head, 64 hidden, 10 epochs", coarse, targets, mlp(64, 10), False),
        (
            "lesion cells of the nine moved affine views added (cell_probe's default)",
            coarse,
            targets,
            with_moved_lesions(0.001, moved, list(range(1, 10))),
            False,
        ),
        (
            "lesion cells of the mirror image added",
            coarse,
            targets,
            with_moved_lesions(0.001, moved, [5]),
            False,
        ),
        (
            "lesion cells of the rotated views added (mirror image too)",
            coarse,
            targets,
            with_moved_lesions(0.001, moved, [1, 2, 5, 6, 7]),
            False,
        ),
        (
            "lesion cells of the shifted views added (mirror image too)",
            coarse,
            targets,
            with_moved_lesions(0.001, moved, [3, 4, 5, 8, 9]),
            False,
        ),
    ]
    if args.lite2:
        lite2, _ = cell_features(frame["path"], sides, 1024, "tf_efficientnet_lite2")
        stacked = np.concatenate([coarse, lite2], -1)
        del lite2
        moved2 = moved_lesion_cells(manifest, sides, 1024, "tf_efficientnet_lite2")
        moved_stacked = [
            [np.concatenate([a, b], -1) for a, b in zip(m0, m2, strict=True)]
            for m0, m2 in zip(moved, moved2, strict=True)
        ]
        del moved2
        for c in (0.001, 0.0003):
            variants += [
                (f"Lite2's cells stacked on Lite0's, C={c}", stacked, targets, logistic(c), False),
                (
                    f"Lite2's cells stacked on Lite0's, nine moved views' lesion cells, C={c}",
                    stacked,
                    targets,
                    with_moved_lesions(c, moved_stacked, list(range(1, 10))),
                    False,
                ),
            ]
    rows, cell_aucs = [], []
    for name, feats, cell_y, fit, detail in variants:
        alone: dict[str, list[float]] = {}
        both: dict[str, list[float]] = {}
        for repeat in range(args.cv_repeats):
            maps = np.zeros(feats.shape[:3], dtype=np.float32)
            folds = StratifiedGroupKFold(5, shuffle=True, random_state=repeat)
            for fit_idx, held in folds.split(frame, y, women):
                model = fit(feats[fit_idx], cell_y[fit_idx], repeat, fit_idx)
                cells = model.decision_function(
                    feats[held].reshape(-1, feats.shape[-1]).astype(np.float32)
                )
                maps[held] = cells.reshape(len(held), *feats.shape[1:3])
            scores = image_scores(maps, breast if maps.shape == breast.shape else None)
            if not detail:
                scores = {k: v for k, v in scores.items() if k in ("max cell", "log-sum-exp")}
            for key, s in scores.items():
                alone.setdefault(key, []).append(roc_auc(y[paired], s[paired]))
                both.setdefault(key, []).append(roc_auc(y[paired], (s - s[other])[paired]))
            if detail:
                known = cell_y.reshape(-1) >= 0
                cell_aucs.append(roc_auc(cell_y.reshape(-1)[known], maps.reshape(-1)[known]))
                for k in (1, 3, 5):
                    key = f"max cell, other breast's {k} x {k} cells"
                    s = cell_by_cell(maps, other, k)
                    alone.setdefault(key, []).append(np.nan)
                    both.setdefault(key, []).append(roc_auc(y[paired], s[paired]))
        rows += [(name, key, alone[key], both[key]) for key in alone]
        print(f"{name}: done ({time.perf_counter() - start:.0f} s)", flush=True)

    def cell(values: list[float]) -> str:
        if np.isnan(values).all():
            return "-"
        return " / ".join(f"{v:.3f}" for v in values) + f" (mean {np.mean(values):.3f})"

    print(
        f"\nmini-MIAS development women only (split seed {args.seed}: {len(frame)} images, "
        f"{y.sum()} abnormal, {len(set(women))} women), grouped 5-fold CV, repeats "
        f"0-{args.cv_repeats - 1}; {time.perf_counter() - start:.0f} s\n"
    )
    print("| detector | image score | AUC alone, per repeat | AUC against the other breast |")
    print("|---|---|---|---|")
    for name, key, a, b in rows:
        print(f"| {name} | {key} | {cell(a)} | {cell(b)} |")
    print(
        "\nthe chosen detector's held-out cells, lesion against normal mammograms' cells: "
        "ROC AUC " + " / ".join(f"{v:.3f}" for v in cell_aucs) + " (repeats)"
    )


if __name__ == "__main__":
    main()
