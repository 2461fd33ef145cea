"""Does a DICOM file come from the kind of imaging a model was trained on? A DICOM names its
modality (tag (0008,0060): `US` ultrasound, `MG` mammography, `SM` slide microscopy...); an
ultrasound model's answer on a mammogram means nothing, however confident it looks. Images in
PNG, JPEG or TIFF carry no such tag and are not checked.

Codes from DICOM PS3.3 C.7.3.1.1.1. A generic code (`OT`, other; secondary captures are often
filed so) or none says nothing either way: no warning. A model trained on a plain folder
(modality `image`) accepts every modality.

Example:
    >>> modality_warning("ultrasound", "MG")[:60]
    'DICOM Modality MG (mammography), but the model was trained o'
    >>> modality_warning("ultrasound", "US"), modality_warning("mammography", "OT")
    ('', '')
"""

from __future__ import annotations

from pathlib import Path

CODES = {
    "ultrasound": ("US",),
    "mammography": ("MG", "DX", "CR"),
    "histopathology": ("SM", "GM", "XC"),
}
"""The DICOM Modality codes each trained modality accepts (mammograms are also filed as
digital or computed radiography; histology as slide or general microscopy, or a camera's
photograph)."""

NAMES = {
    "US": "ultrasound",
    "MG": "mammography",
    "DX": "digital radiography",
    "CR": "computed radiography",
    "SM": "slide microscopy",
    "GM": "general microscopy",
    "XC": "external camera photography",
    "CT": "computed tomography",
    "MR": "magnetic resonance",
    "PT": "positron emission tomography",
    "NM": "nuclear medicine",
    "XA": "X-ray angiography",
    "RF": "radio fluoroscopy",
    "OP": "ophthalmic photography",
    "ES": "endoscopy",
}
GENERIC = ("", "OT")
"""Codes that say nothing about what the image shows."""


def modality_warning(model_modality: str, dicom_modality: str | None) -> str:
    """Why an image of `dicom_modality` (a DICOM Modality code) is not what a model trained on
    `model_modality` images reads; '' where it is, or where either says nothing specific."""
    accepted = CODES.get(model_modality)
    code = (dicom_modality or "").strip().upper()
    if accepted is None or code in GENERIC or code in accepted:
        return ""
    named = f" ({NAMES[code]})" if code in NAMES else ""
    return (
        f"DICOM Modality {code}{named}, but the model was trained on {model_modality} "
        "images: its answer does not apply"
    )


def data_modality_warning(model_modality: str, data_modality: str) -> str:
    """Why figures of a model trained on `model_modality` images, measured on data of
    `data_modality` (what the dataset's adapter holds, `data.sources.MODALITY`), say nothing
    of its own use; '' where they are one modality, or either is not specific."""
    if model_modality == data_modality or not {model_modality, data_modality} <= set(CODES):
        return ""
    return (
        f"the data are {data_modality} images, the model was trained on {model_modality} "
        "images: these figures are not how it does on the images it was made for"
    )


def dicom_modality(path: str | Path) -> str | None:
    """The Modality code of a DICOM file (named `.dcm` / `.dicom`, or with another suffix than
    an image format's and the DICOM preamble), read from its header alone; None for any other
    file (a DICOM misnamed `.png` is not checked), one that cannot be read, or one that names
    none."""
    from breastcad.data.imaging import IMAGE_SUFFIXES, has_dicom_preamble

    path = Path(path)
    if path.suffix.lower() in IMAGE_SUFFIXES - {".dcm"}:
        return None  # a PNG, JPEG, TIFF...: not even opened
    try:
        with path.open("rb") as f:
            named = path.suffix.lower() in (".dcm", ".dicom")
            if not (named or has_dicom_preamble(f.read(132))):
                return None  # not DICOM: pydicom is not even imported
            import pydicom

            f.seek(0)
            ds = pydicom.dcmread(f, stop_before_pixels=True, force=named)
    except Exception:  # an unreadable header: the decode reports the file
        return None
    value = str(ds.get("Modality", "") or "").strip()
    return value or None
