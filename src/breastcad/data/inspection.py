"""What the audit records of each image (`inspect_image`: size, mode, exact and perceptual
hashes, the thumbnail the correlation rule compares, its colour marks), found once per file in
parallel with a progress bar (`inspect_all`).

What a readable image's decoding found is kept (`AuditCache`: one SQLite file in the decode
cache's folder) under a key of the file's path, size and modification time, so a later audit of
the same files (every run splits after one) decodes only new, changed or unreadable files. The
key is a hash: the cache names no file and no patient.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sqlite3
from concurrent.futures import ProcessPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from breastcad.data.duplicates import centre_phash, phash, pixel_hash, thumbnail
from breastcad.data.imaging import NPZ_SEPARATOR, read_image, to_uint8
from breastcad.errors import DataError
from breastcad.runinfo import keep_private, private_folder, write_private

COLOUR_TOLERANCE = 24
"""Channel spread (max - min, 0-255 scale) above which a pixel counts as coloured; JPEG chroma
noise on gray images stays below it."""
COLOUR_MIN_FRACTION = 1e-4
"""Fraction of coloured pixels from which an image counts as colour-marked."""


def colour_fraction(pixels: np.ndarray) -> float:
    """Fraction of pixels whose channels differ by more than `COLOUR_TOLERANCE` (uint8)."""
    if pixels.ndim != 3 or pixels.shape[2] < 3:
        return 0.0
    rgb = pixels[..., :3]
    spread = rgb.max(axis=2).astype(np.int16) - rgb.min(axis=2)
    return float((spread > COLOUR_TOLERANCE).mean())


def inspect_image(path: str) -> dict[str, Any]:
    """Decode one image and describe it; a bad file gives `readable=False` and the reason."""
    try:
        image = read_image(path)
    except DataError as exc:
        return {"readable": False, "error": exc.problem}
    return describe(image)


def describe(image: np.ndarray) -> dict[str, Any]:
    """What the audit records of a decoded image (`inspect_image`); the decode cache records
    it too where asked, so that the image is not decoded again for it."""
    if image.size == 0:
        return {"readable": False, "error": "no pixels"}
    pixels = to_uint8(image)
    full = phash(image)
    return {
        "readable": True,
        "error": "",
        "height": image.shape[0],
        "width": image.shape[1],
        "channels": 1 if image.ndim == 2 else image.shape[2],
        "dtype": str(image.dtype),
        "exact_hash": pixel_hash(pixels),
        "phash": full,
        "centre_phash": centre_phash(image, full),
        "thumbnail": _encoded(thumbnail(image)),
        "colour_fraction": colour_fraction(pixels),
    }


def _encoded(thumb: bytes | None) -> str | None:
    """A thumbnail as text for the cache's JSON (None: the image has none)."""
    return None if thumb is None else base64.b64encode(thumb).decode("ascii")


AUDIT_FORMAT = 4
"""Part of every cache key: raised when `inspect_image` or the decoding rules change, so facts
found under older rules are not reused."""


def file_key(path: str) -> str | None:
    """The cache key of one file as it is now (path, size, modification time), or None when it
    cannot be read (then it is decoded, and its problem found, each time)."""
    file = path.split(NPZ_SEPARATOR)[0]
    try:
        st = os.stat(file)
    except OSError:
        return None
    text = f"{AUDIT_FORMAT}|{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class AuditCache:
    """What `inspect_image` found, by `file_key`, in `<folder>/audit.sqlite`. Several processes
    may share it (SQLite's locking); a cache that cannot be opened or written is worked
    around (every file decoded), never an error."""

    def __init__(self, folder: Path) -> None:
        self.file = Path(folder) / "audit.sqlite"

    def _connect(self) -> sqlite3.Connection:
        private_folder(self.file.parent)
        if not self.file.exists():  # hashes of patient images: this user's alone
            write_private(self.file)
        keep_private(self.file, 0o600)
        db = sqlite3.connect(self.file, timeout=60)
        db.execute("CREATE TABLE IF NOT EXISTS facts (key TEXT PRIMARY KEY, record TEXT)")
        return db

    def get(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        try:
            with closing(self._connect()) as db:
                for start in range(0, len(keys), 500):
                    chunk = keys[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    query = f"SELECT key, record FROM facts WHERE key IN ({marks})"
                    found.update((k, json.loads(r)) for k, r in db.execute(query, chunk))
        except sqlite3.DatabaseError as exc:
            if "not a database" in str(exc):  # a damaged cache: started again, not kept off
                self.file.unlink(missing_ok=True)
            return {}
        except (sqlite3.Error, OSError, ValueError):
            return {}
        return found

    def put(self, records: dict[str, dict[str, Any]]) -> None:
        try:
            with closing(self._connect()) as db, db:
                db.executemany(
                    "INSERT OR REPLACE INTO facts VALUES (?, ?)",
                    [(k, json.dumps(r)) for k, r in records.items()],
                )
        except (sqlite3.Error, OSError):
            pass


def inspect_all(
    paths: list[str], jobs: int = 2, progress: bool = True, cache: AuditCache | None = None
) -> pd.DataFrame:
    """`inspect_image` over many files, in `jobs` processes, with a progress bar; with a
    `cache`, readable files it knows as they are now are not decoded again."""
    keys = [file_key(p) for p in paths] if cache else [None] * len(paths)
    known = cache.get([k for k in keys if k]) if cache else {}
    todo = [i for i, k in enumerate(keys) if k not in known]
    desc = "decoding images" if len(todo) == len(paths) else f"decoding images ({len(todo)} new)"
    new = [paths[i] for i in todo]
    if jobs <= 1 or len(new) < 64:
        found = [inspect_image(p) for p in tqdm(new, desc=desc, disable=not progress)]
    else:
        with ProcessPoolExecutor(jobs) as pool:
            found = list(
                tqdm(
                    pool.map(inspect_image, new, chunksize=64),
                    total=len(new),
                    desc=desc,
                    disable=not progress,
                )
            )
    rows: list[dict[str, Any] | None] = [known.get(k) if k else None for k in keys]
    for i, record in zip(todo, found, strict=True):
        rows[i] = record
    if cache:  # only what was read: a file unreadable now may be readable later, unchanged
        pairs = zip(todo, found, strict=True)
        cache.put({keys[i]: r for i, r in pairs if keys[i] and r["readable"]})
    frame = pd.DataFrame(rows)
    for key in HASHES:  # Python ints: beside an unreadable file's gap, float64 would round them
        if key in frame:
            frame[key] = pd.Series([(r or {}).get(key) for r in rows], dtype=object)
    return frame


HASHES = ("phash", "centre_phash")
"""The 64-bit hashes of a record (kept as Python ints)."""
