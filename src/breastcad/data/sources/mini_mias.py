"""mini-MIAS mammograms: `mdbNNN.pgm` (or `.png`) and `Info.txt`.

Info.txt columns: reference, tissue (F/G/D), class (CALC, CIRC, SPIC, MISC, ARCH, ASYM, NORM),
severity (B/M), x, y, radius; one reference can have several lines (several abnormalities).
Consecutive references are one woman's left and right breast (mdb001+mdb002): `group_id`.
Tasks: 'normal_vs_abnormal' (all images) or 'benign_vs_malignant' (abnormal images only).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from breastcad.data.manifest import Manifest
from breastcad.errors import ConfigError, DataError

TASKS = {
    "normal_vs_abnormal": ["normal", "abnormal"],
    "benign_vs_malignant": ["benign", "malignant"],
}
_LINE = re.compile(r"^(mdb\d{3})\s+([FGD])\s+(\w+)(?:\s+([BM]))?(?:\s+(\d+)\s+(\d+)\s+(\d+))?")


def parse_info(path: Path) -> dict[str, dict]:
    """Reference -> tissue, class, severity and the list of abnormalities."""
    refs: dict[str, dict] = {}
    for line in path.read_text(errors="replace").splitlines():
        m = _LINE.match(line.strip())
        if not m:
            continue
        ref, tissue, cls, severity, x, y, radius = m.groups()
        entry = refs.setdefault(
            ref, {"tissue": tissue, "classes": [], "severity": None, "abnormalities": []}
        )
        if cls != "NORM":
            entry["classes"].append(cls)
            if severity == "M" or entry["severity"] is None:
                entry["severity"] = severity
            if x is not None:
                entry["abnormalities"].append(f"{cls}:{x},{y},r{radius}")
    return refs


def _unlisted(root: Path, info: Path, listed: set[str]) -> list[str]:
    """What the labels leave out, said rather than dropped in silence: lines of Info.txt that
    name a reference but do not parse (its prose lines are not counted), and images in the
    folder that Info.txt does not list (`listed`: its references, as parsed; left out: their
    class is unknown)."""
    lines = info.read_text(errors="replace").splitlines()
    unread = [
        f"{info}: line {n} names a reference but is not understood: {line.strip()!r}"
        for n, line in enumerate(lines, 1)
        if line.strip().lower().startswith("mdb") and not _LINE.match(line.strip())
    ]
    images = sorted(p for p in root.glob("mdb*") if p.suffix.lower() in (".pgm", ".png"))
    return unread + [
        f"{p}: not listed in Info.txt; skipped" for p in images if p.stem not in listed
    ]


def woman_and_side(number: int) -> tuple[str, str]:
    """The woman and breast of reference `mdb<number>`: consecutive references are one
    woman's two breasts, the odd one the right.

    >>> woman_and_side(1), woman_and_side(2)
    (('woman-001', 'right'), ('woman-001', 'left'))
    """
    return f"woman-{(number + 1) // 2:03d}", "left" if number % 2 == 0 else "right"


def scan(root: Path, task: str = "normal_vs_abnormal") -> Manifest:
    if task not in TASKS:
        raise ConfigError(f"unknown mini-MIAS task '{task}'; known: {', '.join(TASKS)}")
    info = root / "Info.txt"
    if not info.is_file():
        raise DataError("no Info.txt with the mini-MIAS labels", root)
    rows, without_image = [], 0
    refs = parse_info(info)
    for ref, entry in sorted(refs.items()):
        image = next(
            (root / f"{ref}{s}" for s in (".pgm", ".png") if (root / f"{ref}{s}").is_file()), None
        )
        if image is None:
            without_image += 1
            continue
        abnormal = bool(entry["classes"])
        if task == "normal_vs_abnormal":
            label = "abnormal" if abnormal else "normal"
        elif not abnormal:
            continue
        else:
            label = {"B": "benign", "M": "malignant"}.get(entry["severity"] or "", "unknown")
        woman, side = woman_and_side(int(ref[3:]))
        rows.append(
            {
                "path": str(image),
                "label": label,
                "group_id": woman,
                "dataset": "mini-mias",
                "tissue": entry["tissue"],
                "abnormality": "+".join(entry["classes"]) or "NORM",
                "severity": entry["severity"] or "",
                "lesions": ";".join(entry["abnormalities"]),
                "side": side,
            }
        )
    problems = (
        [f"{without_image} references in Info.txt have no image file"] if without_image else []
    )
    problems += _unlisted(root, info, set(refs))
    frame = pd.DataFrame(rows)
    if len(frame) and (frame["label"] == "unknown").any():
        problems.append(
            f"{int((frame['label'] == 'unknown').sum())} abnormal images without severity excluded"
        )
        frame = frame[frame["label"] != "unknown"]
    return Manifest(frame, root, TASKS[task], problems)
