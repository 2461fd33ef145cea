"""How the operating point's policy carries from validation to test: every bundle of the bench
runs, re-scored on its validation and test images as deployed (its test-time views,
temperature and prior shift), the threshold for sensitivity >= 0.95 chosen on validation two
ways, and each threshold's test sensitivity and specificity. Prints one row per run and a
summary.

- `lowest`: the highest threshold that flags 95% of the validation positives, what
  `train-image` does; with fewer than 20 positives that is the lowest-scoring one.
- `logit-normal`: the 5% quantile of a normal distribution fitted to the validation
  positives' log-odds (mean - 1.645 sd), which rests on all of them instead of the one
  extreme.

    .venv/bin/python benchmarks/bench_operating_point.py [--runs runs/bench ...] [--only NAME ...]

Each run's split is made again from its config and compared image by image with the saved
one (as `bench_tta.py` does); a run whose split does not come out the same, or a
cross-fitted one (its members learnt from the validation part), is skipped and said so. The
`lowest` threshold recomputed here is checked against the one the bundle stores. The test
columns judge the policies on data that chose neither; they are not a reason to tune one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import stats

from bench_tta import rescorable
from breastcad.allocator import keep_freed_memory
from breastcad.config import ImageRunConfig
from breastcad.data.cache import ImageCache
from breastcad.evaluation.classification import softmax
from breastcad.evaluation.metrics import choose_threshold
from breastcad.predict import Predictor

TARGET = 0.95


def logit_normal_threshold(scores: np.ndarray, target: float = TARGET) -> float:
    """P(positive) at the (1 - target) quantile of a normal fitted to the positives' log-odds."""
    p = np.clip(scores, 1e-6, 1 - 1e-6)
    z = np.log(p / (1 - p))
    q = z.mean() + stats.norm.ppf(1 - target) * z.std(ddof=1)
    return float(1 / (1 + np.exp(-q)))


def rates(scores: np.ndarray, positive: np.ndarray, threshold: float) -> tuple[float, float]:
    flagged = scores >= threshold
    return float(flagged[positive].mean()), float((~flagged[~positive]).mean())


def scored(predictor: Predictor, manifest, split, part: str, config) -> tuple:
    """P(positive) of one partition's images as the bundle answers, and which are positive."""
    keep = set(split.loc[split["partition"] == part, "path"])
    subset = manifest.subset(manifest.frame["path"].isin(keep))
    cache = ImageCache.build(subset, config, None, 2, False)
    rows = np.flatnonzero(cache.readable)
    logits = np.concatenate(
        [predictor.predict_logits(cache.pixels[rows[i : i + 32]]) for i in range(0, len(rows), 32)]
    )
    probs = softmax(logits, predictor.temperature, predictor.prior_shift)
    labels = subset.frame["label"].iloc[rows].to_numpy()
    return probs[:, predictor.positive], labels == predictor.classes[predictor.positive]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, nargs="+", default=[Path("runs/bench")])
    ap.add_argument("--only", nargs="*", help="run folder names (default: every run with a bundle)")
    ap.add_argument(
        "--exclude", nargs="*", default=[], help="leave out runs whose RUNS/NAME contains one"
    )
    args = ap.parse_args()
    keep_freed_memory()
    folders = sorted(p.parent.parent for r in args.runs for p in r.glob("*/bundle/bundle.json"))
    if args.only:
        folders = [f for f in folders if f.name in args.only]
    folders = [
        f for f in folders if not any(x in f"{f.parent.name}/{f.name}" for x in args.exclude)
    ]
    if not folders:
        where = " ".join(str(r) for r in args.runs)
        raise SystemExit(
            f"no run bundles under {where} (*/bundle/bundle.json): make them first with "
            "benchmarks/bench_image_models.py"
        )
    splits: dict[str, tuple] = {}
    rows = []
    print(
        "| run | val positives | threshold lowest / logit-normal | test sensitivity lowest / "
        "logit-normal | test specificity lowest / logit-normal |"
    )
    print("|---|---|---|---|---|")
    for out in folders:
        name = f"{out.parent.name}/{out.name}"
        cfg = ImageRunConfig.from_yaml(out / "config.yaml")
        if cfg.operating_point.policy != "min_sensitivity" or cfg.operating_point.value != TARGET:
            print(f"| {name} | skipped: another operating-point policy |")
            continue
        found = rescorable(out, cfg, splits)
        if isinstance(found, str):
            print(f"| {name} | {found} |")
            continue
        manifest, split, predictor, config = found
        val, val_pos = scored(predictor, manifest, split, "val", config)
        test, test_pos = scored(predictor, manifest, split, "test", config)
        lowest = choose_threshold(val_pos.astype(int), val, cfg.operating_point)
        if not np.isclose(lowest, predictor.threshold, rtol=1e-4, atol=1e-6):
            print(f"| {name} | skipped: re-scored threshold {lowest:.4f} is not the bundle's "
                  f"{predictor.threshold:.4f} |")  # fmt: skip
            continue
        fitted = logit_normal_threshold(val[val_pos])
        (sens_a, spec_a), (sens_b, spec_b) = (
            rates(test, test_pos, lowest),
            rates(test, test_pos, fitted),
        )
        data = " ".join([cfg.data.dataset, *(f"{k}={v}" for k, v in cfg.data.options.items())])
        rows.append((data, sens_a, sens_b, spec_a, spec_b))
        print(
            f"| {name} | {int(val_pos.sum())} | {lowest:.3f} / {fitted:.3f} | "
            f"{sens_a:.3f} / {sens_b:.3f} | {spec_a:.3f} / {spec_b:.3f} |",
            flush=True,
        )
    if not rows:
        return
    print(
        "\n| runs | policy | mean test sensitivity | runs under 0.90 | sd of sensitivity "
        "| mean test specificity | sd of specificity |"
    )
    print("|---|---|---|---|---|---|---|")
    for dataset in [*sorted({r[0] for r in rows}), "all"]:
        t = np.array([r[1:] for r in rows if dataset in ("all", r[0])])
        for label, s, c in (("lowest", 0, 2), ("logit-normal", 1, 3)):
            sd = (lambda v: f"{v.std(ddof=1):.3f}") if len(t) > 1 else (lambda v: "")
            print(
                f"| {dataset} ({len(t)}) | {label} | {t[:, s].mean():.3f} | "
                f"{(t[:, s] < 0.9).sum()} | {sd(t[:, s])} | {t[:, c].mean():.3f} | {sd(t[:, c])} |"
            )
    print(f"\n{len(rows)} runs; target sensitivity {TARGET} chosen on validation.")


if __name__ == "__main__":
    main()
