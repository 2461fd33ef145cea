"""The manifest: one row per sample, the same columns for every dataset.

Columns: `path` (a file, or `file.npz::split/index`), `label` (class name), `group_id` (the unit
that must never straddle a split: patient, woman, slide, or the file itself when the data has
no patients), `dataset`, and dataset-specific metadata columns (mask paths, coordinates,
magnification, official split...). Every adapter in `breastcad.data.sources` produces one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

REQUIRED = ("path", "label", "group_id", "dataset")


@dataclass
class Manifest:
    """Samples of one dataset plus what the adapter found wrong while reading it."""

    frame: pd.DataFrame
    root: Path
    classes: list[str]
    problems: list[str] = field(default_factory=list)
    patient_groups: bool = True
    """True when `group_id` identifies patients (or women, slides); False when each file is its
    own group, so near-duplicate clusters must stand in for patients when splitting."""

    _fingerprint: str | None = field(default=None, init=False, repr=False, compare=False)
    _layout: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        missing = [c for c in REQUIRED if c not in self.frame.columns]
        if missing:
            raise ValueError(f"manifest lacks columns {missing}")
        self.frame = self.frame.reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def dataset(self) -> str:
        return str(self.frame["dataset"].iloc[0]) if len(self.frame) else "empty"

    def class_counts(self) -> dict[str, int]:
        counts = self.frame["label"].value_counts()
        return {c: int(counts.get(c, 0)) for c in self.classes}

    def fingerprint(self) -> str:
        """sha256 over paths, labels, groups and each file's size and modification time: it
        changes when a file, a label or a grouping changes, without reading pixels. Computed
        once per manifest (a run asks for it for the split, the cache key and the results;
        one `stat` per file, ~1.5 s for the full IDC set); scan again to see changed files."""
        if self._fingerprint is None:
            self._fingerprint, self._layout = self._compute_fingerprints()
        return self._fingerprint

    def layout_fingerprint(self) -> str:
        """Like `fingerprint` without modification times, over paths relative to the root:
        the same after the files are copied or extracted again, elsewhere or under another
        spelling of the root (relative paths, labels, groups and sizes unchanged). What a
        split needs."""
        if self._layout is None:
            self._fingerprint, self._layout = self._compute_fingerprints()
        return self._layout

    def _compute_fingerprints(self) -> tuple[str, str]:
        full, layout = hashlib.sha256(), hashlib.sha256()
        rows = self.frame[["path", "label", "group_id"]].itertuples(index=False)
        for (path, label, group), relative in zip(rows, self.relative_paths(), strict=True):
            file = Path(str(path).split("::")[0])
            stat = file.stat() if file.exists() else None
            full.update(f"{path}\x1f{label}\x1f{group}\x1f".encode())
            layout.update(f"{relative}\x1f{label}\x1f{group}\x1f".encode())
            full.update(f"{stat.st_size}:{stat.st_mtime_ns}\n".encode() if stat else b"-\n")
            layout.update(f"{stat.st_size}\n".encode() if stat else b"-\n")
        return full.hexdigest(), layout.hexdigest()

    def relative_paths(self) -> list[str]:
        """Each sample's path relative to the root (see `relative_path`)."""
        return [relative_path(p, self.root) for p in self.frame["path"]]

    def save(self, path: Path) -> None:
        self.frame.to_csv(path, index=False)

    def subset(self, mask: pd.Series | np.ndarray) -> Manifest:
        return Manifest(
            self.frame[np.asarray(mask, dtype=bool)],
            self.root,
            self.classes,
            self.problems,
            self.patient_groups,
        )


def relative_path(path: str | Path, root: str | Path) -> str:
    """`path` relative to the dataset root it was found under, as text (`a/b.png`,
    `file.npz::train/3`); a root that is the file itself (an .npz) counts from its folder.
    Lexical, so the files need not exist here; a path outside the root stays as it is."""
    file, sep, member = str(path).partition("::")
    root = Path(root)
    base = root.parent if Path(file) == root else root
    try:
        inner = Path(file).relative_to(base).as_posix()
    except ValueError:
        return str(path)
    return inner + sep + member


def hidden(path: Path, root: Path) -> bool:
    """Whether `path` lies in a hidden folder below `root` or is hidden itself (a notebook's
    .ipynb_checkpoints, .git): not data, though its files look like it."""
    return any(part.startswith(".") for part in Path(path).relative_to(root).parts)
