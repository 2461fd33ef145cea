"""What test-time views (`--tta flip`, or `--mode affine`: ten views) do to trained models,
measured paired: each bundle of `bench_image_models.py` runs once on its validation and test
images as they are and once averaged over the views (flip: with their mirror images), same
weights. Prints one table and a summary.

    .venv/bin/python benchmarks/bench_tta.py [--runs runs/bench] [--only busi-transfer ...]
        [--mode affine]

Each run's split is made again from its config (seed, sizes, duplicate audit) and compared,
image by image, with the split the run saved; a run whose split does not come out the same is
skipped and said so, as is a cross-fitted run (its members learnt from the validation part).
Figures are macro AUC and argmax accuracy (temperature and operating point
do not change either); a run trained with `--tta flip` would also fit its temperature and
operating point on the averaged answers (and a linear probe run with `--tta affine` would
learn from the ten views, which this re-scoring cannot show). Decide on validation; the test
columns are what that decision did, not a reason for it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from breastcad.allocator import keep_freed_memory
from breastcad.config import ImageRunConfig, PreprocessConfig
from breastcad.data.cache import ImageCache
from breastcad.data.sources import scan
from breastcad.evaluation.classification import classification_metrics, softmax
from breastcad.evaluation.image_evaluation import predict_logits
from breastcad.image_experiment import make_partition
from breastcad.predict import Predictor
from breastcad.training.image_fit import positive_index


def same_split(split, out: Path, root: Path) -> bool:
    """Whether the split made again assigns every image to the partition the run saved."""
    saved = json.loads((out / "splits" / "split.json").read_text())["rows"]

    def parts(paths, partitions) -> dict[Path, str]:
        return {Path(p).relative_to(root): s for p, s in zip(paths, partitions, strict=True)}

    return parts(saved["path"], saved["partition"]) == parts(split["path"], split["partition"])


def rescorable(out: Path, cfg: ImageRunConfig, splits: dict[str, tuple]) -> tuple | str:
    """A bench run's manifest, its split made again, its bundle's predictor and preprocessing,
    or why it cannot be re-scored: its data is not here, it is cross-fitted (no validation
    image is unseen by the whole ensemble), or its split does not come out the same again.
    `splits` keeps the splits of runs that share data, seed and sizes."""
    if not Path(cfg.data.root).exists():
        return f"skipped: {cfg.data.root} not here"
    if cfg.train.cross_fit:
        return "skipped: cross-fitted, its members learnt from validation"
    key = json.dumps([cfg.data.model_dump(mode="json"), cfg.seed])
    if key not in splits:
        manifest = scan(cfg.data.dataset, cfg.data.root, **cfg.data.options)
        splits[key] = (manifest, make_partition(manifest, cfg, False)[0])
    manifest, split = splits[key]
    if not same_split(split, out, cfg.data.root):
        return "skipped: its split does not come out the same again"
    predictor = Predictor.from_bundle(out / "bundle")
    pre = predictor.bundle.manifest["preprocessing"]
    config = PreprocessConfig(size=pre["size"], resize=pre["resize"], channels=pre["channels"])
    return manifest, split, predictor, config


def figures(net, pixels: np.ndarray, y: np.ndarray, classes: list[str], mode: str):
    """Macro AUC and argmax accuracy of `net` on `pixels` with the test-time views `mode`."""
    batches = [
        (
            torch.from_numpy(np.ascontiguousarray(pixels[i : i + 32])),
            torch.tensor(y[i : i + 32]),
        )
        for i in range(0, len(pixels), 32)
    ]
    probs = softmax(predict_logits(net, batches, mode)[0])
    scalars = classification_metrics(y, probs, classes, positive_index(classes))["scalars"]
    return scalars["macro_auc"], float((probs.argmax(1) == y).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, default=Path("runs/bench"))
    ap.add_argument("--only", nargs="*", help="run folder names (default: every run with a bundle)")
    ap.add_argument("--mode", choices=("flip", "affine"), default="flip", help="test-time views")
    args = ap.parse_args()
    keep_freed_memory()
    folders = sorted(p.parent.parent for p in args.runs.glob("*/bundle/bundle.json"))
    if args.only:
        folders = [f for f in folders if f.name in args.only]
    if not folders:
        raise SystemExit(
            f"no run bundles under {args.runs} (*/bundle/bundle.json): make them first with "
            "benchmarks/bench_image_models.py"
        )
    splits: dict[str, tuple] = {}  # runs sharing data, seed and sizes share their split
    rows = []
    mode = args.mode
    print(
        f"| run | val AUC | val AUC, {mode} | val acc | val acc, {mode} "
        f"| test AUC | test AUC, {mode} | test acc | test acc, {mode} |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for out in folders:
        cfg = ImageRunConfig.from_yaml(out / "config.yaml")
        found = rescorable(out, cfg, splits)
        if isinstance(found, str):
            print(f"| {out.name} | {found} |")
            continue
        manifest, split, predictor, config = found
        lookup = {c: i for i, c in enumerate(manifest.classes)}
        row = []
        for part in ("val", "test"):
            keep = set(split.loc[split["partition"] == part, "path"])
            subset = manifest.subset(manifest.frame["path"].isin(keep))
            cache = ImageCache.build(subset, config, None, 2, False)
            readable = np.flatnonzero(cache.readable)
            y = subset.frame["label"].iloc[readable].map(lookup).to_numpy()
            plain = figures(predictor.network, cache.pixels[readable], y, manifest.classes, "none")
            seen = figures(predictor.network, cache.pixels[readable], y, manifest.classes, mode)
            row += [plain[0], seen[0], plain[1], seen[1]]
        rows.append(row)
        print(f"| {out.name} | " + " | ".join(f"{v:.3f}" for v in row) + " |", flush=True)
    if not rows:
        return
    table = np.array(rows)
    print(f"\n| figure | {mode} better | same | worse | mean change | median change |")
    print("|---|---|---|---|---|---|")
    for name, col in (("val AUC", 0), ("val acc", 2), ("test AUC", 4), ("test acc", 6)):
        d = table[:, col + 1] - table[:, col]
        print(
            f"| {name} | {(d > 1e-9).sum()} | {(np.abs(d) <= 1e-9).sum()} | {(d < -1e-9).sum()} "
            f"| {d.mean():+.4f} | {np.median(d):+.4f} |"
        )
    print(f"\n{len(rows)} runs; same weights with and without the views ({mode}).")


if __name__ == "__main__":
    main()
