"""BUSI ultrasound (Kaggle `Dataset_BUSI_with_GT/{benign,malignant,normal}/benign (1).png`).

Masks (`NAME_mask.png`, `NAME_mask_1.png`, ...) are not samples; their paths are kept in the
`masks` column (';'-separated). File names with spaces and parentheses are used as they are.
BUSI has no patient ids: `group_id` is the file itself, and splits merge near-duplicate
clusters found by the audit.

Tasks: `three_class` (normal, benign, malignant; the default) and `benign_vs_malignant` (the
images with a lesion only, the question most published BUSI figures answer).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from breastcad.data.manifest import Manifest
from breastcad.errors import ConfigError

CLASSES = ["normal", "benign", "malignant"]
TASKS = {"three_class": CLASSES, "benign_vs_malignant": ["benign", "malignant"]}
_MASK = re.compile(r"_mask(_\d+)?$")


def scan(root: Path, task: str = "three_class") -> Manifest:
    if task not in TASKS:
        raise ConfigError(f"unknown BUSI task '{task}'; known: {', '.join(TASKS)}")
    base = root / "Dataset_BUSI_with_GT" if (root / "Dataset_BUSI_with_GT").is_dir() else root
    rows = []
    for label in TASKS[task]:
        folder = base / label
        if not folder.is_dir():
            continue
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")
        masks = [p for p in files if _MASK.search(p.stem)]
        for image in (p for p in files if not _MASK.search(p.stem)):
            own = sorted(str(m) for m in masks if _MASK.sub("", m.stem) == image.stem)
            rows.append(
                {
                    "path": str(image),
                    "label": label,
                    "group_id": f"{label}/{image.stem}",
                    "dataset": "busi",
                    "masks": ";".join(own),
                }
            )
    return Manifest(
        pd.DataFrame(rows, columns=["path", "label", "group_id", "dataset", "masks"]),
        root,
        TASKS[task],
        patient_groups=False,
    )
