"""Any image dataset as `root/<class>/*.png|jpg|tif|pgm|dcm`, with an optional CSV that maps
file names (relative to the root) to group ids (`file,group_id`); without one, each file is
its own group."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from breastcad.data.imaging import IMAGE_SUFFIXES
from breastcad.data.manifest import Manifest, hidden
from breastcad.errors import DataError


def scan(root: Path, groups_csv: str | None = None) -> Manifest:
    groups = _groups(root, groups_csv) if groups_csv else {}
    # hidden folders (a notebook's .ipynb_checkpoints, .git) are neither classes nor images
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not hidden(p, root))
    rows = []
    for label in classes:
        for path in sorted((root / label).rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() and not hidden(path, root):
                rel = path.relative_to(root).as_posix()
                rows.append(
                    {
                        "path": str(path),
                        "label": label,
                        "group_id": groups.get(rel, rel),
                        "dataset": "folder",
                    }
                )
    problems = _group_problems(groups, [r["path"] for r in rows], root, groups_csv)
    return Manifest(
        pd.DataFrame(rows, columns=["path", "label", "group_id", "dataset"]),
        root,
        classes,
        problems,
        patient_groups=bool(groups),
    )


def _groups(root: Path, groups_csv: str) -> dict[str, str]:
    """file (relative to the root) -> group id, from the groups CSV."""
    csv = Path(groups_csv) if Path(groups_csv).is_absolute() else root / groups_csv
    if not csv.is_file():
        raise DataError("groups CSV not found", csv)
    try:
        table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"not a readable CSV ({exc})", csv) from None
    if not {"file", "group_id"} <= set(table.columns):
        raise DataError("needs columns 'file' and 'group_id'", csv)
    files = table["file"].str.strip().str.replace("\\", "/", regex=False)
    ids = table["group_id"].str.strip()
    named = (files != "") & (ids != "")  # an empty id would join unrelated images in one group
    return dict(zip(files[named], ids[named], strict=True))


def _group_problems(
    groups: dict[str, str], paths: list[str], root: Path, groups_csv: str | None
) -> list[str]:
    """What the groups CSV and the images disagree on: an image the CSV does not name is its
    own group, so a patient's images could land in two partitions; said, not silent."""
    if not groups:
        return []
    found = {Path(p).relative_to(root).as_posix() for p in paths}
    unnamed = sorted(found - set(groups))
    absent = sorted(set(groups) - found)
    problems = []
    if unnamed:
        problems.append(
            f"{groups_csv}: {len(unnamed)} images it does not name, each its own group "
            f"(first: {unnamed[0]}); a patient's images could be split apart"
        )
    if absent:
        problems.append(f"{groups_csv}: {len(absent)} rows name no image (first: {absent[0]})")
    return problems
