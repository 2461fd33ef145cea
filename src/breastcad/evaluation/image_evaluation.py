"""Evaluating image models: logits from a loader, test metrics with calibration and group
bootstrap, plots and the prediction table, shared by training runs and by `breastcad evaluate`
of a bundle on any dataset layout (nothing refitted).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from breastcad.allocator import keep_freed_memory
from breastcad.config import PreprocessConfig
from breastcad.data.lesions import has_lesion_annotations, lesion_masks
from breastcad.data.manifest import Manifest
from breastcad.data.modality import data_modality_warning
from breastcad.data.pairs import contralateral
from breastcad.data.sources import MODALITY, scan
from breastcad.devices import device_name, device_of
from breastcad.errors import DataError
from breastcad.evaluation import image_plots
from breastcad.evaluation.bilateral import bilateral_comparison
from breastcad.evaluation.class_map import model_classes
from breastcad.evaluation.classification import (
    classification_metrics,
    decide,
    group_bootstrap,
    group_level,
    softmax,
)
from breastcad.evaluation.localisation import lesion_localisation
from breastcad.evaluation.overlap import (
    match_training,
    overlap_record,
    overlap_warning,
    run_test_hint,
    seen_in_training,
)
from breastcad.evaluation.plots import pr_curves, reliability_diagram, roc_curves
from breastcad.models.ensemble import EnsembleNetwork
from breastcad.models.image import ImageNetwork
from breastcad.models.tta import with_views
from breastcad.runinfo import refuse_training_run_folder, run_info, to_jsonable
from breastcad.training.image_fit import positive_index

if TYPE_CHECKING:
    from breastcad.predict import Predictor


def predict_logits(net: ImageNetwork, loader, tta: str = "none") -> tuple[np.ndarray, np.ndarray]:
    """Logits (N, classes) and labels of every batch of `loader`, averaged over the test-time
    views `tta` asks for (`breastcad.models.tta`)."""
    return _collect(lambda x: net(x).float(), net, loader, 0, tta)


def predict_member_logits(
    net: EnsembleNetwork, loader, tta: str = "none"
) -> tuple[np.ndarray, np.ndarray]:
    """Each member's logits (members, N, classes), each averaged over the test-time views, and
    the labels of every batch of `loader`."""
    return _collect(net.member_logits, net, loader, 1, tta)


def _collect(forward, net, loader, axis: int, tta: str) -> tuple[np.ndarray, np.ndarray]:
    net.eval()
    device = device_of(net)  # the batches go where the network is
    logits, ys = [], []
    with torch.inference_mode():
        for x, y in loader:
            logits.append(with_views(forward, x.to(device), tta).cpu().numpy())
            ys.append(y.numpy())
    return np.concatenate(logits, axis=axis), np.concatenate(ys)


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
    other: np.ndarray | None = None,
    shift: np.ndarray | None = None,
    bilateral_fit: dict[str, Any] | None = None,
    merge: np.ndarray | None = None,
) -> dict[str, Any]:
    """Test metrics at the chosen operating point with group-bootstrap CIs; ECE and Brier
    before and after calibration (the prior `shift`, then the temperature); the argmax
    decision of the calibrated model and, for comparison, of the network as trained;
    patient-level results; where `other` pairs images with the same woman's other breast
    (`data.pairs.contralateral`), each breast against it (`bilateral`, only when some image
    has a partner; with `bilateral_fit`, `bilateral.fit_bilateral`'s threshold decides too).
    `merge` (model classes x `classes`, `joined_classes`) sums the model's class
    probabilities into the data's classes where it reads several as one."""
    shift = np.zeros(logits.shape[1]) if shift is None else np.asarray(shift, dtype=np.float64)
    raw = joined_classes(softmax(logits), merge)
    calibrated = joined_classes(softmax(logits, temperature, shift), merge)
    at_point = classification_metrics(y, calibrated, classes, positive, threshold)
    uncalibrated = classification_metrics(y, raw, classes, positive, threshold)["scalars"]
    bilateral = (
        None
        if other is None
        else bilateral_comparison(
            y, calibrated, other, groups, positive, n_boot, seed, bilateral_fit
        )
    )
    return {
        "n": len(y),
        "metrics": at_point,
        "argmax": classification_metrics(y, calibrated, classes, positive, None)["scalars"],
        "argmax_as_trained": classification_metrics(y, raw, classes, positive, None)["scalars"],
        "ci": group_bootstrap(y, calibrated, groups, classes, positive, threshold, n_boot, seed)
        if n_boot
        else {},
        "calibration": {
            "temperature": temperature,
            "prior_shift": shift.tolist(),
            "ece_before": uncalibrated["ece"],
            "ece_after": at_point["scalars"]["ece"],
            "brier_before": uncalibrated["brier"],
            "brier_after": at_point["scalars"]["brier"],
        },
        "group_level": group_level(y, calibrated, groups, positive, threshold or 0.5),
        **({"bilateral": bilateral} if bilateral else {}),
    }


def joined_classes(probs: np.ndarray, merge: np.ndarray | None) -> np.ndarray:
    """Class probabilities summed into the data's classes (`merge`: model classes x data
    classes, a 1 where the data's class takes in the model's; None: as they are)."""
    return probs if merge is None else probs @ merge


def write_predictions(
    out,
    manifest,
    rows,
    y,
    probs,
    pred,
    classes,
    threshold,
    name: str = "predictions.csv",
    extra: dict[str, Any] | None = None,
) -> None:
    frame = pd.DataFrame({"path": manifest.frame["path"].iloc[rows].to_numpy()})
    frame["group_id"] = manifest.frame["group_id"].iloc[rows].to_numpy()
    frame["label"] = [classes[i] for i in y]
    for k, c in enumerate(classes):
        frame[f"p_{c}"] = probs[:, k]
    frame["prediction"] = [classes[i] for i in pred]
    frame["threshold"] = threshold
    for column, values in (extra or {}).items():
        frame[column] = values
    frame.to_csv(out / name, index=False)


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
                "as trained": ((y == positive).astype(int), raw),
                "calibrated": pos_curve[classes[positive]],
            },
            p / "reliability.png",
            f"Reliability, P({classes[positive]})",
        ),
        "predictions": image_plots.prediction_grid(
            pixels, y, pred, probs, classes, p / "predictions.png"
        ),
    }


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
    class_map: dict[str, str] | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """A bundle on any supported dataset (including data never seen in training), at its
    stored temperature and operating point: nothing is refitted. `class_map`: the model's
    class names as the data names them (`{"idc": "malignant"}`: an IDC patch model on
    BreakHis), where they differ. `device`: where the network runs (`breastcad.devices`)."""
    keep_freed_memory()
    from breastcad.data.cache import ImageCache
    from breastcad.evaluation.report import write_report
    from breastcad.predict import Predictor

    out = Path(out)
    refuse_training_run_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    predictor = Predictor.from_bundle(bundle_dir, device=device)
    if predictor.kind != "image":
        raise DataError(f"a {predictor.kind} bundle; evaluate it with --data", bundle_dir)
    class_map = dict(class_map or {})
    scanned = scan(dataset, root, **(options or {}))
    manifest, merge, positive = model_classes(scanned, predictor, root, class_map)
    everything = manifest
    manifest, split_groups, split_settings = _split_part(manifest, split_file, partition)
    pre = predictor.bundle.manifest["preprocessing"]
    config = PreprocessConfig(size=pre["size"], resize=pre["resize"], channels=pre["channels"])
    hashed = predictor.bundle.manifest.get("training_hashes") is not None
    cache = ImageCache.build(manifest, config, cache_dir, jobs, progress, facts=hashed)
    rows, logits, y, groups = _answers(predictor, manifest, cache, split_groups)
    evaluated = manifest.subset(cache.readable)
    probs = joined_classes(softmax(logits, predictor.temperature, predictor.prior_shift), merge)
    matched = match_training(predictor, manifest, rows, jobs, progress, cache_dir)
    overlap, seen = _training_overlap(
        matched, predictor, everything, evaluated, Path(bundle_dir), split_file is not None,
        (y, probs, groups, positive, n_boot),
    )  # fmt: skip
    partners = contralateral(manifest.frame.iloc[rows])
    scored = (logits, y, groups, manifest.classes, positive)
    evaluation = _scores(predictor, scored, partners, merge, n_boot)
    net, pixels = predictor.network, cache.pixels[rows]
    where = _where_it_looks(net, evaluated, config, pixels, groups, n_boot, progress)
    if where is not None:
        evaluation["localisation"] = where
    pred = decide(probs, positive, predictor.threshold)
    marks = {} if matched is None else {"seen_in_training": matched[0]}
    write_predictions(
        out, manifest, rows, y, probs, pred, manifest.classes, predictor.threshold, extra=marks
    )
    if merge is not None:  # log-probabilities of the data's classes: softmax gives them back
        logits = np.log(np.clip(joined_classes(softmax(logits), merge), 1e-300, None))
    plots = evaluation_plots(out, evaluation, logits, y, probs, pred, manifest.classes, pixels)
    data = {
        "dataset": dataset,
        "root": str(root),
        "options": dict(options or {}),
        "counts": {"evaluated": evaluated.class_counts()},
        "problems": manifest.problems + [f"{p}: {m}" for p, m in cache.problems.items()],
        "split": split_settings,
        **({"class_map": class_map} if class_map else {}),
        **({"seen_in_training": seen} if seen else {}),
        "training_overlap": overlap,
    }
    results = _bundle_results(predictor, manifest, data, evaluation, positive)
    results["plots"] = {k: str(Path(v).relative_to(out)) for k, v in plots.items() if v}
    (out / "results.json").write_text(json.dumps(to_jsonable(results), indent=1))
    write_report(out)
    return results


def _scores(
    predictor: Predictor,
    scored: tuple[np.ndarray, np.ndarray, np.ndarray, list[str], int],
    partners: np.ndarray,
    merge: np.ndarray | None,
    n_boot: int,
) -> dict[str, Any]:
    """`evaluate_predictions` of `scored` (logits, labels, groups, classes, positive class)
    at the bundle's temperature, prior shift, threshold and bilateral fit (each breast
    decided against the other as its training run chose)."""
    logits, y, groups, classes, positive = scored
    evaluation = evaluate_predictions(
        logits, y, groups, classes, positive, predictor.temperature, predictor.threshold,
        n_boot, 0, partners, predictor.prior_shift, predictor.bilateral, merge,
    )  # fmt: skip
    fitted_on = predictor.bundle.manifest.get("calibration_fitted_on", "the validation part")
    evaluation["calibration"]["fitted_on"] = f"{fitted_on} of the bundle's training run"
    return evaluation


def _training_overlap(
    matched: tuple | None,
    predictor: Predictor,
    everything: Manifest,
    evaluated: Manifest,
    bundle_dir: Path,
    split_given: bool,
    scored: tuple,
) -> tuple[dict[str, Any], str]:
    """What the evaluation knows of the bundle's training images among those it scored (the
    record for results.json, and the warning to print, or ""): image by image where the
    bundle keeps their hashes (`matched`), else only whether this is the very data its run
    read. `scored`: labels, probabilities, groups, positive class and bootstrap rounds."""
    if matched is None:
        seen = seen_in_training(predictor, everything, evaluated, bundle_dir, not split_given)
        return {"checked": False}, seen
    y, probs, groups, positive, n_boot = scored
    overlap = overlap_record(*matched, y, probs, groups, evaluated.classes, positive, n_boot)
    hint = "" if split_given else run_test_hint(predictor, everything, bundle_dir)
    return overlap, overlap_warning(overlap, hint)


def _where_it_looks(net, evaluated, config, pixels, groups, n_boot: int, progress: bool):
    """A lesion-supervised network's localisation on data with lesion annotations
    (`lesion_localisation`), else None."""
    if not (net.recipe.lesion_masks and has_lesion_annotations(evaluated)):
        return None
    background = evaluated.classes[net.arch["background"]]
    masks, _ = lesion_masks(evaluated, config, background, progress)
    return lesion_localisation(net, pixels, masks, groups, n_boot)


def _answers(predictor, manifest, cache, split_groups: dict[str, str]):
    """The readable rows of the cache, the bundle's logits of their images (in batches that fit
    memory), their labels and their groups (the split's where given, else the manifest's)."""
    rows = np.flatnonzero(cache.readable)
    if not len(rows):
        raise DataError("no readable image to evaluate", manifest.root)
    step = predictor.batch_that_fits(64)  # a full-resolution mammogram network: fewer
    logits = np.concatenate(
        [
            predictor.predict_logits(cache.pixels[rows[i : i + step]])
            for i in range(0, len(rows), step)
        ]
    )
    lookup = {c: i for i, c in enumerate(manifest.classes)}
    y = manifest.frame["label"].iloc[rows].map(lookup).to_numpy()
    paths = manifest.frame["path"].iloc[rows]
    groups = paths.map(split_groups) if split_groups else manifest.frame["group_id"].iloc[rows]
    return rows, logits, y, groups.astype(str).to_numpy()


def _split_part(manifest, split_file: Path | None, partition: str):
    """The rows of `partition` of `split_file` (all rows without one), the groups the split
    kept together (near-duplicate clusters too, as in the run; empty without a split file)
    and the split settings to record."""
    from breastcad.data.splits import load_split

    if split_file is None:
        return manifest, {}, {}
    chosen = load_split(split_file, manifest)
    split_groups = dict(zip(chosen["path"], chosen["split_group"].astype(str), strict=True))
    keep = set(chosen.loc[chosen["partition"] == partition, "path"])
    if not keep:
        parts = ", ".join(sorted(chosen["partition"].unique()))
        raise DataError(
            f"no image in its '{partition}' part (its parts: {parts}); choose one with --partition",
            split_file,
        )
    manifest = manifest.subset(manifest.frame["path"].isin(keep))
    return manifest, split_groups, {"split_file": str(split_file), "partition": partition}


def _bundle_results(
    predictor, manifest, data: dict[str, Any], evaluation: dict, positive: int
) -> dict:
    """The results record of a bundle's evaluation (`data`: what was evaluated)."""
    bm = predictor.bundle.manifest
    modality = MODALITY.get(data["dataset"], "image")
    other = data_modality_warning(predictor.modality, modality)
    return {
        "kind": "image",
        "title": f"breastcad: bundle {predictor.bundle.model_id} evaluated on {data['dataset']}",
        "run": run_info(0),
        "data": {
            **{k: data[k] for k in ("dataset", "root", "options")},
            "modality": modality,
            **({"modality_warning": other} if other else {}),
            "manifest_fingerprint": manifest.fingerprint(),
            "classes": manifest.classes,
            "positive": manifest.classes[positive],
            **{
                k: data[k]
                for k in (
                    "counts",
                    "problems",
                    "split",
                    "class_map",
                    "seen_in_training",
                    "training_overlap",
                )
                if k in data
            },
            "preprocessing": bm["preprocessing"],
        },
        "model": {
            "name": bm["model"]["name"],
            "arch": bm["model"]["arch"],
            "init": bm["model"]["init"],
            "trained_on_modality": predictor.modality,
            "test_time_augmentation": predictor.tta,
            "inference_device": device_name(predictor.device),
        },
        "operating_point": {
            "policy": bm["threshold"].get("policy", ""),
            "threshold": predictor.threshold,
            "chosen_on": "the bundle's training run",
            "validation": bm["threshold"].get("validation"),
            **({"bilateral": predictor.bilateral} if predictor.bilateral else {}),
        },
        "test": evaluation,
    }
