"""What `predict` reads: image files and folders searched as the user means them, decoded ahead
of the network in worker processes, and hashed on the way where the bundle keeps its
training images' hashes (`data.fingerprints`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from breastcad.data.fingerprints import as_arrays, image_fingerprint, match
from breastcad.data.imaging import IMAGE_SUFFIXES, has_dicom_preamble, prepare, read_image
from breastcad.data.manifest import hidden
from breastcad.errors import DataError

_MASK = re.compile(r"_mask(_\d+)?\.png$", re.IGNORECASE)


def _is_dicom_without_suffix(path: Path) -> bool:
    """A file named without a suffix (as DICOM exports often are) holding the DICOM preamble."""
    if path.suffix or not path.is_file():
        return False
    try:
        with path.open("rb") as f:
            return has_dicom_preamble(f.read(132))
    except OSError:
        return False


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given; folders searched recursively for images (BUSI masks and hidden folders
    such as .ipynb_checkpoints left out), DICOM files without a suffix included. A folder with
    no image in it is an error naming it."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(
                f
                for f in p.rglob("*")
                if not hidden(f, p)
                and (
                    (f.suffix.lower() in IMAGE_SUFFIXES and not _MASK.search(f.name))
                    or _is_dicom_without_suffix(f)
                )
            )
            if not found:
                raise DataError(
                    "no images in this folder (looked for "
                    f"{', '.join(sorted(IMAGE_SUFFIXES))} and DICOM files)",
                    p,
                )
            out += found
        else:
            out.append(p)
    return out


AHEAD = 64
"""Files decoded ahead of the network at most, per worker process."""


def prepared(
    path: Path, settings: tuple, fingerprint: bool = False
) -> tuple[np.ndarray | None, str, tuple[int, int, int, bool] | None]:
    """One file as the model's input, or the problem that kept it out; with `fingerprint`,
    the decoded image's hashes too (`data.fingerprints.image_fingerprint`)."""
    try:
        image = read_image(path)
        hashes = image_fingerprint(image) if fingerprint else None
        return prepare(image, *settings), "", hashes
    except DataError as exc:
        return None, exc.problem, None


def decoded_files(
    files: list[Path], settings: tuple, jobs: int, fingerprint: bool = False
) -> Iterable[tuple]:
    """`prepared` of every file, in order: in `jobs` worker processes, a bounded number of
    files ahead, where there are enough files to pay for starting them."""
    if jobs <= 1 or len(files) < 2 * jobs:
        yield from (prepared(f, settings, fingerprint) for f in files)
        return
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(jobs) as pool:
        for start in range(0, len(files), AHEAD * jobs):
            chunk = files[start : start + AHEAD * jobs]
            more = [settings] * len(chunk), [fingerprint] * len(chunk)
            yield from pool.map(prepared, chunk, *more, chunksize=4)


def seen_in_training(found: list[tuple | None], trained: dict, near: int | None) -> np.ndarray:
    """`data.fingerprints.match` of the hashes found while decoding (None: unreadable)."""
    return match(as_arrays(found), trained, near)
