"""Leak-free splits: stratified by label, grouped by patient (or woman, slide) and by
near-duplicate cluster, so that no group and no duplicate pair spans two partitions.

Official splits (BreastMNIST) are kept as released. Splits are written as JSON with the
manifest fingerprint and re-loaded by path.

Example:
    >>> groups = split_groups(manifest, audit_result)  # doctest: +SKIP
    >>> parts = train_val_test(manifest.frame["label"], groups, test_size=0.2, val_size=0.1)
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from breastcad.data.duplicates import SAME_SCENE_CORRELATION
from breastcad.data.manifest import Manifest, relative_path
from breastcad.errors import ConfigError, DataError


def union_find(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected components of `n` items linked by `pairs` (k x 2): a component id per item."""
    parent = np.arange(n)

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in np.asarray(pairs, dtype=np.int64).reshape(-1, 2):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([find(i) for i in range(n)])


def split_groups(manifest: Manifest, duplicate_pairs: np.ndarray | None = None) -> np.ndarray:
    """The unit of splitting per row: rows sharing a `group_id` or linked by a duplicate pair
    (directly or through others) share a group."""
    codes = pd.factorize(manifest.frame["group_id"])[0]
    n = len(codes)
    same_group = np.stack([np.arange(n), codes + n], axis=1)  # link each row to its group node
    links = [same_group]
    if duplicate_pairs is not None and len(duplicate_pairs):
        links.append(np.asarray(duplicate_pairs, dtype=np.int64)[:, :2])
    return union_find(n + codes.max() + 1, np.concatenate(links))[:n]


def _first_fold(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    n_splits = max(2, round(1 / fraction))
    if len(np.unique(groups)) < n_splits:
        raise DataError(
            f"{len(np.unique(groups))} groups (patients or duplicate clusters) are too few for "
            f"a {fraction:.0%} partition; use a larger fraction, --val-size 0, or --folds"
        )
    largest = np.unique(labels, return_counts=True)[1].max()
    if largest < n_splits:  # sklearn refuses this; a smaller class alone only thins the parts
        raise DataError(
            f"every class has fewer than {n_splits} images (at most {largest}), too few for a "
            f"{fraction:.0%} partition stratified by class; use a larger fraction or more data"
        )
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # "the least populated class has only k members": the partition's class counts are
        # reported with every split, and a check above names a split that cannot be made
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        _, held = next(cv.split(np.zeros(len(labels)), labels, groups))
    return held


def train_val_test(
    labels: pd.Series | np.ndarray,
    groups: np.ndarray,
    test_size: float = 0.2,
    val_size: float = 0.1,
    seed: int = 0,
) -> np.ndarray:
    """'train' / 'val' / 'test' per row; stratified, no group in two partitions."""
    labels = np.asarray(labels)
    parts = np.full(len(labels), "train", dtype=object)
    test = _first_fold(labels, groups, test_size, seed)
    parts[test] = "test"
    if val_size > 0:
        rest = np.flatnonzero(parts == "train")
        val = _first_fold(labels[rest], groups[rest], val_size / (1 - test_size), seed + 1)
        parts[rest[val]] = "val"
    return parts


def check_fractions(test_size: float, val_size: float, folds: int | None) -> None:
    """Fractions that leave a training part, or at least two folds; else a `ConfigError`."""
    if folds is not None:
        if folds < 2:
            raise ConfigError(f"--folds needs 2 or more folds, got {folds}")
        return
    if not 0 < test_size < 1 or not 0 <= val_size < 1:
        raise ConfigError(
            f"the test fraction must lie between 0 and 1 and the validation fraction in [0, 1), "
            f"got {test_size} and {val_size}"
        )
    if test_size + val_size >= 1:
        raise ConfigError(
            f"test ({test_size}) and validation ({val_size}) fractions add up to "
            f"{test_size + val_size:g}, which leaves nothing to train on"
        )


def kfold(
    labels: pd.Series | np.ndarray, groups: np.ndarray, k: int = 5, seed: int = 0
) -> np.ndarray:
    """A fold number per row for stratified group k-fold."""
    labels = np.asarray(labels)
    folds = np.zeros(len(labels), dtype=int)
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    try:
        for fold, (_, test) in enumerate(cv.split(np.zeros(len(labels)), labels, groups)):
            folds[test] = fold
    except ValueError as exc:  # more folds than groups
        raise DataError(f"{k} folds: {exc}") from None
    return folds


def keeps_official_split(manifest: Manifest, official: bool) -> bool:
    """Whether a split takes the dataset's own partitions (asked for, and the data has them)."""
    return official and "official_split" in manifest.frame.columns


def make_split(
    manifest: Manifest,
    duplicate_pairs: np.ndarray | None = None,
    test_size: float = 0.2,
    val_size: float = 0.1,
    folds: int | None = None,
    seed: int = 0,
    official: bool = True,
) -> pd.DataFrame:
    """Rows with `partition` (and `fold` for k-fold) and the merged `split_group`."""
    check_fractions(test_size, val_size, folds)
    frame = manifest.frame[["path", "label", "group_id"]].copy()
    groups = split_groups(manifest, duplicate_pairs)
    frame["split_group"] = groups
    if keeps_official_split(manifest, official):
        frame["partition"] = manifest.frame["official_split"].to_numpy()
    elif folds:
        frame["fold"] = kfold(frame["label"], groups, folds, seed)
        frame["partition"] = "fold-" + frame["fold"].astype(str)
    else:
        frame["partition"] = train_val_test(frame["label"], groups, test_size, val_size, seed)
    return frame


def pairs_to_merge(manifest: Manifest, pairs: pd.DataFrame) -> np.ndarray:
    """Duplicate pairs a split must keep together: all near duplicates when the data has no
    patient ids (BUSI); only exact duplicates when it has (near-duplicate hashes of mammograms
    of different women collide on the breast silhouette, so patients are the better unit)."""
    chosen = pairs if not manifest.patient_groups else pairs[pairs["exact"].astype(bool)]
    return chosen[["i", "j"]].to_numpy(dtype=np.int64)


def split_dataset(
    manifest: Manifest,
    test_size: float = 0.2,
    val_size: float = 0.1,
    folds: int | None = None,
    seed: int = 0,
    official: bool = True,
    duplicate_distance: int | None = 4,
    jobs: int = 2,
    progress: bool = True,
    cache_dir: Path | None = None,
    correlation: float | None = SAME_SCENE_CORRELATION,
) -> tuple[pd.DataFrame, list[str], dict[str, Any]]:
    """The whole recipe: audit for duplicates (unless `duplicate_distance` is None), merge the
    pairs that must stay together, split, drop unreadable files, check for leaks.

    Returns the split (rows of readable files, aligned with `manifest.frame` by `path`), the
    'path: problem' lines of skipped files, and the settings to save with it."""
    from breastcad.data.audit import audit, near_duplicate_rule

    if duplicate_distance is not None and not 0 <= duplicate_distance < 64:
        raise ConfigError(
            f"the near-duplicate distance counts differing bits of a 64-bit hash: 0 to 63, got "
            f"{duplicate_distance}"
        )
    check_fractions(test_size, val_size, folds)
    pairs, skipped = None, []
    readable = np.ones(len(manifest), dtype=bool)
    if duplicate_distance is not None:
        result = audit(manifest, duplicate_distance, jobs, progress, cache_dir, True, correlation)
        pairs = pairs_to_merge(manifest, result.pairs)
        readable = result.readable
        bad = result.records.loc[~readable, ["path", "error"]]
        skipped = [f"{path}: {problem}" for path, problem in bad.itertuples(index=False)]
    try:
        split = make_split(manifest, pairs, test_size, val_size, folds, seed, official)[readable]
    except DataError as exc:  # too little data for the partitions: say which data
        raise DataError(f"{manifest.root}: {exc}") from None
    if not keeps_official_split(manifest, official):
        check_no_leak(split)  # an official split is the dataset's: kept, its leaks counted
    settings = {
        "test_size": test_size,
        "val_size": val_size,
        "folds": folds,
        "seed": seed,
        "duplicate_distance": duplicate_distance,
        "duplicate_correlation": None if duplicate_distance is None else correlation,
        "duplicate_rule": None if duplicate_distance is None else near_duplicate_rule(correlation),
        "official": official,
    }
    return split, skipped, settings


def shared_with_training(split: pd.DataFrame, part: str = "test") -> int:
    """Images of `part` whose split group (patient or near-duplicate cluster) also has images
    in another partition: 0 for breastcad's own splits, not for some official ones."""
    spread = split.groupby("split_group")["partition"].nunique()
    straddling = set(spread.index[spread > 1])
    return int((split["split_group"].isin(straddling) & (split["partition"] == part)).sum())


def check_no_leak(split: pd.DataFrame) -> None:
    """Raise if any split group appears in two partitions."""
    spread = split.groupby("split_group")["partition"].nunique()
    if (spread > 1).any():
        raise DataError(f"{int((spread > 1).sum())} groups span two partitions")


def save_split(
    split: pd.DataFrame, path: Path, manifest: Manifest, settings: dict[str, Any]
) -> None:
    counts = split.groupby(["partition", "label"]).size().unstack(fill_value=0)
    payload = {
        "dataset": manifest.dataset,
        "root": str(manifest.root),
        "manifest_fingerprint": manifest.fingerprint(),
        "relative_layout_fingerprint": manifest.layout_fingerprint(),
        "settings": settings,
        "counts": {p: {k: int(v) for k, v in row.items()} for p, row in counts.iterrows()},
        "groups_per_partition": {
            k: int(v) for k, v in split.groupby("partition")["split_group"].nunique().items()
        },
        "rows": split[["path", "label", "group_id", "split_group", "partition"]].to_dict("list"),
    }
    Path(path).write_text(json.dumps(payload, default=int))


def load_split(path: Path, manifest: Manifest | None = None) -> pd.DataFrame:
    """A saved split; with `manifest`, refuse one made from other data and give its rows the
    manifest's paths. Files copied or extracted again, elsewhere or under another spelling of
    the root (same relative paths, labels, groups and sizes; new modification times) are the
    same data for a split."""
    try:
        payload = json.loads(Path(path).read_text())
        rows = pd.DataFrame(payload["rows"])
        fingerprint = payload["manifest_fingerprint"]
        missing = {"path", "partition"} - set(rows.columns)
        if missing:
            raise KeyError(f"no {', '.join(sorted(missing))} in its rows")
    except FileNotFoundError:
        raise ConfigError(f"{path}: split file not found") from None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{path}: not a breastcad split file (from `data split` or a run's "
            f"splits/split.json): {exc.__class__.__name__} {exc}"
        ) from None
    if manifest is None:
        return rows
    if (
        fingerprint != manifest.fingerprint()
        and payload.get("relative_layout_fingerprint") != manifest.layout_fingerprint()
    ):
        why = (
            "relative paths, labels, groups or file sizes differ"
            if "relative_layout_fingerprint" in payload
            else "or from a copy of it elsewhere: this older split file records where the "
            "files lay and when they were written; make the split again"
        )
        raise ConfigError(f"{path}: made from other data ({why})")
    here = dict(zip(manifest.relative_paths(), manifest.frame["path"], strict=True))
    saved_root = payload.get("root", str(manifest.root))
    rows["path"] = [here.get(relative_path(p, saved_root), p) for p in rows["path"]]
    return rows
