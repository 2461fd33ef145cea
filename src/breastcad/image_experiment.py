"""An image run, end to end: scan -> audit and split (patient / duplicate-cluster groups) ->
cache -> train -> temperature scaling and operating point on validation -> test metrics with
group-bootstrap intervals -> plots, report with model card, bundle.

Run folder: config.yaml, results.json, metrics.json, splits/split.json, predictions.csv,
checkpoints/{best,last}.ckpt, plots/*.png, report.md/html, bundle/.

Where a dataset's official split has no test part (the BreastMNIST file in ../shared), the
official validation part is the evaluation set and a grouped validation part is carved out of
the official training part for early stopping, calibration and the operating point.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from breastcad.bundle import ImageModel, save_bundle
from breastcad.config import ImageRunConfig, PreprocessConfig
from breastcad.data.datamodule import ImageDataModule
from breastcad.data.manifest import Manifest
from breastcad.data.sources import GRAY_MODALITIES, MODALITY, scan
from breastcad.data.splits import save_split, split_dataset, train_val_test
from breastcad.evaluation import image_plots
from breastcad.evaluation.classification import (
    classification_metrics,
    decide,
    fit_temperature,
    group_bootstrap,
    group_level,
    softmax,
)
from breastcad.evaluation.metrics import choose_threshold
from breastcad.evaluation.plots import class_balance, pr_curves, reliability_diagram, roc_curves
from breastcad.models import create_model
from breastcad.models.image import ImageNetwork
from breastcad.runinfo import run_info
from breastcad.training.augment import MODALITY_AUGMENT
from breastcad.training.image_fit import ImageFitSettings, fit_image, positive_index


def make_partition(
    manifest: Manifest, cfg: ImageRunConfig, progress: bool
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The split of `manifest` (rows aligned by path) with partitions train / val / test."""
    d = cfg.data
    split, skipped, settings = split_dataset(
        manifest,
        d.test_size,
        d.val_size,
        None,
        cfg.seed,
        d.official,
        d.duplicate_distance,
        cfg.train.jobs,
        progress,
    )
    parts = split["partition"].to_numpy(dtype=object)
    if "test" not in parts:  # official split without test arrays: evaluate on official val
        parts = np.where(parts == "val", "test", parts)
        train = np.flatnonzero(parts == "train")
        carved = train_val_test(
            split["label"].to_numpy()[train],
            split["split_group"].to_numpy()[train],
            d.val_size,
            0.0,
            cfg.seed,
        )
        parts[train[carved == "test"]] = "val"
        settings["note"] = "official val used as test; val carved from official train"
    split["partition"] = parts
    settings["skipped"] = skipped
    return split, settings


def predict_logits(net: ImageNetwork, loader) -> tuple[np.ndarray, np.ndarray]:
    net.eval()
    logits, ys = [], []
    with torch.inference_mode():
        for x, y in loader:
            logits.append(net(x).float().numpy())
            ys.append(y.numpy())
    return np.concatenate(logits), np.concatenate(ys)


def evaluate_predictions(
    logits: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    classes: list[str],
    positive: int,
    temperature: float,
    threshold: float | None,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """Test metrics at the chosen operating point with group-bootstrap CIs; ECE and Brier
    before and after temperature scaling; patient-level results."""
    raw, calibrated = softmax(logits), softmax(logits, temperature)
    at_point = classification_metrics(y, calibrated, classes, positive, threshold)
    uncalibrated = classification_metrics(y, raw, classes, positive, threshold)["scalars"]
    return {
        "n": len(y),
        "metrics": at_point,
        "argmax": classification_metrics(y, calibrated, classes, positive, None)["scalars"],
        "ci": group_bootstrap(y, calibrated, groups, classes, positive, threshold, n_boot, seed)
        if n_boot
        else {},
        "calibration": {
            "temperature": temperature,
            "ece_before": uncalibrated["ece"],
            "ece_after": at_point["scalars"]["ece"],
            "brier_before": uncalibrated["brier"],
            "brier_after": at_point["scalars"]["brier"],
        },
        "group_level": group_level(y, calibrated, groups, positive, threshold or 0.5),
    }


def _policy_text(cfg: ImageRunConfig, positive: str) -> str:
    op = cfg.operating_point
    if op.policy == "fixed":
        return f"P({positive}) >= {op.value:g} (fixed)"
    if op.policy == "youden":
        return f"P({positive}) threshold maximising Youden's J"
    return f"highest P({positive}) threshold with sensitivity >= {op.value:g}"


def _fit_settings(cfg: ImageRunConfig, net: ImageNetwork, modality: str) -> ImageFitSettings:
    """The recipe, overridden by the run's settings. Class weights apply only without
    re-sampling (both would correct the imbalance twice). With fewer epochs than the recipe,
    the head stage of fine-tuning gets what the fine-tuning stage leaves."""
    t, r = cfg.train, net.recipe
    augment = MODALITY_AUGMENT.get(modality, "none") if t.augment == "auto" else t.augment
    epochs = t.epochs or r.epochs
    stages = [
        {**s, "after_epochs": min(s["after_epochs"], max(1, epochs - s["epochs"]))}
        for s in r.stages
    ]
    return ImageFitSettings(
        epochs=epochs,
        lr=t.lr or r.lr,
        patience=t.patience or r.patience,
        seed=cfg.seed,
        class_weight=t.class_weight if t.sampling == "none" else "none",
        augment=augment,
        accelerator=t.accelerator,
        deterministic=t.deterministic,
        progress=t.progress,
        resume=t.resume,
        stages=stages or None,
    )


def run_image_experiment(cfg: ImageRunConfig, out: Path) -> dict[str, Any]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg.to_yaml(out / "config.yaml")
    progress = cfg.train.progress
    manifest = scan(cfg.data.dataset, cfg.data.root, **cfg.data.options)
    modality = MODALITY.get(cfg.data.dataset, "image")
    split, split_settings = make_partition(manifest, cfg, progress)
    (out / "splits").mkdir(exist_ok=True)
    save_split(split, out / "splits" / "split.json", manifest, split_settings)
    partition = manifest.frame["path"].map(
        dict(zip(split["path"], split["partition"], strict=True))
    )
    classes, positive = manifest.classes, positive_index(manifest.classes)
    torch.manual_seed(cfg.seed)
    net = create_model(cfg.model, num_classes=len(classes), **cfg.model_params)
    preprocess = cfg.preprocess or PreprocessConfig(
        size=net.recipe.size,
        resize=net.recipe.resize,
        channels=1 if modality in GRAY_MODALITIES else "auto",
    )
    dm = ImageDataModule(
        manifest,
        partition.fillna("").to_numpy(),
        preprocess,
        batch_size=cfg.train.batch_size or net.recipe.batch_size,
        sampling=cfg.train.sampling,
        cache_dir=cfg.train.cache_dir,
        jobs=cfg.train.jobs,
        seed=cfg.seed,
        progress=progress,
    )
    settings = _fit_settings(cfg, net, modality)
    history, fit_info = fit_image(net, dm, settings, out)
    pd.DataFrame(history).to_csv(out / "history.csv", index=False)  # the learning curves

    val_logits, val_y = predict_logits(net, dm.val_dataloader())
    test_logits, test_y = predict_logits(net, dm.test_dataloader())
    temperature = fit_temperature(val_logits, val_y)
    val_probs = softmax(val_logits, temperature)
    threshold = choose_threshold(
        (val_y == positive).astype(int), val_probs[:, positive], cfg.operating_point
    )
    test_rows = dm.datasets["test"].rows
    groups = split.set_index("path").loc[manifest.frame["path"].iloc[test_rows], "split_group"]
    evaluation = evaluate_predictions(
        test_logits,
        test_y,
        groups.to_numpy(),
        classes,
        positive,
        temperature,
        threshold,
        cfg.bootstrap,
        cfg.seed,
    )
    probs = softmax(test_logits, temperature)
    pred = decide(probs, positive, threshold)
    _write_predictions(out, manifest, test_rows, test_y, probs, pred, classes, threshold)
    plots = _plots(out, net, dm, history, evaluation, test_logits, test_y, probs, pred, classes)
    results = {
        "kind": "image",
        "title": f"breastcad: {cfg.model} on {cfg.data.dataset}",
        "run": run_info(cfg.seed),
        "config": cfg.model_dump(mode="json"),
        "data": {
            "dataset": cfg.data.dataset,
            "root": str(cfg.data.root),
            "modality": modality,
            "manifest_fingerprint": manifest.fingerprint(),
            "classes": classes,
            "positive": classes[positive],
            "counts": dm.counts(),
            "problems": manifest.problems + dm.problems,
            "split": split_settings,
            "preprocessing": {**dm.cache.settings, **net.preprocessing},
            "cache": str(dm.cache.path),
        },
        "model": {
            "name": cfg.model,
            "arch": net.arch,
            "init": net.init,
            "recipe": net.recipe.to_dict(),
        },
        "training": {"settings": settings.__dict__, **fit_info, "history": history},
        "operating_point": {
            "policy": _policy_text(cfg, classes[positive]),
            "threshold": threshold,
            "chosen_on": "validation part, after temperature scaling",
            "val_sensitivity": float((val_probs[val_y == positive, positive] >= threshold).mean())
            if (val_y == positive).any()
            else None,
        },
        "test": evaluation,
        "plots": {k: str(Path(v).relative_to(out)) for k, v in plots.items() if v},
    }
    _write_image_bundle(out / "bundle", net, results, dm)
    results["bundle"] = "bundle"
    (out / "results.json").write_text(json.dumps(_jsonable(results), indent=1))
    (out / "metrics.json").write_text(json.dumps(_jsonable(evaluation["ci"]), indent=1))
    from breastcad.evaluation.report import write_report

    write_report(out)
    return results


def _write_predictions(out, manifest, rows, y, probs, pred, classes, threshold) -> None:
    frame = pd.DataFrame({"path": manifest.frame["path"].iloc[rows].to_numpy()})
    frame["group_id"] = manifest.frame["group_id"].iloc[rows].to_numpy()
    frame["label"] = [classes[i] for i in y]
    for k, c in enumerate(classes):
        frame[f"p_{c}"] = probs[:, k]
    frame["prediction"] = [classes[i] for i in pred]
    frame["threshold"] = threshold
    frame.to_csv(out / "predictions.csv", index=False)


def _plots(out, net, dm, history, evaluation, logits, y, probs, pred, classes) -> dict[str, Any]:
    p = out / "plots"
    counts = {c: sum(part[c] for part in dm.counts().values()) for c in classes}
    test_pixels = dm.cache.pixels[dm.datasets["test"].rows]
    return {
        "class_balance": class_balance(counts, p / "class_balance.png"),
        "learning_curves": image_plots.learning_curves(
            history, p / "learning_curves.png", "Learning curves"
        ),
        **evaluation_plots(out, evaluation, logits, y, probs, pred, classes, test_pixels),
        "filters": image_plots.first_layer_filters(net, p / "filters.png"),
    }


def evaluation_plots(out, evaluation, logits, y, probs, pred, classes, pixels) -> dict[str, Any]:
    """ROC, PR, confusion matrix, reliability before/after calibration, prediction grid."""
    p = out / "plots"
    positive = positive_index(classes)
    pos_curve = {classes[positive]: ((y == positive).astype(int), probs[:, positive])}
    ovr = {c: ((y == k).astype(int), probs[:, k]) for k, c in enumerate(classes)}
    raw = softmax(logits)[:, positive]
    return {
        "roc": roc_curves(
            ovr if len(classes) > 2 else pos_curve, p / "roc.png", "ROC (one-vs-rest)"
        ),
        "pr": pr_curves(pos_curve, p / "pr.png", f"Precision-recall, {classes[positive]}"),
        "confusion": image_plots.confusion(
            evaluation["metrics"]["confusion"],
            classes,
            p / "confusion.png",
            "Confusion matrix at the operating point",
        ),
        "reliability": reliability_diagram(
            {
                "before temperature": ((y == positive).astype(int), raw),
                "after temperature": pos_curve[classes[positive]],
            },
            p / "reliability.png",
            f"Reliability, P({classes[positive]})",
        ),
        "predictions": image_plots.prediction_grid(
            pixels, y, pred, probs, classes, p / "predictions.png"
        ),
    }


def _write_image_bundle(
    folder: Path, net: ImageNetwork, results: dict, dm: ImageDataModule
) -> None:
    data = results["data"]
    manifest = {
        "kind": "image",
        "model": {"name": results["model"]["name"], "arch": net.arch, "init": net.init},
        "classes": data["classes"],
        "positive": data["classes"].index(data["positive"]),
        "preprocessing": {
            "size": dm.cache.settings["size"],
            "resize": dm.cache.settings["resize"],
            "channels": dm.cache.settings["channels"],
            "normalisation": net.preprocessing,
        },
        "temperature": results["test"]["calibration"]["temperature"],
        "threshold": {
            "value": results["operating_point"]["threshold"],
            "policy": results["operating_point"]["policy"],
        },
        "metrics": results["test"]["ci"],
        "trained_on": {k: data[k] for k in ("dataset", "manifest_fingerprint", "counts", "split")},
        "modality": data["modality"],
        "run": results["run"],
        "intended_use": "Research use only; not a medical device.",
    }
    save_bundle(folder, ImageModel(net), _jsonable(manifest))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


def evaluate_image_bundle(
    bundle_dir: Path,
    dataset: str,
    root: Path,
    out: Path,
    options: dict[str, Any] | None = None,
    split_file: Path | None = None,
    partition: str = "test",
    n_boot: int = 1000,
    jobs: int = 2,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """A bundle on any supported dataset (including data never seen in training), at its
    stored temperature and operating point: nothing is refitted."""
    from breastcad.data.cache import ImageCache
    from breastcad.data.splits import load_split
    from breastcad.errors import DataError
    from breastcad.predict import Predictor

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    predictor = Predictor.from_bundle(bundle_dir)
    if predictor.kind != "image":
        raise DataError(f"a {predictor.kind} bundle; evaluate it with --data", bundle_dir)
    manifest = scan(dataset, root, **(options or {}))
    if manifest.classes != predictor.classes:
        raise DataError(
            f"the data's classes {manifest.classes} differ from the model's {predictor.classes}",
            root,
        )
    split_settings: dict[str, Any] = {}
    if split_file is not None:
        chosen = load_split(split_file, manifest)
        keep = set(chosen.loc[chosen["partition"] == partition, "path"])
        manifest = manifest.subset(manifest.frame["path"].isin(keep))
        split_settings = {"split_file": str(split_file), "partition": partition}
    pre = predictor.bundle.manifest["preprocessing"]
    config = PreprocessConfig(size=pre["size"], resize=pre["resize"], channels=pre["channels"])
    cache = ImageCache.build(manifest, config, cache_dir, jobs, progress)
    rows = np.flatnonzero(cache.readable)
    logits = np.concatenate(
        [predictor.predict_logits(cache.pixels[rows[i : i + 64]]) for i in range(0, len(rows), 64)]
    )
    lookup = {c: i for i, c in enumerate(manifest.classes)}
    y = manifest.frame["label"].iloc[rows].map(lookup).to_numpy()
    groups = manifest.frame["group_id"].iloc[rows].to_numpy()
    positive = predictor.positive
    evaluation = evaluate_predictions(
        logits,
        y,
        groups,
        manifest.classes,
        positive,
        predictor.temperature,
        predictor.threshold,
        n_boot,
        0,
    )
    probs = softmax(logits, predictor.temperature)
    pred = decide(probs, positive, predictor.threshold)
    _write_predictions(out, manifest, rows, y, probs, pred, manifest.classes, predictor.threshold)
    plots = evaluation_plots(
        out, evaluation, logits, y, probs, pred, manifest.classes, cache.pixels[rows]
    )
    bm = predictor.bundle.manifest
    results = {
        "kind": "image",
        "title": f"breastcad: bundle {predictor.bundle.model_id} evaluated on {dataset}",
        "run": run_info(0),
        "data": {
            "dataset": dataset,
            "root": str(root),
            "modality": MODALITY.get(dataset, "image"),
            "manifest_fingerprint": manifest.fingerprint(),
            "classes": manifest.classes,
            "positive": manifest.classes[positive],
            "counts": {"evaluated": manifest.subset(cache.readable).class_counts()},
            "problems": manifest.problems + [f"{p}: {m}" for p, m in cache.problems.items()],
            "split": split_settings,
            "preprocessing": bm["preprocessing"],
        },
        "model": {
            "name": bm["model"]["name"],
            "arch": bm["model"]["arch"],
            "init": bm["model"]["init"],
        },
        "operating_point": {
            "policy": bm["threshold"].get("policy", ""),
            "threshold": predictor.threshold,
            "chosen_on": "the bundle's training run",
        },
        "test": evaluation,
        "plots": {k: str(Path(v).relative_to(out)) for k, v in plots.items() if v},
    }
    (out / "results.json").write_text(json.dumps(_jsonable(results), indent=1))
    from breastcad.evaluation.report import write_report

    write_report(out)
    return results
