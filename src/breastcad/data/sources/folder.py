"""Any image dataset as `root/<class>/*.png|jpg|tif|pgm|dcm`, with an optional CSV that maps
file names (relative to the root) to group ids (`file,group_id`); without one, each file is
its own group."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from breastcad.data.imaging import IMAGE_SUFFIXES
from breastcad.data.manifest import Manifest
from breastcad.errors import DataError


def scan(root: Path, groups_csv: str | None = None) -> Manifest:
    groups: dict[str, str] = {}
    if groups_csv:
        table = (
            pd.read_csv(root / groups_csv)
            if not Path(groups_csv).is_absolute()
            else pd.read_csv(groups_csv)
        )
        if not {"file", "group_id"} <= set(table.columns):
            raise DataError("needs columns 'file' and 'group_id'", groups_csv)
        groups = dict(zip(table["file"].astype(str), table["group_id"].astype(str), strict=True))
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    rows = []
    for label in classes:
        for path in sorted((root / label).rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                rel = str(path.relative_to(root))
                rows.append(
                    {
                        "path": str(path),
                        "label": label,
                        "group_id": groups.get(rel, rel),
                        "dataset": "folder",
                    }
                )
    return Manifest(
        pd.DataFrame(rows, columns=["path", "label", "group_id", "dataset"]),
        root,
        classes,
        patient_groups=bool(groups),
    )
