"""mini-MIAS normal vs abnormal: a lesion-cell detector on frozen ImageNet features, each breast
alone and against the same woman's other breast. Prints one table.

    .venv/bin/python benchmarks/bench_mias_bilateral.py [--seed 0] [--size 1024] [--C 0.001]

The recipe, fixed before the test part was scored (its settings chosen by grouped 5-fold
cross-validation within the training and validation women; figures in the README):
- every mammogram at full resolution (1024 px) through the frozen EfficientNet-Lite0 with its
  offline ImageNet weights, right breasts mirrored so that every chest wall is on the left;
  each cell of the last feature map (32 x 32 px of input) is a 1280-value feature vector;
- a logistic regression (standardised features, C=0.001, balanced class weights) tells lesion
  cells (any pixel inside an `Info.txt` circle) from cells of normal mammograms (a seeded
  quarter of them, for memory); cells of abnormal mammograms off the lesion, and images whose
  lesion has no coordinates, are left out;
- an image's score is its most lesion-like cell; its bilateral score that minus the same score
  of the woman's other breast (`breastcad.data.pairs`, `breastcad.evaluation.bilateral`).

The split is the one `bench_image_models.py` gives its mini-MIAS runs (by woman; test 0.25,
validation 0.15 of the women, `--seed`), so the figures sit beside theirs. The detector learns
from training and validation women together (nothing here is early-stopped or thresholded);
the test women are scored once. About 6 minutes on 2 CPU cores, most of it in the backbone.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

from breastcad.config import PreprocessConfig
from breastcad.data.imaging import read_image, resize, to_gray_float
from breastcad.data.lesions import annotated, lesion_cells, lesion_masks
from breastcad.data.pairs import contralateral
from breastcad.data.sources import scan
from breastcad.data.splits import split_dataset
from breastcad.evaluation.bilateral import bilateral_comparison
from breastcad.models.pretrained import create_backbone

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mini-mias"
IGNORE = -1


def mias_split(seed: int):
    """mini-MIAS and the split `bench_image_models.py` gives its runs (by woman; test 0.25,
    validation 0.15 of the women); the script stops, saying why, without the data."""
    if not DATA.is_dir():
        raise SystemExit(f"{DATA}: mini-MIAS not found (see ../shared/data/README.md)")
    manifest = scan("mini-mias", DATA)
    split, skipped, _ = split_dataset(
        manifest, test_size=0.25, val_size=0.15, seed=seed, progress=False
    )
    if skipped:
        raise SystemExit(f"unreadable images: {skipped}")
    return manifest, split


def cell_features(
    paths, sides, size: int, backbone: str, stride16: bool = False
) -> tuple[np.ndarray, str] | tuple[np.ndarray, np.ndarray, str]:
    """N x cells_h x cells_w x C float16: the frozen backbone's last feature map per image,
    input scaled to [-1, 1] (the offline EfficientNet-Lite weights' convention). With
    `stride16`, also the output of the last stride-16 stage (N x 2 cells_h x 2 cells_w x C')."""
    net, init = create_backbone(backbone)
    net.eval()
    captured: dict[str, torch.Tensor] = {}
    hook = None
    if stride16:
        hook = _last_stride16_stage(net).register_forward_hook(
            lambda m, i, o: captured.__setitem__("x", o)
        )
    maps, fine = [], []
    with torch.inference_mode():
        for path, side in tqdm(list(zip(paths, sides, strict=True)), desc="features", unit="img"):
            gray = resize(to_gray_float(read_image(path)), size, "pad")
            if side == "right":
                gray = gray[:, ::-1]
            x = torch.from_numpy(np.ascontiguousarray(gray) * 2.0 - 1.0)[None, None]
            fm = net.forward_features(x.expand(1, 3, -1, -1))[0]
            maps.append(fm.permute(1, 2, 0).numpy().astype(np.float16))
            if stride16:
                fine.append(captured["x"][0].permute(1, 2, 0).numpy().astype(np.float16))
    if hook is not None:
        hook.remove()
        return np.stack(maps), np.stack(fine), init
    return np.stack(maps), init


def _last_stride16_stage(net: torch.nn.Module) -> torch.nn.Module:
    """The stage just before the network's last downsampling stage (EfficientNet's blocks)."""
    strides = [getattr(stage[0], "conv_dw", stage[0]).stride[0] for stage in net.blocks]
    last_down = max(i for i, s in enumerate(strides) if s == 2)
    return net.blocks[last_down - 1]


def cell_targets(manifest, size: int, sides, grid: tuple[int, int]) -> np.ndarray:
    """N x grid: 1 lesion cell, 0 cell of a normal image, IGNORE otherwise."""
    masks, problems = lesion_masks(manifest, PreprocessConfig(size=size), "normal", False)
    for problem in problems:
        print("skipped annotation:", problem)
    flip = np.array([s == "right" for s in sides])
    masks[flip] = masks[flip][:, :, ::-1]
    lesion = lesion_cells(torch.from_numpy(np.ascontiguousarray(masks)), grid).numpy()
    normal = (manifest.frame["label"] == "normal").to_numpy()
    targets = np.full(lesion.shape, IGNORE, dtype=np.int8)
    targets[normal] = 0
    known = annotated(masks) & ~normal
    targets[known] = np.where(lesion[known], 1, IGNORE)
    return targets


def fit_detector(feats: np.ndarray, targets: np.ndarray, c: float, seed: int):
    x = feats.reshape(-1, feats.shape[-1])
    t = targets.reshape(-1)
    rng = np.random.default_rng(seed)
    keep = (t == 1) | ((t == 0) & (rng.random(len(t)) < 0.25))
    model = make_pipeline(
        StandardScaler(), LogisticRegression(C=c, max_iter=3000, class_weight="balanced")
    )
    return model.fit(x[keep].astype(np.float32), t[keep])


def image_scores(model, feats: np.ndarray) -> np.ndarray:
    """The most lesion-like cell of each image (log-odds)."""
    cells = model.decision_function(feats.reshape(-1, feats.shape[-1]).astype(np.float32))
    return cells.reshape(len(feats), -1).max(axis=1)


def as_probs(score: np.ndarray) -> np.ndarray:
    p = 1.0 / (1.0 + np.exp(-score))
    return np.stack([1.0 - p, p], axis=1)


def _range(ci: list[float] | None) -> str:
    return f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--C", type=float, default=0.001)
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--cv-repeats", type=int, default=2)
    args = parser.parse_args()
    start = time.perf_counter()
    manifest, split = mias_split(args.seed)
    manifest = manifest.subset(manifest.frame["path"].isin(split["path"]))
    part = split.set_index("path").loc[manifest.frame["path"], "partition"].to_numpy()
    women = manifest.frame["group_id"].astype(str).to_numpy()
    sides = manifest.frame["side"].to_numpy()
    y = (manifest.frame["label"] == "abnormal").to_numpy().astype(int)
    feats, init = cell_features(manifest.frame["path"], sides, args.size, args.backbone)
    targets = cell_targets(manifest, args.size, sides, feats.shape[1:3])

    dev, test = np.flatnonzero(part != "test"), np.flatnonzero(part == "test")
    rows = []
    # grouped cross-validation within the development women: what the settings were chosen on
    dev_other = contralateral(manifest.frame.iloc[dev])
    for repeat in range(args.cv_repeats):
        score = np.zeros(len(dev))
        folds = StratifiedGroupKFold(5, shuffle=True, random_state=repeat)
        for fit_idx, held in folds.split(dev, y[dev], women[dev]):
            model = fit_detector(feats[dev[fit_idx]], targets[dev[fit_idx]], args.C, repeat)
            score[held] = image_scores(model, feats[dev[held]])
        figures = bilateral_comparison(y[dev], as_probs(score), dev_other, women[dev], 1, 200)
        rows.append((f"dev 5-fold CV, repeat {repeat}", len(dev), figures))
    model = fit_detector(feats[dev], targets[dev], args.C, args.seed)
    test_score = image_scores(model, feats[test])
    test_other = contralateral(manifest.frame.iloc[test])
    figures = bilateral_comparison(y[test], as_probs(test_score), test_other, women[test], 1)
    rows.append(("test (scored once)", len(test), figures))
    print(
        f"\nmini-MIAS normal vs abnormal, seed {args.seed}; {args.backbone} frozen ({init}); "
        f"{args.size} px, {feats.shape[1]} x {feats.shape[2]} cells; C={args.C}; "
        f"{time.perf_counter() - start:.0f} s\n"
    )
    print("| part | images (abnormal) | AUC, breast alone | AUC, against the other breast |")
    print("|---|---|---|---|")
    for name, n, f in rows:
        if f is None:
            print(f"| {name} | {n} | n/a | n/a |")
            continue
        print(
            f"| {name} | {f['images']} ({f['positives']}) | {f['auc_single']:.3f}"
            f"{_range(f['auc_single_ci'])} | {f['auc_bilateral']:.3f}"
            f"{_range(f['auc_bilateral_ci'])} |"
        )
    test_fig = rows[-1][2]
    if test_fig:
        diff = test_fig["auc_difference_ci"]
        print(f"\ntest difference (bilateral - alone), 95% CI over women: {diff}")
        print(f"test images without a partner: {test_fig['without_partner']}")


if __name__ == "__main__":
    main()
