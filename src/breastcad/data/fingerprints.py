"""What an image bundle keeps of the images it learnt from, and which images of other data
are those images again.

A bundle's `training_hashes.npz` holds 64-bit hashes of every image its run trained on or
chose its threshold and calibration on (the train and validation parts): the first 64 bits of
the sha1 of its decoded pixels (the same picture) and its DCT perceptual hash (pHash, as the
audit's; within a few bits: the same picture re-encoded, resized or slightly moved, or a near
duplicate such as BUSI's). `evaluate` matches every image it scores against them, whatever
the folder layout, file names or dataset adapter, so figures on data that overlaps the
training data are flagged, and given without those images too; `predict` marks those images
in its table (hashed while decoding). The web service never does: it would tell an uploader
whether the model learnt from an image.

Near duplicates count only where the run's split kept them together (data without patient
ids, e.g. BUSI); where it split by patient, only the same pixels count: the hashes of
different women's mammograms collide on the breast's outline, so near matches would flag
images the model never saw. A square copy of a wider image (its centred square, resized: how
MedMNIST made BreastMNIST from BUSI) counts as a near duplicate too: the bundle also keeps
the pHash of each oblong training image's centred square (`centre`) and of each square one
(`square`), and an image's centred square (a square image's is itself) is matched against
both, as well as its whole image against the whole training images: the pairs the audit
makes by hash (`audit.near_pairs`). The audit also pairs frames whose thumbnails correlate;
a bundle keeps no thumbnails (they are small pictures of the patients' images), so this
check does not find those, though a split the audit made keeps them apart all the same.

A tabular bundle keeps one hash per training row (`row_hashes`: its features), so that an
evaluation recognises rows it was refitted on.

Neither hash can be turned back into an image or a row, but whoever holds one can tell
whether the bundle learnt from it: train with `--no-training-hashes`, or copy a trained bundle
with `breastcad share`, for a bundle that leaves the institution.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

FILE = "training_hashes.npz"
IMAGE_HASHES = ("pixels", "phash", "centre")
"""The 64-bit hashes of an image, in the order `image_fingerprint` gives them."""


def fingerprints(
    paths: list[str], jobs: int = 2, progress: bool = True, cache_dir: Path | None = None
) -> dict[str, np.ndarray]:
    """`readable` and `square` (bool), `pixels`, `phash` and `centre` (uint64, the pHash of the
    centred square; 0 where unreadable) of each path, from the audit's cache where it knows
    the file as it is now (so after a run's split, free)."""
    from breastcad.data.cache import default_cache_dir
    from breastcad.data.inspection import AuditCache, inspect_all

    store = AuditCache(Path(cache_dir) if cache_dir else default_cache_dir())
    records = inspect_all(list(paths), jobs, progress, store)
    readable = records["readable"].to_numpy(dtype=bool) if len(records) else np.zeros(0, bool)
    found = {k: np.zeros(len(paths), dtype=np.uint64) for k in IMAGE_HASHES}
    square = np.zeros(len(paths), dtype=bool)
    if readable.any():
        known = records.loc[readable]
        found["pixels"][readable] = [int(h[:16], 16) for h in known["exact_hash"]]
        found["phash"][readable] = known["phash"].to_numpy(dtype=np.uint64)
        found["centre"][readable] = known["centre_phash"].to_numpy(dtype=np.uint64)
        square[readable] = (known["height"] == known["width"]).to_numpy(dtype=bool)
    return {"readable": readable, "square": square, **found}


def image_fingerprint(image: np.ndarray) -> tuple[int, int, int, bool]:
    """The hashes of one decoded image (pixels, pHash, pHash of its centred square, whether it
    is square), as `fingerprints` gives them."""
    from breastcad.data.duplicates import centre_phash, phash, pixel_hash
    from breastcad.data.imaging import to_uint8

    full = phash(image)
    pixels = int(pixel_hash(to_uint8(image))[:16], 16)
    return pixels, full, centre_phash(image, full), image.shape[0] == image.shape[1]


def as_arrays(found: list[tuple[int, int, int, bool] | None]) -> dict[str, np.ndarray]:
    """`image_fingerprint`s (None: unreadable) as the arrays `fingerprints` gives."""
    ok = np.array([h is not None for h in found], dtype=bool)
    rows = [h or (0, 0, 0, False) for h in found]
    arrays = {
        k: np.array([r[i] for r in rows], dtype=np.uint64) for i, k in enumerate(IMAGE_HASHES)
    }
    return {"readable": ok, "square": np.array([r[3] for r in rows], dtype=bool), **arrays}


def training_record(
    paths: list[str],
    near_distance: int | None,
    jobs: int = 2,
    progress: bool = True,
    cache_dir: Path | None = None,
    earlier: dict[str, np.ndarray] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The hashes of the readable `paths` (with those of an `earlier` bundle a run started
    from), and what the manifest says of them."""
    found = fingerprints(paths, jobs, progress, cache_dir)
    ok, square = found["readable"], found["square"]
    hashes = {
        "pixels": found["pixels"][ok],
        "phash": found["phash"][ok],
        "centre": found["centre"][ok & ~square],  # oblong images' centred squares
        "square": found["phash"][ok & square],
    }
    if earlier:  # a bundle from before `centre` and `square` has none of them
        hashes = {
            k: np.concatenate([earlier.get(k, np.zeros(0, np.uint64)), v])
            for k, v in hashes.items()
        }
    record = {
        "file": FILE,
        "images": len(hashes["pixels"]),
        "near_duplicate_distance": near_distance,
        "of": "the train and validation images"
        + (" (and those of the bundle the run started from)" if earlier else ""),
    }
    return hashes, record


def row_hashes(X: np.ndarray) -> np.ndarray:
    """64 bits of the sha1 of each row of tabular features, as float32 (so that a CSV round
    trip, -0.0 or another NaN keeps the hash): a tabular bundle's training hashes."""
    rows = np.ascontiguousarray(np.asarray(X, dtype=np.float32) + np.float32(0))
    rows[np.isnan(rows)] = np.float32("nan")
    return np.array(
        [int.from_bytes(hashlib.sha1(row.tobytes()).digest()[:8], "big") for row in rows],
        dtype=np.uint64,
    )


def save(folder: Path, hashes: dict[str, np.ndarray]) -> Path:
    path = Path(folder) / FILE
    with path.open("wb") as handle:  # np.savez would add .npz to a name without it
        np.savez(handle, **{k: np.asarray(v, dtype=np.uint64) for k, v in hashes.items()})
    return path


def load(folder: Path) -> dict[str, np.ndarray]:
    with np.load(Path(folder) / FILE, allow_pickle=False) as stored:
        return {k: stored[k].astype(np.uint64) for k in stored.files}


def match(
    found: dict[str, np.ndarray], training: dict[str, np.ndarray], near_distance: int | None
) -> np.ndarray:
    """Per image of `found` (see `fingerprints`): "same" (its pixels are a training image's),
    "near" (within `near_distance` bits of one: its pHash against theirs, or the pHash of its
    centred square against theirs; not checked when None) or "". (SciPy, which the
    duplicate search imports, only where near duplicates are looked for: image prediction
    does without it.)"""
    answer = np.full(len(found["readable"]), "", dtype=object)
    ok = found["readable"]
    same = ok & np.isin(found["pixels"], training["pixels"])
    answer[same] = "same"
    if near_distance is not None:
        from breastcad.data.duplicates import nearest

        def near_any(query: np.ndarray, reference: np.ndarray) -> np.ndarray:
            hit = np.zeros(len(ok), dtype=bool)
            if len(reference) and ok.any():
                hit[ok] = nearest(query[ok], reference, near_distance) >= 0
            return hit

        none = np.zeros(0, dtype=np.uint64)  # a bundle from before `centre` and `square`
        centres = np.concatenate([training.get("centre", none), training.get("square", none)])
        near = near_any(found["phash"], training["phash"]) | near_any(found["centre"], centres)
        answer[near & ~same] = "near"
    return answer
