"""MedMNIST BreastMNIST `.npz` (28x28, or the 64/128/224 MedMNIST+ files).

Keys `train_images`, `train_labels`, `val_*` and, in the official file, `test_*`; a file without
the test arrays is valid. Label 0 = malignant, 1 = normal or benign. The official split is kept
in the `official_split` column. There are no patient ids (each image is its own group), and the
images come from BUSI, near duplicates included: splits merge near-duplicate clusters.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from breastcad.data.imaging import NPZ_SEPARATOR, load_npz
from breastcad.data.manifest import Manifest
from breastcad.errors import DataError

CLASSES = ["normal_or_benign", "malignant"]
_LABELS = {0: "malignant", 1: "normal_or_benign"}


def scan(root: Path) -> Manifest:
    files = [root] if root.is_file() else sorted(root.glob("breastmnist*.npz"))
    if not files:
        raise DataError("no breastmnist*.npz file", root)
    rows, problems = [], []
    for npz in files:
        arrays = load_npz(str(npz))
        for split in ("train", "val", "test"):
            images, labels = arrays.get(f"{split}_images"), arrays.get(f"{split}_labels")
            if images is None:
                if split != "test":
                    problems.append(f"{npz}: no {split}_images array")
                continue
            if labels is None or len(labels) != len(images):
                raise DataError(f"{split}_labels missing or of another length", npz)
            for i, label in enumerate(labels.reshape(-1)):
                rows.append(
                    {
                        "path": f"{npz}{NPZ_SEPARATOR}{split}/{i}",
                        "label": _LABELS[int(label)],
                        "group_id": f"{npz.stem}/{split}/{i}",
                        "dataset": "breastmnist",
                        "official_split": split,
                        "size": images.shape[1],
                    }
                )
    return Manifest(pd.DataFrame(rows), root, CLASSES, problems, patient_groups=False)
