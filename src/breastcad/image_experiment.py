"""An image run, end to end: scan -> audit and split (patient / duplicate-cluster groups) ->
cache -> train -> temperature scaling and operating point on validation -> test metrics with
group-bootstrap intervals -> plots, report with model card, bundle. A cross-fitted ensemble
(`train.cross_fit`) pools training and validation parts into k grouped folds, one member per
fold, and fits temperature and operating point on the out-of-fold predictions instead
(`splits/folds.csv` lists each development image's fold, `out_of_fold_predictions.csv` what
it was scored).

Run folder: config.yaml, results.json, metrics.json, splits/split.json, predictions.csv,
checkpoints/{best,last}.ckpt, plots/*.png, report.md/html, bundle/.

Where a dataset's official split has no test part (the BreastMNIST file in ../shared), the
official validation part is the evaluation set and a grouped validation part is carved out of
the official training part for early stopping, calibration and the operating point.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from breastcad.bundle import ImageModel, image_manifest, save_bundle
from breastcad.config import ImageRunConfig
from breastcad.data.datamodule import ImageDataModule
from breastcad.data.manifest import Manifest
from breastcad.data.sources import MODALITY, scan
from breastcad.data.splits import (
    kfold,
    load_split,
    save_split,
    shared_with_training,
    split_dataset,
    train_val_test,
)
from breastcad.errors import ConfigError
from breastcad.evaluation import image_plots
from breastcad.evaluation.image_evaluation import (
    evaluation_plots,
)
from breastcad.evaluation.overlap import overlap_of_test_part
from breastcad.evaluation.plots import class_balance
from breastcad.image_calibration import Tested, calibrate_and_test
from breastcad.image_ensemble import fit_ensemble
from breastcad.image_setup import (
    build_network,
    check_classes,
    check_resume,
    fit_settings,
    lesion_annotations,
)
from breastcad.models.ensemble import EnsembleNetwork
from breastcad.models.image import ImageNetwork
from breastcad.runinfo import run_info, to_jsonable
from breastcad.training.image_fit import ImageFitSettings, fit_image, positive_index


def make_partition(
    manifest: Manifest, cfg: ImageRunConfig, progress: bool
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The split of `manifest` (rows aligned by path) with partitions train / val / test: the
    run's own, or a saved one (`data.split_file`, checked against the data) as it is."""
    d = cfg.data
    if d.split_file is not None:
        split = load_split(d.split_file, manifest)
        missing = {"train", "val", "test"} - set(split["partition"])
        if missing:
            raise ConfigError(
                f"{d.split_file}: no {', '.join(sorted(missing))} part; a run needs a split "
                "with train, val and test (the splits/split.json of an earlier run has them)"
            )
        saved = json.loads(Path(d.split_file).read_text()).get("settings", {})
        return split, {"split_file": str(d.split_file), "saved_settings": saved, "skipped": []}
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
        cfg.train.cache_dir,
        d.duplicate_correlation,
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
    shared = shared_with_training(split, "test")
    if shared:  # an official split made image by image: kept as published, and said so
        settings["test_images_sharing_a_group"] = shared
    settings["skipped"] = skipped
    return split, settings


def _split_groups(manifest: Manifest, split: pd.DataFrame) -> np.ndarray:
    """The split's group (patient, woman, duplicate cluster) of each manifest row."""
    lookup = dict(zip(split["path"], split["split_group"], strict=True))
    return manifest.frame["path"].map(lookup).to_numpy()


def _cross_fit_folds(
    manifest: Manifest, split: pd.DataFrame, partition: np.ndarray, cfg: ImageRunConfig
) -> np.ndarray:
    """A fold 0..k-1 per manifest row of the development images (train and validation parts;
    -1 elsewhere): stratified, every split group (patient, duplicate cluster) in one fold."""
    k = cfg.train.members
    dev = np.isin(partition, ["train", "val"])
    groups = _split_groups(manifest, split)
    if len(set(groups[dev])) < k:
        raise ConfigError(
            f"{cfg.data.root}: {len(set(groups[dev]))} groups among the training and "
            f"validation images, too few for {k} cross-fitting folds; use fewer --members"
        )
    folds = np.full(len(partition), -1)
    folds[dev] = kfold(manifest.frame["label"].to_numpy()[dev], groups[dev], k, cfg.seed)
    return folds


@dataclasses.dataclass
class _Setup:
    """What a run trains on and with, before any training."""

    manifest: Manifest
    split: pd.DataFrame
    split_settings: dict[str, Any]
    modality: str
    net: ImageNetwork
    params: dict[str, Any]
    dm: ImageDataModule
    settings: ImageFitSettings
    masks: np.ndarray | None
    lesions: dict[str, Any]
    member_data: list[ImageDataModule] | None


def run_image_experiment(cfg: ImageRunConfig, out: Path) -> dict[str, Any]:
    """One image run (see the module docstring) written to `out`; returns its results."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    check_resume(cfg, out)
    cfg.to_yaml(out / "config.yaml")
    run = _set_up(cfg, out)
    groups = _split_groups(run.manifest, run.split)
    if cfg.train.members == 1:
        net: ImageNetwork | EnsembleNetwork = run.net
        history, fit_info = fit_image(net, run.dm, run.settings, out, groups)
        members: list[dict[str, Any]] = []
    else:
        net, history, fit_info, members = fit_ensemble(
            cfg, run.net, run.params, run.dm, run.settings, out, run.member_data, groups
        )
    pd.DataFrame(history).to_csv(out / "history.csv", index=False)  # the learning curves
    tested = calibrate_and_test(
        cfg, net, run.dm, run.settings, run.split, out, members, run.member_data, run.masks
    )
    training = {
        "settings": run.settings.__dict__,
        **fit_info,
        "history": history,
        **({"members": members} if members else {}),
    }
    plots = _plots(out, net, run.dm, history, tested, run.dm.classes)
    results = _results(cfg, run, net, training, tested, plots, out)
    hashes = _training_hashes(cfg, run) if cfg.train.training_hashes else None
    _write_image_bundle(out / "bundle", net, results, run.dm, hashes)
    results["bundle"] = "bundle"
    results["bundle_training_hashes"] = hashes[1] if hashes else None
    if hashes:  # is the test part what the split promised: images it never learnt from?
        in_test = (run.dm.partition == "test") & run.dm.cache.readable
        near = hashes[1]["near_duplicate_distance"]
        results["test_overlap"] = overlap_of_test_part(
            run.manifest.frame["path"].to_numpy()[in_test].tolist(),
            (hashes[0], near),
            cfg.train.jobs,
            cfg.train.progress,
            cfg.train.cache_dir,
        )
    (out / "results.json").write_text(json.dumps(to_jsonable(results), indent=1))
    (out / "metrics.json").write_text(json.dumps(to_jsonable(tested.evaluation["ci"]), indent=1))
    from breastcad.evaluation.report import write_report

    write_report(out)
    return results


def _set_up(cfg: ImageRunConfig, out: Path) -> _Setup:
    """Scan, audit and split (saved to `splits/`; cross-fitting folds too), the network, the
    decode cache and data module, lesion masks where the model learns from them."""
    progress = cfg.train.progress
    manifest = scan(cfg.data.dataset, cfg.data.root, **cfg.data.options)
    check_classes(manifest)
    modality = MODALITY.get(cfg.data.dataset, "image")
    split, split_settings = make_partition(manifest, cfg, progress)
    (out / "splits").mkdir(exist_ok=True)
    save_split(split, out / "splits" / "split.json", manifest, split_settings)
    partition = (
        manifest.frame["path"]
        .map(dict(zip(split["path"], split["partition"], strict=True)))
        .fillna("")
        .to_numpy(dtype=object)
    )
    folds = _cross_fit_folds(manifest, split, partition, cfg) if cfg.train.cross_fit else None
    if folds is not None:  # members are trained on folds; the run's own loaders see them pooled
        pd.DataFrame({"path": manifest.frame["path"], "fold": folds + 1})[folds >= 0].to_csv(
            out / "splits" / "folds.csv", index=False
        )
        partition = np.where(folds >= 0, "train", partition)
    n_train = int((partition == "train").sum())
    net, preprocess, params = build_network(cfg, manifest.classes, modality, n_train)
    masks, lesions = lesion_annotations(net, manifest, preprocess, progress)
    dm = ImageDataModule(
        manifest,
        partition,
        preprocess,
        batch_size=cfg.train.batch_size or net.recipe.batch_size,
        sampling=cfg.train.sampling,
        cache_dir=cfg.train.cache_dir,
        jobs=cfg.train.jobs,
        seed=cfg.seed,
        progress=progress,
        masks=masks,
        # the bundle's hashes from the cache's decode where no audit decoded the images
        facts=cfg.train.training_hashes
        and (cfg.data.duplicate_distance is None or cfg.data.split_file is not None),
    )
    member_data = None
    if folds is not None:  # member i: fold i for early stopping, the other folds to learn
        member_data = [
            dm.repartitioned(np.where(folds == i, "val", partition))
            for i in range(cfg.train.members)
        ]
    settings = fit_settings(cfg, net, modality)
    return _Setup(
        manifest, split, split_settings, modality, net, params, dm, settings, masks, lesions,
        member_data,
    )  # fmt: skip


def _results(
    cfg: ImageRunConfig,
    run: _Setup,
    net: ImageNetwork | EnsembleNetwork,
    training: dict[str, Any],
    tested: Tested,
    plots: dict[str, Any],
    out: Path,
) -> dict[str, Any]:
    """The run's `results.json`: how it was obtained (run, config, data, split, model,
    training) and what it measured."""
    manifest, dm, classes = run.manifest, run.dm, run.dm.classes
    return {
        "kind": "image",
        "title": f"breastcad: {cfg.model} on {cfg.data.dataset}",
        "run": run_info(cfg.seed),
        "config": cfg.model_dump(mode="json"),
        "data": {
            "dataset": cfg.data.dataset,
            "root": str(cfg.data.root),
            "options": dict(cfg.data.options),
            "modality": run.modality,
            "manifest_fingerprint": manifest.fingerprint(),
            "layout_fingerprint": manifest.layout_fingerprint(),
            "classes": classes,
            "positive": classes[positive_index(classes)],
            "counts": dm.counts(),
            "problems": manifest.problems + dm.problems + run.lesions.pop("problems", []),
            **({"lesion_masks": run.lesions} if run.lesions else {}),
            "split": run.split_settings,
            "preprocessing": {**dm.cache.settings, **net.preprocessing},
            "cache": str(dm.cache.path),
        },
        "model": {
            "name": cfg.model,
            "arch": net.arch,
            "init": net.init,
            "recipe": net.recipe.to_dict(),
            "test_time_augmentation": cfg.train.tta,
        },
        "training": training,
        "operating_point": tested.operating_point,
        "test": tested.evaluation,
        "plots": {k: str(Path(v).relative_to(out)) for k, v in plots.items() if v},
    }


def _plots(out, net, dm, history, tested: Tested, classes) -> dict[str, Any]:
    p = out / "plots"
    counts = {c: sum(part[c] for part in dm.counts().values()) for c in classes}
    test_pixels = dm.cache.pixels[dm.datasets["test"].rows]
    t = tested
    return {
        "class_balance": class_balance(counts, p / "class_balance.png"),
        "learning_curves": image_plots.learning_curves(
            history, p / "learning_curves.png", "Learning curves"
        ),
        **evaluation_plots(out, t.evaluation, t.logits, t.y, t.probs, t.pred, classes, test_pixels),
        "filters": image_plots.first_layer_filters(net, p / "filters.png"),
    }


def _training_hashes(cfg: ImageRunConfig, run: _Setup) -> tuple[dict, dict]:
    """The hashes of the images the network learnt from or was calibrated on (train and
    validation parts; all folds of a cross-fitted run; a starting bundle's too) and their
    record (`data.fingerprints`). Near duplicates count where the split kept them together
    (no patient ids), or did not look for them (then a near match is a leak to flag)."""
    from breastcad.bundle import read_manifest
    from breastcad.data import fingerprints

    learnt = np.isin(run.dm.partition, ["train", "val"]) & run.dm.cache.readable
    paths = run.manifest.frame["path"].to_numpy()[learnt].tolist()
    distance = cfg.data.duplicate_distance
    near = None if run.manifest.patient_groups else (4 if distance is None else distance)
    start = cfg.train.init_from
    earlier = None
    if start is not None and read_manifest(start).get("training_hashes"):
        earlier = fingerprints.load(start)
    t = cfg.train
    return fingerprints.training_record(paths, near, t.jobs, t.progress, t.cache_dir, earlier)


def _write_image_bundle(
    folder: Path,
    net: ImageNetwork,
    results: dict,
    dm: ImageDataModule,
    hashes: tuple[dict, dict] | None = None,
) -> None:
    data = results["data"]
    manifest = image_manifest(
        net,
        data["classes"],
        data["classes"].index(data["positive"]),
        {k: dm.cache.settings[k] for k in ("size", "resize", "channels")},
        temperature=results["test"]["calibration"]["temperature"],
        prior_shift=results["test"]["calibration"]["prior_shift"],
        calibration_fitted_on=results["test"]["calibration"]["fitted_on"],
        threshold={
            "value": results["operating_point"]["threshold"],
            "policy": results["operating_point"]["policy"],
            "validation": results["operating_point"]["validation"],
        },
        metrics=results["test"]["ci"],
        trained_on={
            k: data[k]
            for k in (
                "dataset",
                "options",
                "manifest_fingerprint",
                "layout_fingerprint",
                "counts",
                "split",
            )
            if k in data
        },
        modality=data["modality"],
        run=results["run"],
        intended_use="Research use only; not a medical device.",
        test_time_augmentation=results["model"]["test_time_augmentation"],
    )
    if "bilateral" in results["operating_point"]:  # each breast against the other, fitted
        manifest["bilateral"] = results["operating_point"]["bilateral"]
    save_bundle(folder, ImageModel(net), manifest, hashes)
