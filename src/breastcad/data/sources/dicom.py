"""DICOM mammograms (CBIS-DDSM style): a folder of `.dcm` files with labels from a CSV
(`file` relative to the root, and a label column such as `pathology`) or from class folders.

The group is the patient: the CSV's `patient_id` or the DICOM PatientID (CBIS-DDSM's per-image
PatientID `Mass-Test_P_00173_LEFT_CC` is read as patient P_00173, left, CC; `breast_facts`).
The side and view come from the CSV's `laterality` and `view`, or the header; the examination
(to pair a woman's two breasts within one) from the CSV's `exam` column, or, without a CSV,
the header's StudyDate or StudyInstanceUID. Identifiers are never
written as they are: `group_id` is a pseudonym (`patient-` + 12 hex digits of an HMAC-SHA256).
Its key is `$BREASTCAD_PSEUDONYM_KEY` when set; without it a fixed project key keeps splits the
same on every machine, but then anyone with the id list can recompute the pseudonyms (a small id
space such as CBIS-DDSM's `P_00001`... is easy to enumerate): set the variable for real patients.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from pathlib import Path

import pandas as pd

from breastcad.data.manifest import Manifest, hidden
from breastcad.errors import DataError

_PATHOLOGY = {"MALIGNANT": "malignant", "BENIGN": "benign", "BENIGN_WITHOUT_CALLBACK": "benign"}


def pseudonym(patient_id: str) -> str:
    key = os.environ.get("BREASTCAD_PSEUDONYM_KEY", "breastcad").encode()
    return "patient-" + hmac.new(key, patient_id.encode(), hashlib.sha256).hexdigest()[:12]


_CBIS_ID = re.compile(r"^(?:calc|mass)-(?:training|test)_(p_\d+)_(left|right)_(cc|mlo)$", re.I)


def breast_facts(ds) -> dict[str, str]:
    """The patient, side ('left' / 'right' / ''), view ('CC', 'MLO'... or '') and examination
    (StudyDate, or StudyInstanceUID in de-identified files, whose date is emptied) a DICOM
    header (pydicom Dataset) gives, and what told (`told_by`): CBIS-DDSM's PatientID
    (`Mass-Test_P_00173_LEFT_CC`) names all three itself, one per image, so its patient is
    the `P_00173` part; other files have PatientID, ImageLaterality (or Laterality) and
    ViewPosition."""
    patient = str(ds.get("PatientID", "") or "").strip()
    cbis = _CBIS_ID.match(patient)
    if cbis:
        woman, side, view = cbis.groups()
        return {
            "patient": woman.upper(),
            "side": side.lower(),
            "view": view.upper(),
            "exam": "",  # one examination per patient in CBIS-DDSM
            "told_by": "CBIS-DDSM patient id",
        }
    return {
        "patient": patient,
        "side": _side(str(ds.get("ImageLaterality", "") or ds.get("Laterality", "") or "")),
        "view": str(ds.get("ViewPosition", "") or "").strip().upper(),
        "exam": str(ds.get("StudyDate", "") or ds.get("StudyInstanceUID", "") or ""),
        "told_by": "DICOM header",
    }


_EXAM_KEY = os.urandom(32)
"""Examination keys pair images within one process only: its own random key, so a key that
reaches a file (a saved manifest) cannot be linked back to a study date."""


def exam_key(patient: str, exam: str | None) -> str:
    """A key for the patient's examination (`breast_facts`' `exam`: a date or a UID), or for
    the patient where nothing tells one examination from another; the same within a process,
    unlinkable outside it."""
    text = f"{patient}\x1f{exam or ''}".encode()
    return "exam-" + hmac.new(_EXAM_KEY, text, hashlib.sha256).hexdigest()[:12]


def _header(path: Path) -> dict[str, str]:
    """`breast_facts` of a file's header; the file's stem as the patient where it has none."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:
        raise DataError(f"unreadable DICOM header ({exc})", path) from exc
    facts = breast_facts(ds)
    return facts | {"patient": facts["patient"] or path.stem}


def _side(laterality: str) -> str:
    """'left' / 'right' from L, R, LEFT, RIGHT (any case); '' otherwise."""
    sides = {"L": "left", "LEFT": "left", "R": "right", "RIGHT": "right"}
    return sides.get(laterality.strip().upper(), "")


def _rows_from_csv(root: Path, csv: Path, label_column: str, problems: list[str]) -> list[dict]:
    """One manifest row per file the CSV lists; missing, unlabelled or unreadable files go to
    `problems`."""
    table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    if "file" not in table.columns or label_column not in table.columns:
        raise DataError(f"needs columns 'file' and '{label_column}'", csv)
    rows = []
    for rec in table.to_dict("records"):
        path = root / str(rec["file"])
        if not path.is_file():
            problems.append(f"{path}: listed in {csv.name} but missing; skipped")
            continue
        raw = str(rec[label_column]).strip().upper()
        if not raw:
            problems.append(f"{path}: no {label_column} in {csv.name}; skipped")
            continue
        listed = {k: rec.get(k, "").strip() for k in ("patient_id", "laterality", "view")}
        try:
            header = _header(path) if not all(listed.values()) else {}  # what it lacks
        except DataError as exc:  # reported and skipped, as an undecodable image is
            problems.append(f"{exc}; skipped")
            continue
        patient = listed["patient_id"] or header["patient"]
        rows.append(
            {
                "path": str(path),
                "label": _PATHOLOGY.get(raw, raw.lower()),
                "group_id": pseudonym(patient),
                "dataset": "dicom",
                "side": _side(listed["laterality"]) or header.get("side", ""),
                "view": (listed["view"] or header.get("view", "")).upper(),
                # the CSV's examination, where it has an `exam` column (the header's would
                # mix with rows the CSV describes in full)
                "exam": exam_key(patient, rec.get("exam", "").strip()),
            }
        )
    return rows


def _rows_from_folders(root: Path, problems: list[str]) -> list[dict]:
    """One manifest row per readable `.dcm` under `root`, labelled by its folder."""
    rows = []
    for path in sorted(p for p in root.rglob("*.dcm") if not hidden(p, root)):
        try:
            header = _header(path)
        except DataError as exc:
            problems.append(f"{exc}; skipped")
            continue
        rows.append(
            {
                "path": str(path),
                "label": path.parent.name.lower(),
                "group_id": pseudonym(header["patient"]),
                "dataset": "dicom",
                "side": header["side"],
                "view": header["view"],
                "exam": exam_key(header["patient"], header["exam"]),
            }
        )
    return rows


def scan(
    root: Path, labels_csv: str | None = "labels.csv", label_column: str = "pathology"
) -> Manifest:
    """DICOM files under `root`, labelled by `labels_csv` where it exists (its `file` and
    `label_column` columns; patient, side and view from it or, where it lacks them, the
    header), else by each file's folder name; patient ids pseudonymised."""
    csv = root / labels_csv if labels_csv else None
    problems: list[str] = []
    if csv is not None and csv.is_file():
        rows = _rows_from_csv(root, csv, label_column, problems)
    else:
        rows = _rows_from_folders(root, problems)
    frame = pd.DataFrame(rows)
    classes = sorted(frame["label"].unique()) if len(frame) else []
    if set(classes) <= {"benign", "malignant"}:
        classes = ["benign", "malignant"]
    return Manifest(
        frame if len(frame) else pd.DataFrame(columns=["path", "label", "group_id", "dataset"]),
        root,
        classes,
        problems,
    )
