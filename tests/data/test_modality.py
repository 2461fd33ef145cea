"""A DICOM's Modality against the modality a model was trained on (`data.modality`)."""

from __future__ import annotations

import pytest

from breastcad.data.modality import dicom_modality, modality_warning
from tests.conftest import shared_dir
from tests.data.conftest import blob_image, save
from tests.serve.conftest import dicom_bytes


def test_another_modality_is_named_and_the_models_own_is_not():
    warning = modality_warning("ultrasound", "MG")
    assert warning.startswith("DICOM Modality MG (mammography), but the model was trained on")
    assert "ultrasound images" in warning
    assert modality_warning("histopathology", "MR").startswith("DICOM Modality MR (magnetic")
    assert modality_warning("mammography", "ZZ").startswith("DICOM Modality ZZ, but")  # as is
    assert modality_warning("ultrasound", "us") == ""  # the code's case does not matter
    for code in ("MG", "DX", "CR"):  # mammograms are filed under all three
        assert modality_warning("mammography", code) == ""
    assert modality_warning("mammography", "US") != ""


@pytest.mark.parametrize("code", [None, "", "OT", " "])
def test_a_code_that_says_nothing_gives_no_warning(code):
    assert modality_warning("ultrasound", code) == ""


def test_a_model_of_plain_folders_accepts_every_modality():
    assert modality_warning("image", "CT") == ""
    assert modality_warning("tabular", "MG") == ""


def test_the_modality_comes_from_the_header_of_dicom_files_only(tmp_path):
    ultrasound = tmp_path / "scan.dcm"
    ultrasound.write_bytes(dicom_bytes(modality="US"))
    bare = tmp_path / "EXPORT0001"  # no suffix: known by its preamble
    bare.write_bytes(dicom_bytes(modality="MG"))
    header_only = tmp_path / "header.dcm"
    header_only.write_bytes(dicom_bytes(with_pixels=False, modality="US"))
    unnamed = tmp_path / "none.dcm"
    unnamed.write_bytes(dicom_bytes(modality=""))
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"not a DICOM at all")
    picture = save(tmp_path / "picture.png", blob_image(0))
    assert dicom_modality(ultrasound) == "US" and dicom_modality(header_only) == "US"
    assert dicom_modality(bare) == "MG"
    assert dicom_modality(unnamed) is None
    assert dicom_modality(broken) is None and dicom_modality(picture) is None
    assert dicom_modality(tmp_path / "missing.dcm") is None


@pytest.mark.integration
def test_the_real_cbis_ddsm_mammogram_says_mammography():
    root = shared_dir("cbis-ddsm")
    (file,) = sorted(root.rglob("*.dcm"))
    assert dicom_modality(file) == "MG"
    assert modality_warning("mammography", dicom_modality(file)) == ""
    assert "MG (mammography)" in modality_warning("ultrasound", dicom_modality(file))
