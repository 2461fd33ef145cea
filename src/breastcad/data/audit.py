"""Audit a manifest: unreadable files, sizes and modes, exact and near duplicates (and those
whose labels disagree), colour marks on grayscale modalities, class balance and samples per
group.

Colour marks: in ultrasound and mammography the image itself is gray, so pixels whose channels
disagree are drawn on top (calipers, arrows, Doppler boxes, annotations). If they are more
common in one class, a model can learn the marks instead of the anatomy; the audit counts
them per class so that a shortcut is visible before training.

Every image is decoded once, in parallel, with a progress bar. Exact duplicates share the
sha1 of their decoded pixels. Near duplicates (`near_duplicate_rule`) are within `max_distance`
bits of a 64-bit DCT perceptual hash (`breastcad.data.duplicates`) of the whole image or of
its centred square, or, where the data has no patient ids, their centred squares' 64 px
thumbnails correlate at `SAME_SCENE_CORRELATION` or more. The centred square finds frames
cropped a little differently and square cuts of wider images; the correlation finds frames of
one scan a moment apart or with and without calipers, which no hash pairs. Set on BUSI by
eye: every one of the 30 pairs at 0.93 or more that the hashes miss shows one lesion twice
(one of them filed as benign and as malignant), while below it unrelated images begin to
appear (0.926). A thumbnail is kept only of images at least 64 px a side: enlarged, any two
small images correlate. Patients, where known, are the better unit: there images of
different women correlate on the breast's outline, and only exact duplicates are merged.

Each image is decoded and described once (`breastcad.data.inspection`, with its cache).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from breastcad.data.cache import default_cache_dir
from breastcad.data.duplicates import (
    SAME_SCENE_CORRELATION,
    THUMBNAIL,
    correlated_pairs,
    hamming_pairs,
)
from breastcad.data.inspection import (
    COLOUR_MIN_FRACTION,
    COLOUR_TOLERANCE,
    HASHES,
    AuditCache,
    inspect_all,
)
from breastcad.data.manifest import Manifest
from breastcad.errors import ConfigError


def near_duplicate_rule(correlation: float | None = SAME_SCENE_CORRELATION) -> str:
    """What pairs near duplicates (what an audit's report, a split's settings and a run's
    report say); `correlation` None: the pHashes only."""
    rule = "pHash of the whole image or of its centred square within the distance"
    if correlation is None:
        return rule
    return (
        f"{rule}, or, where the data has no patient ids, {THUMBNAIL} px thumbnails of the "
        f"centred squares correlating at >= {correlation:g}"
    )


@dataclass
class AuditResult:
    """What the audit found, with the per-image records and duplicate pairs."""

    manifest: Manifest
    records: pd.DataFrame
    pairs: pd.DataFrame
    max_distance: int
    summary: dict[str, Any] = field(default_factory=dict)
    correlation: float | None = None

    @property
    def readable(self) -> np.ndarray:
        return self.records["readable"].to_numpy(dtype=bool)


def audit(
    manifest: Manifest,
    max_distance: int = 4,
    jobs: int = 2,
    progress: bool = True,
    cache_dir: Path | None = None,
    cache: bool = True,
    correlation: float | None = SAME_SCENE_CORRELATION,
) -> AuditResult:
    """Decode and check every sample of `manifest` (see module docstring); facts already
    found for unchanged files come from the cache in `cache_dir` (default: the decode cache's
    folder) unless `cache` is False. Thumbnails correlating at `correlation` or more pair
    images too, where the data has no patient ids (None: only the pHashes)."""
    if correlation is not None and not 0 < correlation <= 1:
        raise ConfigError(f"a thumbnail correlation is above 0 and at most 1, got {correlation}")
    store = AuditCache(Path(cache_dir) if cache_dir else default_cache_dir()) if cache else None
    info = inspect_all(manifest.frame["path"].tolist(), jobs, progress, store)
    thumbs = info.pop("thumbnail") if "thumbnail" in info else pd.Series([None] * len(info))
    records = pd.concat([manifest.frame.reset_index(drop=True), info], axis=1)
    ok = records["readable"].to_numpy(dtype=bool)
    hashes = {k: records[k].to_numpy() for k in HASHES}
    index = np.flatnonzero(ok)
    found = near_pairs(*(h[ok].astype(np.uint64) for h in hashes.values()), max_distance)
    i, j, by = index[found[:, 0]], index[found[:, 1]], found[:, 3]
    compared = correlation is not None and not manifest.patient_groups
    pixels = _thumbnails(thumbs.to_numpy(), ok if compared else np.isin(np.arange(len(ok)), [i, j]))
    if compared:
        i, j, by = _with_correlated(i, j, by, pixels, correlation)
    labels, exact = records["label"].to_numpy(), records["exact_hash"].to_numpy()
    groups = records["group_id"].to_numpy()
    pairs = pd.DataFrame(
        {
            "i": i,
            "j": j,
            "distance": _bits(hashes, i, j),
            "correlation": _pair_correlation(pixels, i, j),
            "found_by": np.array(FOUND_BY, dtype=object)[by.astype(int)],
            "exact": exact[i] == exact[j],
            "label_conflict": labels[i] != labels[j],
            "same_group": groups[i] == groups[j],
        }
    )
    result = AuditResult(manifest, records, pairs, max_distance, correlation=correlation)
    result.summary = _summary(result)
    return result


FOUND_BY = ("phash", "centre_phash", "correlation")
"""What paired two images in `AuditResult.pairs` (the first that did, in this order)."""


def near_pairs(whole: np.ndarray, centre: np.ndarray, max_distance: int) -> np.ndarray:
    """Pairs (i < j, distance, by) of images within `max_distance` bits by the pHash of the
    whole image (by 0) or, where not, of the centred square (1; its distance), sorted by i
    then j. A square image's centred square is itself, so a square cut of a wider image
    pairs with it too."""
    by_whole = hamming_pairs(whole, max_distance)
    by_centre = hamming_pairs(centre, max_distance)
    n = max(len(whole), 1)
    new = ~np.isin(by_centre[:, 0] * n + by_centre[:, 1], by_whole[:, 0] * n + by_whole[:, 1])
    found = np.concatenate(
        [
            np.column_stack([by_whole, np.zeros(len(by_whole), np.int64)]),
            np.column_stack([by_centre[new], np.ones(int(new.sum()), np.int64)]),
        ]
    ).astype(np.int64)
    return found[np.lexsort((found[:, 1], found[:, 0]))]


def _with_correlated(
    i: np.ndarray, j: np.ndarray, by: np.ndarray, pixels: tuple, correlation: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs (i, j, by) and those whose thumbnails (`pixels`: rows, thumbnails) correlate
    at `correlation` or more that they lack (by 2), sorted by i then j."""
    rows, thumbs = pixels
    alike = correlated_pairs(thumbs, correlation) if len(thumbs) else np.zeros((0, 3))
    ci, cj = rows[alike[:, 0].astype(int)], rows[alike[:, 1].astype(int)]
    n = int(max(rows.max(initial=0), i.max(initial=0), j.max(initial=0))) + 1
    new = ~np.isin(ci * n + cj, i * n + j)
    i, j = np.r_[i, ci[new]], np.r_[j, cj[new]]
    by = np.r_[by, np.full(int(new.sum()), 2)]
    order = np.lexsort((j, i))
    return i[order], j[order], by[order]


def _thumbnails(encoded: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Of the `wanted` rows (a mask), those that have a thumbnail (readable and large enough)
    and their pixels (rows x THUMBNAIL**2, uint8)."""
    rows = np.array([k for k in np.flatnonzero(wanted) if isinstance(encoded[k], str)], dtype=int)
    pixels = [np.frombuffer(base64.b64decode(encoded[k]), np.uint8) for k in rows]
    size = THUMBNAIL * THUMBNAIL
    return rows, np.stack(pixels) if pixels else np.zeros((0, size), np.uint8)


def _pair_correlation(
    pixels: tuple[np.ndarray, np.ndarray], i: np.ndarray, j: np.ndarray
) -> np.ndarray:
    """Each pair's thumbnail correlation (NaN where either image has no thumbnail)."""
    rows, thumbs = pixels
    where = {int(r): k for k, r in enumerate(rows)}
    out = np.full(len(i), np.nan)
    for n, (a, b) in enumerate(zip(i.tolist(), j.tolist(), strict=True)):
        if a in where and b in where:
            x = thumbs[[where[a], where[b]]].astype(np.float64)
            if x.std(axis=1).min() > 0:
                out[n] = np.corrcoef(x)[0, 1]
    return out


def _bits(hashes: dict[str, np.ndarray], i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Each pair's pHash distance in bits: the nearer of the whole image's and the centred
    square's."""
    if not len(i):
        return np.zeros(0, dtype=np.int64)
    a, b = ([h[k].astype(np.uint64) for h in hashes.values()] for k in (i, j))
    return np.minimum(*(np.bitwise_count(x ^ y) for x, y in zip(a, b, strict=True)))


def _summary(result: AuditResult) -> dict[str, Any]:
    rec, pairs = result.records, result.pairs
    ok = rec[rec["readable"]]
    shapes = ok.groupby(["height", "width", "channels"]).size().sort_values(ascending=False)
    common = shapes.index[0] if len(shapes) else None
    exact_groups = ok.groupby("exact_hash")["label"].agg(["size", "nunique"])
    per_group = rec.groupby("group_id").size()
    marked = ok[ok["colour_fraction"] >= COLOUR_MIN_FRACTION]
    return {
        "dataset": result.manifest.dataset,
        "root": str(result.manifest.root),
        "n_samples": len(rec),
        "manifest_fingerprint": result.manifest.fingerprint(),
        "adapter_problems": result.manifest.problems,
        "unreadable": [
            {"path": p, "problem": e}
            for p, e in rec.loc[~rec["readable"], ["path", "error"]].itertuples(index=False)
        ],
        "class_counts": result.manifest.class_counts(),
        "shapes": {
            f"{int(h)}x{int(w)}x{int(c)}": int(n) for (h, w, c), n in shapes.head(10).items()
        },
        "unexpected_shape": int(
            (ok[["height", "width", "channels"]].apply(tuple, axis=1) != common).sum()
        )
        if common is not None
        else 0,
        "dtypes": {k: int(v) for k, v in ok["dtype"].value_counts().items()},
        "exact_duplicate_sets": int((exact_groups["size"] > 1).sum()),
        "exact_duplicate_images": int(exact_groups.loc[exact_groups["size"] > 1, "size"].sum()),
        "exact_duplicate_sets_with_conflicting_labels": int((exact_groups["nunique"] > 1).sum()),
        "near_duplicate_max_distance": result.max_distance,
        "near_duplicate_correlation": result.correlation,
        "near_duplicate_pairs": len(pairs),
        "near_duplicate_pairs_by": {k: int((pairs["found_by"] == k).sum()) for k in FOUND_BY},
        "near_duplicate_pairs_across_labels": int(pairs["label_conflict"].sum()),
        "near_duplicate_pairs_across_groups": int((~pairs["same_group"]).sum()),
        "colour_marked_images": len(marked),
        "colour_marked_by_class": {
            str(k): int(v) for k, v in marked["label"].value_counts().items()
        },
        "colour_marked_examples": marked["path"].head(20).tolist(),
        "groups": int(per_group.size),
        "samples_per_group": {
            "min": int(per_group.min()),
            "median": float(per_group.median()),
            "max": int(per_group.max()),
        },
    }


def write_audit(result: AuditResult, out: Path, gallery: int = 24) -> Path:
    """audit.json, records.csv, pairs.csv, plots and report.md into `out`."""
    from breastcad.data import audit_plots

    out = Path(out)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    result.records.to_csv(out / "records.csv", index=False)
    result.pairs.to_csv(out / "pairs.csv", index=False)
    figures = audit_plots.write_all(result, out / "plots", gallery)
    summary = {**result.summary, "plots": {k: str(v.relative_to(out)) for k, v in figures.items()}}
    (out / "audit.json").write_text(json.dumps(summary, indent=2))
    (out / "report.md").write_text(audit_markdown(summary))
    return out


def audit_markdown(summary: dict[str, Any]) -> str:
    s = summary
    lines = [
        f"# Audit of {s['dataset']} ({s['root']})",
        "",
        f"- {s['n_samples']} samples in {s['groups']} groups (samples per group: "
        f"{s['samples_per_group']}); classes {s['class_counts']}",
        f"- unreadable: {len(s['unreadable'])}"
        + "".join(f"\n  - `{u['path']}`: {u['problem']}" for u in s["unreadable"][:20]),
        f"- shapes (h x w x channels): {s['shapes']}; {s['unexpected_shape']} differ from the "
        f"most common; dtypes {s['dtypes']}",
        f"- exact duplicates (same decoded pixels): {s['exact_duplicate_sets']} sets, "
        f"{s['exact_duplicate_images']} images; {s['exact_duplicate_sets_with_conflicting_labels']}"
        " sets with conflicting labels",
        f"- near duplicates ({near_duplicate_rule(s.get('near_duplicate_correlation'))}; distance "
        f"{s['near_duplicate_max_distance']}): {s['near_duplicate_pairs']} pairs (found by: "
        f"{s.get('near_duplicate_pairs_by', {})}), "
        f"{s['near_duplicate_pairs_across_labels']} across labels, "
        f"{s['near_duplicate_pairs_across_groups']} across groups. Splits keep them together "
        "(see `breastcad data split`): all of them where the data has no patient ids, "
        "otherwise exact duplicates, since patients are then the unit of splitting.",
        _colour_line(s),
        *[f"- adapter: {p}" for p in s["adapter_problems"][:20]],
        "",
    ]
    lines += [f"![{k}]({v})" for k, v in s.get("plots", {}).items()]
    return "\n".join(lines) + "\n"


def _colour_line(s: dict[str, Any]) -> str:
    head = (
        f"- colour marks (>= {COLOUR_MIN_FRACTION:.2%} of pixels with channels more than "
        f"{COLOUR_TOLERANCE} apart): {s['colour_marked_images']} images"
    )
    if s["colour_marked_images"] > 0.5 * (s["n_samples"] - len(s["unreadable"])):
        return head + "; most images are in colour (e.g. histopathology), so this says nothing."
    return (
        head + f", by class {s['colour_marked_by_class']}. On a grayscale modality these are "
        "drawings on the image (calipers, arrows, Doppler boxes); where one class has more of "
        "them, a model can learn the marks instead of the anatomy."
        + "".join(f"\n  - `{p}`" for p in s["colour_marked_examples"])
    )
