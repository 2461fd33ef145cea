"""Service fixtures: real bundles (seeded weights) and images written by the tests."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import make_image_bundle, make_wdbc_bundle


@pytest.fixture(scope="session")
def bundles(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bundles")
    fit = {"slope": 1.5, "intercept": -0.2, "threshold": 0.45, "chosen_on": "the validation part"}
    return {
        "image": make_image_bundle(root / "idc"),
        "tabular": make_wdbc_bundle(root / "wdbc"),
        "paired": make_image_bundle(root / "paired", seed=3, bilateral=fit),
    }


def png(seed: int = 0, size: tuple[int, int] = (50, 50), mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    shape = (*size, 3) if mode == "RGB" else size
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def dicom_bytes(
    with_pixels: bool = True, laterality: str = "R", modality: str = "MG", **identifiers: str
) -> bytes:
    """A small MONOCHROME2 mammogram-like DICOM carrying patient identifiers (`StudyDate`,
    `StudyInstanceUID` and `ViewPosition` among them where given); `modality` its Modality
    code ('' for none)."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.StudyInstanceUID = identifiers.get("StudyInstanceUID") or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Laterality = laterality
    if modality:
        ds.Modality = modality
    ds.PatientName = identifiers.get("PatientName", "Doe^Jane")
    ds.PatientID = identifiers.get("PatientID", "MRN-0042-SECRET")
    ds.PatientBirthDate = identifiers.get("PatientBirthDate", "19700101")
    ds.AccessionNumber = identifiers.get("AccessionNumber", "ACC-777")
    ds.InstitutionName = identifiers.get("InstitutionName", "St Example Hospital")
    ds.ReferringPhysicianName = "Smith^John"
    ds.StudyDate = identifiers.get("StudyDate", "20240102")
    if "ViewPosition" in identifiers:
        ds.ViewPosition = identifiers["ViewPosition"]
    if with_pixels:
        pixels = (np.arange(64 * 48, dtype=np.uint16).reshape(64, 48) * 7) % 4096
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = pixels.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
