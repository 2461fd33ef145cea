"""Dataset adapters: each reads one layout as users download it and returns a `Manifest`.

Example:
    >>> from breastcad.data.sources import scan, SOURCES
    >>> manifest = scan("busi", "../shared/data/busi")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from breastcad.data.manifest import Manifest
from breastcad.data.sources import breakhis, breastmnist, busi, dicom, folder, idc, mini_mias
from breastcad.errors import ConfigError, DataError

SOURCES: dict[str, Callable[..., Manifest]] = {
    "busi": busi.scan,
    "breastmnist": breastmnist.scan,
    "mini-mias": mini_mias.scan,
    "idc": idc.scan,
    "breakhis": breakhis.scan,
    "dicom": dicom.scan,
    "folder": folder.scan,
}

MODALITY = {
    "busi": "ultrasound",
    "breastmnist": "ultrasound",
    "mini-mias": "mammography",
    "idc": "histopathology",
    "breakhis": "histopathology",
    "dicom": "mammography",
    "folder": "image",
}
"""What each layout holds: decides default augmentation and (gray modalities) 1-channel caches."""
GRAY_MODALITIES = {"ultrasound", "mammography"}


def scan(dataset: str, root: str | Path, **options: Any) -> Manifest:
    """The manifest of `dataset` under `root`; an unknown dataset or empty root is an error."""
    if dataset not in SOURCES:
        raise ConfigError(f"unknown dataset '{dataset}'; known: {', '.join(SOURCES)}")
    root = Path(root)
    if not root.exists():
        raise DataError("not found", root)
    manifest = SOURCES[dataset](root, **options)
    if len(manifest) == 0:
        raise DataError(f"no {dataset} samples found in this layout", root)
    return manifest
