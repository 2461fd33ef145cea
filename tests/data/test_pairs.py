"""Pairing a woman's two breasts."""

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from breastcad.data.pairs import Breast, breast_of, contralateral, mismatch, pair_images
from breastcad.data.sources.dicom import exam_key, pseudonym
from tests.conftest import shared_dir
from tests.data.conftest import save
from tests.serve.conftest import dicom_bytes


def test_each_breast_finds_the_other_one_of_the_same_woman():
    women = ["w1", "w2", "w1", "w2", "w3", "w4", "w4", "w4", "w5", "w5"]
    sides = ["left", "right", "right", "left", "left", "left", "right", "right", "left", ""]
    frame = pd.DataFrame({"group_id": women, "side": sides})
    other = contralateral(frame).tolist()
    assert other[:4] == [2, 3, 0, 1]  # positions, in any order of rows
    assert other[4] == -1  # w3: the other breast is not in the frame
    assert other[5:8] == [-1, -1, -1]  # w4: two right images, which to compare is a guess
    assert other[8:] == [-1, -1]  # w5: a side that is not left or right


def test_without_sides_nothing_is_paired_and_positions_follow_the_frame():
    plain = pd.DataFrame({"group_id": ["a", "a"]})
    assert contralateral(plain).tolist() == [-1, -1]
    frame = pd.DataFrame(
        {"group_id": ["a", "b", "a", "b"], "side": ["left", "left", "right", "right"]},
        index=[10, 11, 12, 13],
    )
    part = frame.iloc[[0, 2, 3]]  # a subset, as the test part of a split
    assert contralateral(part).tolist() == [1, 0, -1]
    assert contralateral(frame.iloc[:0]).tolist() == []


def _dicom(path: Path, **header: str) -> Path:
    path.write_bytes(dicom_bytes(**header))
    return path


def test_an_image_says_which_breast_it_is_by_its_header_or_its_mini_mias_name(tmp_path):
    left = breast_of(_dicom(tmp_path / "a.dcm", laterality="L", ViewPosition="CC"))
    assert isinstance(left, Breast) and (left.side, left.view) == ("left", "CC")
    assert left.told_by == "DICOM header" and "MRN-0042-SECRET" not in left.woman
    # the same woman on the same day; on another day (an earlier examination) someone else
    right = breast_of(_dicom(tmp_path / "b.dcm", laterality="R", ViewPosition="CC"))
    assert right.woman == left.woman and right.side == "right"
    prior = breast_of(_dicom(tmp_path / "c.dcm", laterality="R", StudyDate="20200101"))
    assert prior.woman != left.woman and prior.view == ""
    # from the upload's bytes as from the file: a suffixless name is found by its preamble
    assert breast_of(Path("upload"), dicom_bytes(laterality="L", ViewPosition="CC")) == left
    assert breast_of(save(tmp_path / "mdb007.png", np.zeros((8, 8), np.uint8))) == Breast(
        "mini-mias-woman-004", "right", "MLO", "mini-MIAS name"
    )
    assert breast_of(tmp_path / "mdb008.pgm", b"P5 ...").side == "left"
    plain = save(tmp_path / "scan.png", np.zeros((8, 8), np.uint8))
    assert "unknown" in breast_of(plain)
    assert "no PatientID" in breast_of(_dicom(tmp_path / "d.dcm", PatientID=""))
    (tmp_path / "e.dcm").write_bytes(b"DICM but not really")
    assert breast_of(tmp_path / "e.dcm").startswith("unreadable DICOM header")


def test_two_images_given_as_a_pair_are_checked_against_what_they_carry(tmp_path):
    def dcm(name, **header):
        return breast_of(_dicom(tmp_path / name, **header))

    left, right = dcm("l.dcm", laterality="L"), dcm("r.dcm", laterality="R")
    assert mismatch(left, right) == ""
    other_woman = dcm("o.dcm", laterality="R", PatientID="MRN-0099")
    assert "different women" in mismatch(left, other_woman)
    assert "MRN" not in mismatch(left, other_woman)  # identifiers are never shown
    assert "both images are of the left breast" in mismatch(left, left)
    cc, mlo = (
        dcm("cc.dcm", laterality="L", ViewPosition="CC"),
        dcm("mlo.dcm", laterality="R", ViewPosition="MLO"),
    )
    assert "different views (CC and MLO)" in mismatch(cc, mlo)
    assert mismatch(left, "which breast it shows is unknown") == ""  # the caller's word


def test_files_are_paired_by_woman_side_and_view_and_the_rest_say_why_not(tmp_path):
    blank = np.zeros((8, 8), np.uint8)
    mias = [save(tmp_path / f"mdb{i:03d}.png", blank) for i in (1, 2, 3)]  # woman 2 half
    l_cc = _dicom(tmp_path / "l_cc.dcm", laterality="L", ViewPosition="CC")
    r_cc = _dicom(tmp_path / "r_cc.dcm", laterality="R", ViewPosition="CC")
    l_mlo = _dicom(tmp_path / "l_mlo.dcm", laterality="L", ViewPosition="MLO")
    twins = [_dicom(tmp_path / f"t{i}.dcm", laterality="L", PatientID="MRN-7") for i in range(2)]
    lone_right = _dicom(tmp_path / "t_r.dcm", laterality="R", PatientID="MRN-7")
    plain = save(tmp_path / "scan.png", blank)
    files = [plain, r_cc, *mias, l_mlo, l_cc, *twins, lone_right]
    pairs, alone = pair_images(files)
    assert pairs == [(l_cc, r_cc), (mias[1], mias[0])]  # left first, in the files' order
    assert list(alone) == [plain, mias[2], l_mlo, *twins, lone_right]
    assert "unknown" in alone[plain]
    assert alone[mias[2]] == "no image of this woman's left breast in the MLO view given"
    assert alone[l_mlo] == "no image of this woman's right breast in the MLO view given"
    for f in [*twins, lone_right]:  # two left images: none of the three is paired
        assert alone[f] == "2 images of this woman's left breast: which to compare is a guess"


def test_de_identified_mammograms_are_still_paired_by_examination(tmp_path):
    """De-identification empties StudyDate and replaces PatientID and the study's UID with
    keyed pseudonyms: one examination's two breasts still pair, an earlier one does not join."""
    import pydicom

    from breastcad.data.deid import Deidentifier

    exam = "1.2.826.0.1.3680043.8.498.1"
    raw = {
        "l.dcm": dicom_bytes(laterality="L", StudyInstanceUID=exam),
        "r.dcm": dicom_bytes(laterality="R", StudyInstanceUID=exam),
        "r_prior.dcm": dicom_bytes(laterality="R", StudyDate="20200101"),
    }
    deid = Deidentifier(key=b"one key for the folder")
    files = []
    for name, data in raw.items():
        ds = pydicom.dcmread(io.BytesIO(data))
        deid.apply(ds)
        assert ds.StudyDate == "" and ds.PatientID != "MRN-0042-SECRET"
        files.append(tmp_path / name)
        ds.save_as(files[-1])
    pairs, alone = pair_images(files)
    assert pairs == [(files[0], files[1])]
    assert list(alone) == [files[2]] and "left breast" in alone[files[2]]


@pytest.mark.integration
def test_the_real_cbis_ddsm_mammogram_is_a_womans_left_cc_by_its_patient_id():
    path = next(shared_dir("cbis-ddsm").rglob("*.dcm"))
    breast = breast_of(path)
    assert (breast.side, breast.view, breast.told_by) == ("left", "CC", "CBIS-DDSM patient id")
    assert breast.woman == exam_key("P_00173", "")  # the patient: CBIS has one examination
    # the adapter reads the same from the header alone: one group per patient, not per image
    from breastcad.data.sources import scan

    by_csv = scan("dicom", shared_dir("cbis-ddsm")).frame
    by_header = scan("dicom", shared_dir("cbis-ddsm"), labels_csv=None).frame
    for frame in (by_csv, by_header):
        assert frame[["group_id", "side", "view"]].values.tolist() == [
            [pseudonym("P_00173"), "left", "CC"]
        ]


def test_a_dicom_folder_knows_each_breast_and_pairs_them_within_a_view(tmp_path):
    from breastcad.data.sources import scan

    root = tmp_path / "mammograms"
    (root / "benign").mkdir(parents=True)
    for side in "LR":
        for view in ("CC", "MLO"):
            _dicom(root / "benign" / f"a_{side}{view}.dcm", laterality=side, ViewPosition=view)
    _dicom(root / "benign" / "b_LCC.dcm", laterality="L", ViewPosition="CC", PatientID="B-1")
    earlier = {"laterality": "L", "ViewPosition": "CC", "StudyDate": "20200101"}
    _dicom(root / "benign" / "a_prior.dcm", **earlier)  # her earlier examination
    frame = scan("dicom", root).frame.reset_index(drop=True)
    names = frame["path"].map(lambda p: Path(p).stem).tolist()
    assert frame.set_index(pd.Index(names))[["side", "view"]].loc["a_LMLO"].tolist() == [
        "left",
        "MLO",
    ]
    partner = {names[i]: (names[j] if j >= 0 else None) for i, j in enumerate(contralateral(frame))}
    assert partner == {
        "a_LCC": "a_RCC",
        "a_RCC": "a_LCC",
        "a_LMLO": "a_RMLO",
        "a_RMLO": "a_LMLO",
        "a_prior": None,  # no other breast in that examination; one patient for the split
        "b_LCC": None,
    }
    by_name = frame.set_index(pd.Index(names))
    assert by_name.loc["a_prior", "group_id"] == by_name.loc["a_LCC", "group_id"]
    assert by_name.loc["a_prior", "exam"] != by_name.loc["a_LCC", "exam"]
    # a labels CSV says side and view where it has them; the header fills in the rest
    pd.DataFrame(
        {
            "file": ["benign/a_LCC.dcm", "benign/a_RCC.dcm"],  # the header's exam
            "patient_id": ["P_1", "P_1"],
            "laterality": ["RIGHT", ""],  # the CSV is taken at its word
            "view": ["CC", ""],
            "pathology": ["BENIGN", "MALIGNANT"],
        }
    ).to_csv(root / "labels.csv", index=False)
    listed = scan("dicom", root).frame
    assert listed["side"].tolist() == ["right", "right"] and listed["view"].tolist() == ["CC"] * 2
    assert listed["group_id"].nunique() == 1 and "P_1" not in listed.to_csv()
    assert listed["exam"].nunique() == 1  # no `exam` column: the patient's one examination


def test_a_dicom_folder_with_a_corrupt_header_or_no_label_reports_and_skips_it(tmp_path):
    # a bad file is named and left out, whether the labels come from a CSV or from folders;
    # it used to end the scan (and so the run) with an error
    from breastcad.data.sources import scan

    root = tmp_path / "mammograms"
    (root / "benign").mkdir(parents=True)
    _dicom(root / "benign" / "good.dcm", laterality="L", ViewPosition="CC")
    _dicom(root / "benign" / "other.dcm", laterality="R", ViewPosition="CC")
    (root / "benign" / "broken.dcm").write_bytes(b"a text file saved as .dcm")
    (root / ".ipynb_checkpoints").mkdir()  # a hidden copy is not data
    (root / ".ipynb_checkpoints" / "good.dcm").write_bytes(
        (root / "benign" / "good.dcm").read_bytes()
    )
    by_folder = scan("dicom", root, labels_csv=None)
    assert sorted(Path(p).name for p in by_folder.frame["path"]) == ["good.dcm", "other.dcm"]
    assert [p for p in by_folder.problems if "broken.dcm" in p and "skipped" in p]
    pd.DataFrame(
        {
            "file": ["benign/good.dcm", "benign/broken.dcm", "benign/other.dcm"],
            "pathology": ["BENIGN", "MALIGNANT", ""],
        }
    ).to_csv(root / "labels.csv", index=False)
    by_csv = scan("dicom", root)
    assert [Path(p).name for p in by_csv.frame["path"]] == ["good.dcm"]
    assert by_csv.classes == ["benign", "malignant"]  # no '' class from the empty cell
    problems = "\n".join(by_csv.problems)
    assert "broken.dcm: unreadable DICOM header" in problems
    assert "other.dcm: no pathology in labels.csv; skipped" in problems
