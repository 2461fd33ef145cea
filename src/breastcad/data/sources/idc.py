"""IDC histopathology patches, as on Kaggle:
`IDC_regular_ps50_idx5/<patient>/<0|1>/<patient>_idx5_x<X>_y<Y>_class<0|1>.png`.

`group_id` is the patient; x and y are kept for slide reconstruction. The folder label and the
file-name label must agree: a patch where they do not is reported and excluded. Scanning uses
`os.scandir`, fast enough for the 277,524 files of the full set.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from breastcad.data.manifest import Manifest

CLASSES = ["benign", "idc"]
_NAME = re.compile(r"^(\w+?)_idx5_x(\d+)_y(\d+)_class([01])\.png$")


def scan(root: Path) -> Manifest:
    base = root / "IDC_regular_ps50_idx5" if (root / "IDC_regular_ps50_idx5").is_dir() else root
    rows, problems = [], []
    for patient in sorted(e.name for e in os.scandir(base) if e.is_dir()):
        for folder_label in ("0", "1"):
            folder = base / patient / folder_label
            if not folder.is_dir():
                continue
            for entry in os.scandir(folder):
                m = _NAME.match(entry.name)
                if not m:
                    if entry.name.lower().endswith(".png"):
                        problems.append(f"{entry.path}: name does not follow the IDC pattern")
                    continue
                if m.group(4) != folder_label or m.group(1) != patient:
                    problems.append(
                        f"{entry.path}: file name says patient {m.group(1)} class "
                        f"{m.group(4)}, folder says {patient}/{folder_label}; excluded"
                    )
                    continue
                rows.append(
                    (
                        entry.path,
                        CLASSES[int(folder_label)],
                        patient,
                        "idc",
                        int(m.group(2)),
                        int(m.group(3)),
                    )
                )
    frame = pd.DataFrame(rows, columns=["path", "label", "group_id", "dataset", "x", "y"])
    return Manifest(frame.sort_values("path"), root, CLASSES, problems)
