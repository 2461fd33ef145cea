"""The decode cache: every image of a manifest decoded once, in parallel with a progress bar,
prepared (`imaging.prepare`: resize, uint8, channels) and stored in one raw uint8 array on disk,
read back by memory map in every epoch and every later run.

Layout: `<cache_dir>/<key>/pixels.u8` (N x height x width x channels, C order) and `index.json`
(settings, manifest fingerprint, shape, which rows decoded, the problem of each that did not).
The key is a sha256 of the manifest fingerprint, the preprocessing settings and the cache format,
so a changed file, label, size or resize mode gives a new cache. A build writes into
`<key>.partial/` and is renamed only when complete: an interrupted build is never mistaken for a
cache. Workers write their chunk at its offset in the file, so memory stays bounded by one chunk
per worker whatever the number of images (the full IDC set is 277,524 patches, 2.1 GB at 50x50x3).

Example:
    >>> cache = ImageCache.build(manifest, PreprocessConfig(size=50))  # doctest: +SKIP
    >>> batch = cache.pixels[[0, 5, 9]]  # (3, 50, 50, 3) uint8
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from breastcad.config import PreprocessConfig
from breastcad.data.imaging import as_hw, is_colour, prepare, read_image
from breastcad.data.manifest import Manifest
from breastcad.errors import DataError
from breastcad.runinfo import keep_private, private_folder

CACHE_FORMAT = 1
CHUNK = 512
"""Images per worker task: 512 x 224 x 224 x 3 is 77 MB, 512 x 50 x 50 x 3 is 3.8 MB."""


def default_cache_dir() -> Path:
    """`$BREASTCAD_CACHE`, else `$XDG_CACHE_HOME/breastcad`, else `~/.cache/breastcad`."""
    if os.environ.get("BREASTCAD_CACHE"):
        return Path(os.environ["BREASTCAD_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "breastcad"


def resolve_channels(paths: list[str], config: PreprocessConfig, probe: int = 16) -> int:
    """`config.channels`, or for 'auto' 3 if any of the first readable images has colour."""
    if config.channels != "auto":
        return int(config.channels)
    seen = 0
    for path in paths:
        try:
            image = read_image(path)
        except DataError:
            continue
        if is_colour(image):
            return 3
        seen += 1
        if seen >= probe:
            break
    return 1


def _fill(
    file: str,
    shape: tuple[int, ...],
    start: int,
    paths: list[str],
    settings: dict,
    facts: bool = False,
) -> tuple[dict[int, str], dict[int, dict]]:
    """Decode `paths` into rows `start...` of the raw file; returns {row: problem} for failures
    and, with `facts`, {row: what the audit records of the image} (`inspection.describe`)."""
    from breastcad.data.inspection import describe

    row_bytes = int(np.prod(shape[1:]))
    chunk = np.zeros((len(paths), *shape[1:]), dtype=np.uint8)
    problems, found = {}, {}
    for k, path in enumerate(paths):
        try:
            image = read_image(path)
            if facts:
                found[start + k] = describe(image)
            chunk[k] = prepare(image, settings["size"], settings["resize"], settings["channels"])
        except DataError as exc:
            problems[start + k] = exc.problem
        except Exception as exc:  # one bad file must not end a 277k-file build
            problems[start + k] = f"could not be prepared ({exc.__class__.__name__}: {exc})"
    fd = os.open(file, os.O_WRONLY)
    try:
        os.pwrite(fd, chunk.tobytes(), start * row_bytes)
    finally:
        os.close(fd)
    return problems, found


@dataclass
class ImageCache:
    """A built cache: `pixels` (read-only memory map), `readable` per row, `problems` by path."""

    path: Path
    settings: dict[str, Any]
    paths: list[str]
    readable: np.ndarray
    problems: dict[str, str]
    reused: bool = False

    @cached_property
    def pixels(self) -> np.ndarray:
        """All rows, N x height x width x channels uint8, memory-mapped read-only."""
        height, width = as_hw(self.settings["size"])
        shape = (len(self.paths), height, width, self.settings["channels"])
        return np.memmap(self.path / "pixels.u8", np.uint8, "r", shape=shape)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (to DataLoader workers) without the map, which pickle would copy whole."""
        return {k: v for k, v in self.__dict__.items() if k != "pixels"}

    @property
    def channels(self) -> int:
        return int(self.settings["channels"])

    @staticmethod
    def key(fingerprint: str, settings: dict[str, Any]) -> str:
        text = json.dumps(
            {"format": CACHE_FORMAT, "manifest": fingerprint, **settings}, sort_keys=True
        )
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    @classmethod
    def build(
        cls,
        manifest: Manifest,
        config: PreprocessConfig,
        cache_dir: Path | None = None,
        jobs: int = 2,
        progress: bool = True,
        facts: bool = False,
    ) -> ImageCache:
        """The cache of `manifest` under `config`, reused when it exists, else built; with
        `facts`, a build also keeps what an audit records of each image (its audit cache: the
        hashes `evaluate` matches against a bundle's training images), from the same decode."""
        paths = [str(p) for p in manifest.frame["path"]]
        settings = {
            "size": list(config.size) if isinstance(config.size, tuple) else config.size,
            "resize": config.resize,
            "channels": resolve_channels(paths, config),
        }
        root = Path(cache_dir) if cache_dir else default_cache_dir()
        fingerprint = manifest.fingerprint()
        final = root / cls.key(fingerprint, settings)
        if (final / "index.json").is_file():
            return cls._load(final, paths)
        partial = final.with_name(final.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        try:  # decoded patient images: this user's alone (0700), the index's paths too
            private_folder(root)
            partial.mkdir(mode=0o700)
        except OSError as exc:
            raise DataError(
                f"the decode cache cannot be written here ({exc.strerror or exc}); set "
                "$BREASTCAD_CACHE (or --cache-dir) to a writable folder",
                root,
            ) from None
        shape = (len(paths), *as_hw(settings["size"]), settings["channels"])
        raw = partial / "pixels.u8"
        with open(raw, "wb") as f:
            f.truncate(int(np.prod(shape)))
        problems, found = _decode_all(str(raw), shape, paths, settings, jobs, progress, facts)
        if found:  # what an audit would find, kept so that no later audit decodes them again
            from breastcad.data.inspection import AuditCache, file_key

            keys = {i: file_key(paths[i]) for i in found}
            AuditCache(root).put(
                {keys[i]: r for i, r in found.items() if keys[i] and r["readable"]}
            )
        readable = np.ones(len(paths), dtype=bool)
        readable[list(problems)] = False
        index = {
            "format": CACHE_FORMAT,
            "dataset": manifest.dataset,
            "manifest_fingerprint": fingerprint,
            "settings": settings,
            "n": len(paths),
            "paths": paths,
            "problems": {paths[i]: p for i, p in sorted(problems.items())},
        }
        (partial / "index.json").write_text(json.dumps(index))
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        return cls(final, settings, paths, readable, index["problems"])

    @classmethod
    def _load(cls, path: Path, paths: list[str]) -> ImageCache:
        keep_private(path, 0o700)  # a cache written before caches were made private
        index = json.loads((path / "index.json").read_text())
        if index["paths"] != paths:
            raise DataError("cache index does not match the manifest; delete the folder", path)
        height, width = as_hw(index["settings"]["size"])
        expected = index["n"] * height * width * index["settings"]["channels"]
        if (path / "pixels.u8").stat().st_size != expected:
            raise DataError("cache file has the wrong size; delete the folder", path)
        readable = np.array([p not in index["problems"] for p in paths], dtype=bool)
        return cls(path, index["settings"], paths, readable, index["problems"], reused=True)


def _decode_all(
    file: str,
    shape: tuple[int, ...],
    paths: list[str],
    settings: dict,
    jobs: int,
    progress: bool,
    facts: bool = False,
) -> tuple[dict[int, str], dict[int, dict]]:
    """`_fill` over every chunk, in `jobs` processes: the problems and facts of all rows."""
    starts = range(0, len(paths), CHUNK)
    problems: dict[int, str] = {}
    found: dict[int, dict] = {}
    bar = tqdm(total=len(paths), desc="caching images", unit="img", disable=not progress)
    with bar:
        if jobs <= 1 or len(paths) <= CHUNK:
            for s in starts:
                bad, known = _fill(file, shape, s, paths[s : s + CHUNK], settings, facts)
                problems.update(bad)
                found.update(known)
                bar.update(len(paths[s : s + CHUNK]))
            return problems, found
        with ProcessPoolExecutor(jobs) as pool:
            futures = {
                pool.submit(_fill, file, shape, s, paths[s : s + CHUNK], settings, facts): s
                for s in starts
            }
            for future in as_completed(futures):
                bad, known = future.result()
                problems.update(bad)
                found.update(known)
                bar.update(min(CHUNK, len(paths) - futures[future]))
    return problems, found
