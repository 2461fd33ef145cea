"""BreakHis, in the official tree:
`BreaKHis_v1/histology_slides/breast/{benign,malignant}/SOB/<type>/<slide>/<mag>X/<name>.png`
with names like `SOB_B_A-14-22549AB-40-001.png`.

The name gives class (B/M), tumour type, year, slide (patient) id, magnification and sequence.
`group_id` is the patient/slide; `magnifications` filters (e.g. [200]).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from breastcad.data.manifest import Manifest, hidden

CLASSES = ["benign", "malignant"]
TYPES = {
    "A": "adenosis",
    "F": "fibroadenoma",
    "PT": "phyllodes_tumor",
    "TA": "tubular_adenoma",
    "DC": "ductal_carcinoma",
    "LC": "lobular_carcinoma",
    "MC": "mucinous_carcinoma",
    "PC": "papillary_carcinoma",
}
_NAME = re.compile(r"^SOB_([BM])_([A-Z]+)-(\d+)-([0-9A-Za-z]+)-(\d+)-(\d+)\.png$", re.IGNORECASE)


def scan(root: Path, magnifications: list[int] | None = None) -> Manifest:
    rows, problems = [], []
    for path in sorted(p for p in root.rglob("SOB_*.png") if not hidden(p, root)):
        m = _NAME.match(path.name)
        if not m:
            problems.append(f"{path}: name does not follow the BreakHis pattern")
            continue
        cls, tumour, year, slide, mag, seq = m.groups()
        if magnifications and int(mag) not in magnifications:
            continue
        rows.append(
            {
                "path": str(path),
                "label": CLASSES[cls.upper() == "M"],
                "group_id": f"{year}-{slide}",
                "dataset": "breakhis",
                "tumour_type": TYPES.get(tumour.upper(), tumour),
                "magnification": int(mag),
                "sequence": int(seq),
            }
        )
    return Manifest(
        pd.DataFrame(
            rows,
            columns=[
                "path",
                "label",
                "group_id",
                "dataset",
                "tumour_type",
                "magnification",
                "sequence",
            ],
        ),
        root,
        CLASSES,
        problems,
    )
