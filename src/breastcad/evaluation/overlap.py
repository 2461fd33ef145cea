"""Is a bundle being evaluated on images it learnt from? Then its figures overstate how it does
on new data, and `evaluate` says so first (terminal and report), with how many of the images
and the figures without them.

A bundle that keeps its training images' hashes (`data.fingerprints`) is checked image by
image, whatever the data's layout: a subset of the training data, a copy under other names, a
re-encoded or near-duplicate image. One without them (trained with `--no-training-hashes`, or
before bundles kept them) is recognised only as the very data its run read (`seen_in_training`).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import numpy as np

from breastcad.errors import BreastcadError
from breastcad.evaluation.classification import group_bootstrap

_WHY = (
    "trained it or chose its threshold and calibration, so these figures overstate how it "
    "does on new data"
)


def match_training(
    predictor, manifest, rows: np.ndarray, jobs: int, progress: bool, cache_dir: Path | None
) -> tuple[np.ndarray, int | None, int] | None:
    """Per evaluated image (`rows` of `manifest`): "same" (the pixels of an image the bundle
    learnt from), "near" (a near duplicate of one) or ""; the near-duplicate distance and the
    number of training hashes. None for a bundle without training hashes."""
    stored = predictor.bundle.training_hashes()
    if stored is None:
        return None
    hashes, near = stored
    paths = manifest.frame["path"].iloc[rows].tolist()
    return _match(paths, hashes, near, jobs, progress, cache_dir), near, len(hashes["pixels"])


def overlap_of_test_part(
    paths: list[str],
    training: tuple[dict[str, np.ndarray], int | None],
    jobs: int,
    progress: bool,
    cache_dir: Path | None,
) -> dict[str, Any]:
    """A training run's test images (`paths`) against the hashes of its own training and
    validation images: none should be one of them; where some are (a random or an official
    split made image by image, `duplicate_distance` None), the run's test figures are not
    those of new data, and its report and terminal say so."""
    hashes, near = training
    return _counts(_match(paths, hashes, near, jobs, progress, cache_dir), near)


def _match(paths, hashes, near, jobs, progress, cache_dir) -> np.ndarray:
    """`data.fingerprints.match` of the images at `paths` (hashed from the audit's cache)."""
    from breastcad.data import fingerprints

    return fingerprints.match(
        fingerprints.fingerprints(paths, jobs, progress, cache_dir), hashes, near
    )


def _counts(matched: np.ndarray, near: int | None) -> dict[str, Any]:
    """How many of the `matched` images have the same pixels as, or are near duplicates of,
    a training image."""
    return {
        "images": len(matched),
        "same_pixels": int((matched == "same").sum()),
        "near_duplicates": int((matched == "near").sum()),
        "near_duplicate_distance": near,
    }


def leak_warning(results: dict[str, Any], run: Path | str = "<run>") -> str | None:
    """What `overlap_of_test_part` found for a training run's `results`, said after "the test
    part is not independent of training: ", with the command that gives the figures without
    those images (`run`: the run's folder); None where the test part is clean."""
    record = results.get("test_overlap")
    if not record or not record["same_pixels"] + record["near_duplicates"]:
        return None
    seen = record["same_pixels"] + record["near_duplicates"]
    data, folder = results["data"], str(run)
    words = ["breastcad", "evaluate", "--model", f"{folder}/bundle"]
    words += ["--dataset", data["dataset"], "--root", str(data["root"])]
    command = shlex.join([*words, "--split", f"{folder}/splits/split.json", "--partition", "test"])
    return (
        f"{seen} of its {record['images']} images are images the network learnt from or was "
        f"calibrated on ({_kinds(record)}), as a split made image by image allows, so the test "
        f"figures may overstate how it does on new data; the figures without them: {command}"
    )


def overlap_record(
    matched: np.ndarray,
    near: int | None,
    stored: int,
    y: np.ndarray,
    probs: np.ndarray,
    groups: np.ndarray,
    classes: list[str],
    positive: int,
    n_boot: int = 1000,
) -> dict[str, Any]:
    """What the check found, with the argmax accuracy and macro AUC of the images the bundle
    did not learn from (where there are both kinds), with 95% group-bootstrap intervals."""
    seen = matched != ""
    record: dict[str, Any] = {"checked": True, "training_hashes": stored, **_counts(matched, near)}
    if seen.any() and not seen.all():
        rest = ~seen
        figures = group_bootstrap(
            y[rest], probs[rest], groups[rest], classes, positive, None, n_boot, 0
        )
        shown = ("accuracy", "macro_auc")
        record["without_them"] = {
            "images": int(rest.sum()),
            **{k: figures[k]["value"] for k in shown},
            "ci": {k: [figures[k]["ci_low"], figures[k]["ci_high"]] for k in shown},
        }
    return record


def overlap_warning(record: dict[str, Any], hint: str = "") -> str | None:
    """`seen_in_training` of a checked evaluation (see `overlap_record`), or None."""
    seen = record["same_pixels"] + record["near_duplicates"]
    if not seen:
        return None
    text = (
        f"images the bundle learnt from: {seen} of these {record['images']} images "
        f"({_kinds(record)}) {_WHY}"
    )
    other = record.get("without_them")
    if other:
        text += (
            f"; the other {other['images']} alone: argmax accuracy "
            f"{_with_ci(other, 'accuracy')}, macro AUC {_with_ci(other, 'macro_auc')}"
        )
    return text + "; predictions.csv marks them (seen_in_training)" + hint


def _kinds(record: dict[str, Any]) -> str:
    """How many matched by their pixels and, where looked for, as near duplicates."""
    near = record["near_duplicate_distance"]
    kinds = f"{record['same_pixels']} the same pixels"
    if near is not None:
        kinds += f", {record['near_duplicates']} near duplicates (pHash within {near} bits)"
    return kinds


def _with_ci(figures: dict[str, Any], key: str) -> str:
    value, (low, high) = figures[key], figures.get("ci", {}).get(key, (None, None))
    if value is None or value != value:
        return "n/a"
    if low is None or low != low:
        return f"{value:.3f}"
    return f"{value:.3f} ({low:.3f}-{high:.3f})"


def run_test_hint(predictor, data, bundle_dir: Path) -> str:
    """Where `data` is the very data the bundle's run read and its split file is beside the
    bundle: how to evaluate that run's test part alone."""
    run_split = _run_split(bundle_dir)
    if not _same_data(predictor, data) or not run_split.is_file():
        return ""
    return f" (its run's test part alone: --split {run_split} --partition test)"


def _run_split(bundle_dir: Path) -> Path:
    """The split file of the run a bundle came from (beside its `bundle/` folder)."""
    return Path(bundle_dir).parent / "splits" / "split.json"


def _same_data(predictor, data) -> bool:
    trained = predictor.bundle.manifest.get("trained_on") or {}
    return data.fingerprint() == trained.get("manifest_fingerprint") or (
        data.layout_fingerprint() == trained.get("layout_fingerprint")
    )


def seen_in_training(
    predictor, data, evaluated, bundle_dir: Path, whole: bool = True
) -> str | None:
    """For a bundle without training hashes: why the figures would overstate how it does on
    new data, or None. Only for the very data its run trained on (`data`, as read: same files,
    labels and groups, by the manifest's fingerprint, or the layout's for a copy elsewhere):
    how many `evaluated` images its run trained or calibrated on, by its split file beside the
    bundle (`<run>/splits/split.json`); without that file, the `whole` data evaluated is said
    to hold them (a part of it: not known). Other data that overlaps is not recognised."""
    from breastcad.data.splits import load_split

    if not _same_data(predictor, data):
        return None
    trained = predictor.bundle.manifest.get("trained_on") or {}
    run_split = _run_split(bundle_dir)
    try:
        split = load_split(run_split, data)
    except (BreastcadError, OSError, ValueError, KeyError):
        if not whole:  # a part of some split: which images, not known
            return None
        counts = trained.get("counts") or {}
        learnt = sum(sum(counts.get(p, {}).values()) for p in ("train", "val"))
        return f"the data the bundle was trained on: {learnt} of its images {_WHY}"
    learnt = set(split.loc[split["partition"].isin(["train", "val"]), "path"])
    seen = int(evaluated.frame["path"].isin(learnt).sum())
    if not seen:
        return None
    return (
        f"the data the bundle was trained on: {seen} of these {len(evaluated)} images {_WHY} "
        f"(its run's test part alone: --split {run_split} --partition test)"
    )
