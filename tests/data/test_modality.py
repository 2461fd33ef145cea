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


def test_data_of_another_modality_is_said_and_its_own_is_not():
    from breastcad.data.modality import data_modality_warning

    warning = data_modality_warning("histopathology", "ultrasound")
    assert warning.startswith("the data are ultrasound images, the model was trained on")
    assert data_modality_warning("ultrasound", "ultrasound") == ""
    assert data_modality_warning("ultrasound", "image") == ""  # a plain folder: unknown
    assert data_modality_warning("image", "mammography") == ""


def test_evaluating_a_bundle_on_another_modality_says_so(busi_tree, tmp_path):
    """A histology bundle evaluated on an ultrasound layout: the terminal, results.json and
    the report say the figures are not how it does on its own kind of image; an ultrasound
    bundle on the same data gets no such line."""
    import json

    from typer.testing import CliRunner

    from breastcad.cli import app
    from tests.conftest import make_image_bundle

    classes = ("benign", "malignant", "normal")
    said = {}
    for modality in ("histopathology", "ultrasound"):
        bundle = make_image_bundle(
            tmp_path / modality, classes=classes, channels=1, modality=modality
        )
        out = tmp_path / f"eval-{modality}"
        args = ["evaluate", "--model", str(bundle), "--dataset", "busi", "--root", str(busi_tree)]
        done = CliRunner().invoke(app, [*args, "--out", str(out), "--quiet"])
        assert done.exit_code == 0, done.output
        results = json.loads((out / "results.json").read_text())
        said[modality] = (done.output, results, (out / "report.md").read_text())
    output, results, report = said["histopathology"]
    assert results["data"]["modality"] == "ultrasound"
    assert results["model"]["trained_on_modality"] == "histopathology"
    expected = "the data are ultrasound images, the model was trained on histopathology images"
    assert results["data"]["modality_warning"].startswith(expected)
    assert f"warning: {expected}" in output
    assert f"**Another modality**: {expected}" in report
    output, results, report = said["ultrasound"]
    assert "modality_warning" not in results["data"]
    assert "Another modality" not in report and "the model was trained on" not in output
