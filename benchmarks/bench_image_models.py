"""Image-model accuracy on the real data in ../shared/data: each configuration is a full
`breastcad train-image` run (grouped split, training, calibration and operating point on
validation, group-bootstrap CIs on test). Prints one table; every run folder keeps its report.

    .venv/bin/python benchmarks/bench_image_models.py [--only busi-finetune ...] [--out runs/bench]
        [--seeds 0 1 2]

`--seeds` repeats each run with other seeds (the seed draws the split, the initialisation of
new layers, the batches and the augmentation): the spread between seeds is how far one run's
figure can be trusted. Seed 0 runs are named as before, others get `-seedN`. Runs named
`-x3` are deep ensembles (three members on one split, seeds seed..seed+2), `-cv5` cross-fitted
ones (five members, member k early-stopped on fold k of the pooled training and validation
images; calibration and operating point on the out-of-fold predictions); the table after the
goals gives each member's own test figures beside the ensemble's.

Accuracy, balanced accuracy, sensitivity and specificity are at the operating point chosen on
validation (sensitivity >= 0.95 for the positive class); "accuracy (argmax)" is the plain
most-probable-class accuracy of the calibrated model for comparison with published figures
(calibration shifts a re-weighted model's classes back to the training frequencies, see
`breastcad.evaluation.classification.prior_shift`); "argmax as trained" is the most probable
class of the network without that shift (runs made before it: the same figure); ECE is after
calibration.

Runs on data that pairs a woman's two breasts (mini-MIAS) get one more table: each image
against the other (`breastcad.evaluation.bilateral`; what `predict --pairs` deploys), its AUC
beside the image alone and its decisions at the bilateral threshold chosen on validation.

Goals from the issue (reported, not tuned to): BUSI 3-class accuracy >= 0.90 and macro AUC >=
0.95; BreastMNIST (official val as test) AUC >= 0.93, accuracy >= 0.89; mini-MIAS normal vs
abnormal AUC >= 0.80; IDC end to end with patient-level results.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from breastcad.config import ImageRunConfig
from breastcad.image_experiment import run_image_experiment

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def run(
    dataset: str,
    model: str,
    size: int | None = None,
    epochs: int | None = None,
    members: int = 1,
    backbone: str | None = None,
    cross_fit: bool = False,
    tta: str = "none",
    branches: str | None = None,
    calibration: str = "temperature",
    lesion_views: str | None = None,
    **data,
) -> dict:
    """One `ImageRunConfig` as a dict: the dataset under ../shared/data, the model, its size,
    the epochs allowed (default: the recipe's), the members of a deep ensemble (1: none), the
    backbone (default: the recipe's, EfficientNet-Lite0), whether the members are
    cross-fitted on folds of the training and validation images, the test-time views, the
    linear probe's extra backbones, the calibration, the lesion-cell probe's lesion views."""
    cfg = {"data": {"dataset": dataset, "root": DATA / dataset, **data}, "model": model}
    params = {
        "size": size,
        "backbone": backbone,
        "branches": branches,
        "lesion_views": lesion_views,
    }
    if any(v is not None for v in params.values()):
        cfg["model_params"] = {k: v for k, v in params.items() if v is not None}
    cfg["train"] = {"epochs": epochs, "members": members, "cross_fit": cross_fit, "tta": tta}
    cfg["calibration"] = calibration
    return cfg


MIAS_SPLIT = {"test_size": 0.25, "val_size": 0.15}
BENIGN_VS_MALIGNANT = {"task": "benign_vs_malignant"}
PROBE_BRANCHES = "tf_efficientnet_lite0@224,tf_efficientnet_lite2@{size}"

CONFIGS: dict[str, dict] = {
    "busi-finetune": run("busi", "finetune"),
    "busi-transfer": run("busi", "transfer"),
    "busi-transfer-224": run("busi", "transfer", 224),
    "busi-transfer-224-60ep": run("busi", "transfer", 224, epochs=60),
    "busi-finetune-224": run("busi", "finetune", 224),
    "busi-full_finetune": run("busi", "full_finetune"),
    "busi-full_finetune-224": run("busi", "full_finetune", 224),
    "busi-lesion_map-224": run("busi", "lesion_map", 224),
    # deep ensembles: three networks of one recipe on the split of seed 0, seeds 0, 1, 2
    "busi-transfer-224-x3": run("busi", "transfer", 224, members=3),
    "busi-full_finetune-x3": run("busi", "full_finetune", members=3),
    # cross-fitted ensembles: training and validation pooled into five grouped folds, one
    # member per fold; calibration and operating point on all out-of-fold predictions
    "busi-transfer-cv5": run("busi", "transfer", members=5, cross_fit=True),
    "busi-full_finetune-cv5": run("busi", "full_finetune", members=5, cross_fit=True),
    # EfficientNet-Lite2 (offline ImageNet weights, pretrained at 260 px) instead of Lite0
    "busi-transfer-lite2-260": run("busi", "transfer", 260, backbone="tf_efficientnet_lite2"),
    # the same model on a random split (each image its own group, no duplicate audit): what
    # the published BUSI figures measured, near duplicates straddling train and test
    "busi-transfer-random-split": run("busi", "transfer", duplicate_distance=None),
    # benign vs malignant only (normal images left out): the question behind the published
    # "honest" BUSI figures near 0.88
    "busi-bm-probe": run("busi", "probe", options=BENIGN_VS_MALIGNANT),
    "busi-bm-probe-3": run(
        "busi", "probe", branches=PROBE_BRANCHES.format(size=160), options=BENIGN_VS_MALIGNANT
    ),
    "busi-bm-transfer-224": run("busi", "transfer", 224, options=BENIGN_VS_MALIGNANT),
    "busi-bm-probe-affine": run("busi", "probe", tta="affine", options=BENIGN_VS_MALIGNANT),
    "breastmnist-finetune": run("breastmnist", "finetune", 96),
    "breastmnist-transfer-128": run("breastmnist", "transfer", 128),
    "breastmnist-full_finetune-128": run("breastmnist", "full_finetune", 128),
    "breastmnist-full_finetune-128-x3": run("breastmnist", "full_finetune", 128, members=3),
    # the same five members on one split (seeds 0-4), against which cross-fitting is judged
    "breastmnist-full_finetune-128-x5": run("breastmnist", "full_finetune", 128, members=5),
    "breastmnist-transfer-128-cv5": run("breastmnist", "transfer", 128, members=5, cross_fit=True),
    "breastmnist-full_finetune-128-cv5": run(
        "breastmnist", "full_finetune", 128, members=5, cross_fit=True
    ),
    "breastmnist-full_finetune-lite2-128": run(
        "breastmnist", "full_finetune", 128, backbone="tf_efficientnet_lite2"
    ),
    # the linear probe: frozen features of every stage, logistic regression (no epochs)
    "busi-probe": run("busi", "probe"),
    "busi-probe-224": run("busi", "probe", 224),
    "busi-probe-cv5": run("busi", "probe", members=5, cross_fit=True),
    "breastmnist-probe-128": run("breastmnist", "probe", 128),
    "breastmnist-probe-128-flip": run("breastmnist", "probe", 128, tta="flip"),
    "mias-probe-512": run("mini-mias", "probe", 512, **MIAS_SPLIT),
    # three backbones' features: Lite0 at the input size and at 224 px, Lite2 at the input size
    "busi-probe-3": run("busi", "probe", branches=PROBE_BRANCHES.format(size=160)),
    "breastmnist-probe-3-128": run(
        "breastmnist", "probe", 128, branches=PROBE_BRANCHES.format(size=128)
    ),
    # five probes cross-fitted: calibration and operating point on out-of-fold answers
    "breastmnist-probe-3-128-cv5": run(
        "breastmnist",
        "probe",
        128,
        members=5,
        cross_fit=True,
        branches=PROBE_BRANCHES.format(size=128),
    ),
    "breastmnist-probe-3-128-flip": run(
        "breastmnist", "probe", 128, tta="flip", branches=PROBE_BRANCHES.format(size=128)
    ),
    # ten test-time views (mirror, +-10 degrees, +-5% shifts), which the probe learns from too
    "breastmnist-probe-3-128-affine": run(
        "breastmnist", "probe", 128, tta="affine", branches=PROBE_BRANCHES.format(size=128)
    ),
    "busi-probe-affine": run("busi", "probe", tta="affine"),
    "busi-probe-3-affine": run(
        "busi", "probe", tta="affine", branches=PROBE_BRANCHES.format(size=160)
    ),
    "mias-mammo_cnn": run("mini-mias", "mammo_cnn", **MIAS_SPLIT),
    "mias-mammo_cnn-x3": run("mini-mias", "mammo_cnn", members=3, **MIAS_SPLIT),
    "mias-finetune": run("mini-mias", "finetune", 224, **MIAS_SPLIT),
    "mias-transfer-512": run("mini-mias", "transfer", 512, **MIAS_SPLIT),
    "mias-full_finetune-320": run("mini-mias", "full_finetune", 320, **MIAS_SPLIT),
    "mias-lesion_map-384": run("mini-mias", "lesion_map", 384, **MIAS_SPLIT),
    # the lesion-cell detector of bench_mias_bilateral.py as a model: full resolution; it
    # learns the lesion cells of ten moved views of each lesion image (its default), or, as
    # the detector did, of the image as given only
    "mias-cell_probe-1024": run("mini-mias", "cell_probe", 1024, **MIAS_SPLIT),
    "mias-cell_probe-1024-given": run(
        "mini-mias", "cell_probe", 1024, lesion_views="none", **MIAS_SPLIT
    ),
    # EfficientNet-Lite2's cells stacked on Lite0's (`--param branches=...`; chosen over C
    # 0.0003 and over Lite2 alone on the development women, bench_mias_detector_variants.py
    # --lite2)
    "mias-cell_probe-1024-lite2": run(
        "mini-mias", "cell_probe", 1024, branches="tf_efficientnet_lite2", **MIAS_SPLIT
    ),
    "idc-idc_cnn": run("idc", "idc_cnn", test_size=0.3, val_size=0.2),
}
# the same runs trained in bfloat16 mixed precision (`--precision bf16-mixed`)
MIXED = [
    "idc-idc_cnn",
    "busi-transfer",
    "busi-full_finetune",
    "breastmnist-full_finetune-128",
    "mias-mammo_cnn",
]
CONFIGS |= {
    f"{name}-bf16": {
        **CONFIGS[name],
        "train": {**CONFIGS[name]["train"], "precision": "bf16-mixed"},
    }
    for name in MIXED
}
# the same runs calibrated with the prior shift (`--calibration prior-shift`): log class
# frequencies of the training part added to the logits before the temperature
SHIFTED = [
    "breastmnist-probe-128",
    "breastmnist-probe-128-flip",
    "breastmnist-probe-3-128",
    "breastmnist-probe-3-128-flip",
    "breastmnist-transfer-128",
    "busi-probe",
    "busi-probe-224",
    "busi-probe-3",
]
CONFIGS |= {f"{name}-shift": {**CONFIGS[name], "calibration": "prior-shift"} for name in SHIFTED}


def leaked_test_images(out: Path, max_distance: int = 4) -> tuple[int, int, float, float]:
    """Test images with a near duplicate (pHash distance <= max_distance) in train or val,
    and the argmax accuracy on those and on the rest."""
    import numpy as np
    import pandas as pd

    from breastcad.data.audit import audit
    from breastcad.data.sources import scan

    results = json.loads((out / "results.json").read_text())
    data = results["data"]
    manifest = scan(data["dataset"], data["root"], **data.get("options", {}))
    pairs = audit(manifest, max_distance=max_distance, progress=False).pairs
    split = json.loads((out / "splits" / "split.json").read_text())["rows"]
    part = dict(zip(split["path"], split["partition"], strict=True))
    paths = manifest.frame["path"].tolist()
    leaked = set()
    for i, j in pairs[["i", "j"]].to_numpy():
        for a, b in ((paths[i], paths[j]), (paths[j], paths[i])):
            if part.get(a) == "test" and part.get(b) in ("train", "val"):
                leaked.add(a)
    pred = pd.read_csv(out / "predictions.csv")
    cols = [c for c in pred.columns if c.startswith("p_")]
    ok = np.array([c[2:] for c in cols])[pred[cols].to_numpy().argmax(1)] == pred["label"]
    mask = pred["path"].isin(leaked).to_numpy()
    acc = float(ok[mask].mean()) if mask.any() else float("nan")
    return int(mask.sum()), len(mask), acc, float(ok[~mask].mean())


# (goal, run-name prefix, [(figure, index in a `measured` row, at least)]); random splits
# do not count: the goals are for splits that keep patients and near duplicates together.
# The benign-vs-malignant line is the published figure the issue calls honest, not a goal.
GOALS = [
    ("BUSI 3-class", "busi-", [("accuracy (argmax)", 1, 0.90), ("macro AUC", 2, 0.95)]),
    ("BUSI benign vs malignant (published ~0.88)", "busi-bm-", [("accuracy (argmax)", 1, 0.88)]),
    ("BreastMNIST (official val)", "breastmnist-", [("AUC", 2, 0.93), ("accuracy", 1, 0.89)]),
    ("mini-MIAS normal vs abnormal", "mias-", [("AUC", 2, 0.80)]),
    # the same images, each scored against the woman's other breast (`predict --pairs`)
    ("mini-MIAS, each breast against the other", "mias-", [("AUC", 3, 0.80)]),
]


def print_goals(measured: list[tuple[str, float, float, float]]) -> None:
    """Each accuracy goal against the best of the runs in this table (the best of several test
    figures flatters; the tables above give every run) and the mean over them."""
    print("\n| goal | figure | at least | best run | best | mean of runs | met |")
    print("|---|---|---|---|---|---|---|")
    for goal, prefix, figures in GOALS:
        candidates = [
            m
            for m in measured
            if m[0].startswith(prefix)
            and "random-split" not in m[0]
            and (prefix == "busi-bm-" or not m[0].startswith("busi-bm-"))
        ]
        for figure, index, target in figures:
            runs = [m for m in candidates if m[index] == m[index]]  # NaN: not measured
            if not runs:
                continue
            best = max(runs, key=lambda m: m[index])
            mean = sum(m[index] for m in runs) / len(runs)
            met = "yes" if best[index] >= target else "no"
            print(
                f"| {goal} | {figure} | {target:.2f} | {best[0]} | {best[index]:.3f} | "
                f"{mean:.3f} ({len(runs)} runs) | {met} |"
            )


def print_bilateral(runs: list[tuple[str, Path]]) -> None:
    """Runs on data that pairs a woman's breasts (mini-MIAS): each image against the other,
    its AUC beside the image alone, and the decisions at the bilateral threshold chosen on
    validation beside those of the single-image operating point."""
    rows = []
    for name, out in runs:
        results = json.loads((out / "results.json").read_text())
        pair = results["test"].get("bilateral")
        if not pair:
            continue
        ci = results["test"]["ci"]
        decided = pair.get("at_operating_point")
        at_point = "not fitted"
        if decided:
            at_point = (
                f"{decided['sensitivity']:.3f} ({decided['detected']} of {decided['positives']}) "
                f"/ {decided['specificity']:.3f} / {decided['accuracy']:.3f}"
            )
        low, high = pair["auc_bilateral_ci"] or (float("nan"), float("nan"))
        rows.append(
            f"| {name} | {pair['images']} | {pair['auc_single']:.3f} | "
            f"{pair['auc_bilateral']:.3f} ({low:.3f}-{high:.3f}) | {at_point} | "
            f"{ci['sensitivity']['value']:.3f} / {ci['specificity']['value']:.3f} / "
            f"{ci['accuracy']['value']:.3f} |"
        )
    if rows:
        print(
            "\n| run | images with their other breast | AUC alone | AUC against the other breast "
            "| bilateral threshold: sensitivity / specificity / accuracy | single-image "
            "operating point: sensitivity / specificity / accuracy |\n|---|---|---|---|---|---|"
        )
        print("\n".join(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0])
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"real data not found at {DATA}")
    rows, measured = [], []
    runs = [(n, s, n if s == 0 else f"{n}-seed{s}") for n in args.only for s in args.seeds]
    for config, seed, name in runs:
        out = args.out / name
        cfg = ImageRunConfig.model_validate(
            {
                **CONFIGS[config],
                "seed": seed,
                "train": {**CONFIGS[config]["train"], "progress": args.progress},
            }
        )
        start = time.perf_counter()
        if (out / "results.json").is_file():
            results = json.loads((out / "results.json").read_text())
            minutes = float("nan")
        else:
            results = run_image_experiment(cfg, out)
            minutes = (time.perf_counter() - start) / 60
        ci, n = results["test"]["ci"], results["test"]["n"]

        def cell(key: str, ci: dict = ci) -> str:
            e = ci[key]
            return f"{e['value']:.3f} ({e['ci_low']:.3f}-{e['ci_high']:.3f})"

        # results made before the prior shift: their argmax was the network's as trained
        as_trained = results["test"].get("argmax_as_trained", results["test"]["argmax"])
        pair = results["test"].get("bilateral", {})
        measured.append(
            (
                name,
                results["test"]["argmax"]["accuracy"],
                ci["macro_auc"]["value"],
                pair.get("auc_bilateral", float("nan")),
            )
        )
        rows.append(
            (
                name,
                n,
                ci["n_groups"]["value"],
                f"{results['test']['argmax']['accuracy']:.3f}",
                f"{as_trained['accuracy']:.3f}",
                f"{results['test']['calibration']['ece_after']:.3f}",
                cell("accuracy"),
                cell("balanced_accuracy"),
                cell("macro_auc"),
                cell("sensitivity"),
                cell("specificity"),
                f"{results['operating_point']['threshold']:.3f}",
                f"{results['training']['epochs_run']}",
                f"{minutes:.1f}",
            )
        )
    header = (
        "run",
        "test images",
        "groups",
        "accuracy (argmax)",
        "argmax as trained",
        "ECE",
        "accuracy",
        "balanced acc.",
        "macro AUC",
        "sensitivity",
        "specificity",
        "threshold",
        "epochs",
        "minutes",
    )
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(map(str, row)) + " |")
    print_goals(measured)
    print_bilateral([(name, args.out / name) for _, _, name in runs])
    ensembles = [(name, args.out / name / "results.json") for _, _, name in runs]
    ensembles = [(n, json.loads(p.read_text())) for n, p in ensembles if p.is_file()]
    ensembles = [(n, r) for n, r in ensembles if r["training"].get("members")]
    if ensembles:
        print(
            "\n| ensemble run | member (seed) | epochs | accuracy (argmax) alone | macro AUC "
            "alone |\n|---|---|---|---|---|"
        )
        for name, results in ensembles:
            for m in results["training"]["members"]:
                alone = m["test_alone"]
                print(
                    f"| {name} | {m['member']} ({m['seed']}) | {m['epochs_run']} | "
                    f"{alone['accuracy']:.3f} | {alone['macro_auc']:.3f} |"
                )
            ci = results["test"]["ci"]["macro_auc"]["value"]
            acc = results["test"]["argmax"]["accuracy"]
            print(f"| {name} | ensemble | | {acc:.3f} | {ci:.3f} |")
    # the sets without patient ids, where near-duplicate clusters stand in for patients: BUSI
    # (our split: none should leak) and BreastMNIST (its official split, made image by image)
    no_ids = [name for _, _, name in runs if name.startswith(("busi", "breastmnist"))]
    if no_ids:
        print(
            "\n| run | test images with a near duplicate in train/val | argmax accuracy on "
            "those | on the rest |\n|---|---|---|---|"
        )
        for name in no_ids:
            n_leak, n, acc_leak, acc_rest = leaked_test_images(args.out / name)
            on_those = f"{acc_leak:.3f}" if n_leak else "- (none)"
            print(f"| {name} | {n_leak} of {n} | {on_those} | {acc_rest:.3f} |")


if __name__ == "__main__":
    main()
