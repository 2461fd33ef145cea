"""DICOM de-identification: no attribute of the basic profile survives, on synthetic files that
carry every kind of identifier and on the real CBIS-DDSM file in ../shared/data."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pydicom
import pytest
from pydicom.datadict import keyword_dict
from pydicom.dataset import Dataset
from typer.testing import CliRunner

from breastcad.cli import app
from breastcad.data.deid import BASIC_PROFILE, SAFE_FIELDS, Deidentifier, safe_header
from tests.conftest import SHARED_DATA
from tests.serve.conftest import dicom_bytes

CBIS = SHARED_DATA / "cbis-ddsm" / "benign" / "1-130.dcm"


def loaded(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def identifying(**extra) -> Dataset:
    """A DICOM with identifiers at the top level, in a nested sequence, in a private tag and
    in an overlay."""
    ds = loaded(dicom_bytes())
    ds.OtherPatientIDs = "OLD-ID-1"
    ds.PatientAddress = "1 Secret Lane"
    ds.OperatorsName = "Tech^Tina"
    ds.StudyDescription = "Screening of Jane Doe"
    ds.DeviceSerialNumber = "SN-12345"
    item = Dataset()
    item.PatientName = "Nested^Name"
    item.ReferencedSOPInstanceUID = "1.2.3.4.5"
    ds.ReferencedImageSequence = [item]
    block = ds.private_block(0x0011, "ACME SECRET", create=True)
    block.add_new(0x01, "LO", "private identifier")
    ds.add_new(0x60000022, "LO", "overlay text Jane Doe")
    for key, value in extra.items():
        setattr(ds, key, value)
    return ds


def all_keywords(ds: Dataset) -> list[str]:
    return [elem.keyword for elem in ds.iterall()]


def test_every_profile_keyword_is_a_dicom_attribute():
    assert not [k for k in BASIC_PROFILE if k not in keyword_dict]
    assert {"PatientName", "PatientID", "PatientBirthDate", "AccessionNumber"} <= set(BASIC_PROFILE)


def test_no_listed_attribute_survives():
    ds = identifying()
    original = {k: str(ds.get(k)) for k in ("StudyInstanceUID", "SOPInstanceUID", "PatientID")}
    pixels = ds.pixel_array.copy()
    changes = Deidentifier(b"key").apply(ds)
    for elem in ds.iterall():
        action = BASIC_PROFILE.get(elem.keyword)
        assert action != "X", f"{elem.keyword} should have been removed"
        if action == "Z":
            assert elem.value in ("", None), elem.keyword
    assert not any(elem.tag.is_private for elem in ds.iterall())
    assert not any(0x6000 <= elem.tag.group <= 0x60FF for elem in ds.iterall())
    assert str(ds.PatientID).startswith("patient-") and ds.PatientID != original["PatientID"]
    assert ds.ReferencedImageSequence[0].PatientName != "Nested^Name"
    assert ds.StudyInstanceUID != original["StudyInstanceUID"]
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.PatientIdentityRemoved == "YES" and "113100" in str(
        ds.DeidentificationMethodCodeSequence
    )
    np.testing.assert_array_equal(ds.pixel_array, pixels)
    assert {"PatientAddress", "OperatorsName", "OtherPatientIDs"} <= set(changes.removed)
    assert changes.private_tags_removed == 2  # the private creator and its element
    written = io.BytesIO()
    ds.save_as(written)
    for secret in (b"Doe", b"MRN-0042", b"Secret Lane", b"Tina", b"SN-12345", b"ACME", b"19700101"):
        assert secret not in written.getvalue()


def test_same_key_same_pseudonyms_and_uids_other_key_other_ones():
    a, b, c = identifying(), identifying(), identifying()
    b.StudyInstanceUID = a.StudyInstanceUID
    b.PatientID = a.PatientID
    Deidentifier(b"k1").apply(a)
    Deidentifier(b"k1").apply(b)
    Deidentifier(b"k2").apply(c)
    assert a.StudyInstanceUID == b.StudyInstanceUID and a.PatientID == b.PatientID
    assert a.SOPInstanceUID != b.SOPInstanceUID  # different instances stay different
    assert c.PatientID != a.PatientID


def test_two_copies_of_one_image_both_come_out_and_the_second_is_named(tmp_path):
    # files are named by their new SOP Instance UID: one image exported twice (here into two
    # folders, as a copy and a damaged copy would be) wrote one file over the other
    from breastcad.data.deid import deidentify_folder

    data = dicom_bytes()
    for folder in ("a", "b"):
        (tmp_path / "in" / folder).mkdir(parents=True)
        (tmp_path / "in" / folder / "1-1.dcm").write_bytes(data)
    rows, problems = deidentify_folder(tmp_path / "in", tmp_path / "out", progress=False)
    assert problems == [] and len(rows) == 2
    first, second = (r["file"] for r in rows)
    assert second == first.replace(".dcm", "-copy2.dcm")
    assert rows[1]["warnings"].endswith(f"the same SOP Instance UID as {first}")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([first, second])


def test_safe_header_is_from_a_copy_and_holds_only_safe_fields():
    ds = identifying(BurnedInAnnotation="YES")
    header = safe_header(ds)
    assert set(header) <= set(SAFE_FIELDS) | {"TransferSyntax"}
    assert header["Modality"] == "MG" and header["PatientIdentityRemoved"] == "YES"
    assert str(ds.PatientName) == "Doe^Jane"  # the original is untouched
    assert "BurnedInAnnotation=YES" in " ".join(Deidentifier().apply(ds).warnings)


@pytest.mark.integration
def test_real_cbis_ddsm_file_through_the_cli(tmp_path):
    if not CBIS.is_file():
        pytest.skip(f"{CBIS} not found (the shared data is absent)")
    source = tmp_path / "in" / "Mass-Test_P_00173_LEFT_CC"
    source.mkdir(parents=True)
    shutil.copy(CBIS, source / "1-130.dcm")
    (source / "notes.txt").write_text("not a DICOM")
    result = CliRunner().invoke(
        app, ["deid", str(tmp_path / "in"), str(tmp_path / "out"), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    outputs = list((tmp_path / "out").glob("*.dcm"))
    assert len(outputs) == 1 and "P_00173" not in outputs[0].name
    data = outputs[0].read_bytes()
    assert b"P_00173" not in data and b"CBIS-DDSM" not in data  # names and the private tag
    ds, original = pydicom.dcmread(outputs[0]), pydicom.dcmread(CBIS)
    assert ds.PatientIdentityRemoved == "YES" and ds.StudyDate == ""
    assert not [e.keyword for e in ds.iterall() if BASIC_PROFILE.get(e.keyword) == "X"]
    np.testing.assert_array_equal(ds.pixel_array, original.pixel_array)
    report = (tmp_path / "out" / "deid_report.csv").read_text()
    assert "PatientName" in report and "P_00173" not in report
    assert "1 files de-identified" in result.output
