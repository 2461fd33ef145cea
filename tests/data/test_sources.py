from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from breastcad.data.sources import scan
from breastcad.errors import ConfigError, DataError
from tests.data.conftest import blob_image, save


def test_busi_masks_are_metadata_not_samples(busi_tree):
    m = scan("busi", busi_tree)
    assert len(m) == 8 + 1 + 6 + 1 + 4  # images incl. the duplicate and the truncated file
    assert not m.frame["path"].map(lambda p: "_mask" in Path(p).name).any()
    row = m.frame[m.frame["path"].str.endswith("benign (1).png")].iloc[0]
    assert row["masks"].count(";") == 1 and "benign (1)_mask_1.png" in row["masks"]
    assert m.class_counts() == {"normal": 4, "benign": 9, "malignant": 7}
    assert not m.patient_groups


def test_busi_benign_vs_malignant_leaves_the_normal_images_out(busi_tree):
    m = scan("busi", busi_tree, task="benign_vs_malignant")
    assert m.classes == ["benign", "malignant"]
    assert m.class_counts() == {"benign": 9, "malignant": 7}
    assert not m.frame["path"].str.contains("/normal/").any()
    with pytest.raises(ConfigError, match="unknown BUSI task 'two_class'"):
        scan("busi", busi_tree, task="two_class")


def test_breastmnist_with_and_without_test_arrays(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        f"{s}_{k}": v
        for s, n in (("train", 10), ("val", 4))
        for k, v in (
            ("images", rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)),
            ("labels", (np.arange(n) % 2).reshape(-1, 1).astype(np.uint8)),
        )
    }
    np.savez(tmp_path / "breastmnist.npz", **arrays)
    m = scan("breastmnist", tmp_path / "breastmnist.npz")
    assert len(m) == 14 and set(m.frame["official_split"]) == {"train", "val"}
    assert m.frame.loc[0, "label"] == "malignant"  # label 0 = malignant
    np.savez(
        tmp_path / "breastmnist_128.npz",
        **arrays,
        test_images=arrays["val_images"],
        test_labels=arrays["val_labels"],
    )
    assert set(scan("breastmnist", tmp_path / "breastmnist_128.npz").frame["official_split"]) == {
        "train",
        "val",
        "test",
    }


def write_mias(root: Path) -> None:
    info = """header text
mdb001 G CIRC B 535 425 197
mdb002 G CIRC B 522 280 69
mdb003 D NORM
mdb004 D NORM
mdb005 F CALC M 477 133 30
mdb005 F CALC B 500 168 26
mdb006 F NORM
"""
    (root / "Info.txt").write_text(info)
    for i in range(1, 7):
        save(
            root / f"mdb{i:03d}.{'pgm' if i % 2 else 'png'}",
            blob_image(i),
            "PPM" if i % 2 else None,
        )


def test_mini_mias_pgm_and_png_groups_by_woman(tmp_path):
    write_mias(tmp_path)
    m = scan("mini-mias", tmp_path)
    assert m.frame["label"].tolist() == [
        "abnormal",
        "abnormal",
        "normal",
        "normal",
        "abnormal",
        "normal",
    ]
    assert m.frame["group_id"].tolist() == ["woman-001"] * 2 + ["woman-002"] * 2 + ["woman-003"] * 2
    row5 = m.frame.iloc[4]
    assert row5["severity"] == "M" and row5["lesions"].count(";") == 1  # two lines, one image
    bm = scan("mini-mias", tmp_path, task="benign_vs_malignant")
    assert bm.frame["label"].tolist() == ["benign", "benign", "malignant"]
    with pytest.raises(ConfigError):
        scan("mini-mias", tmp_path, task="nope")
    assert m.problems == []  # Info.txt's prose lines are not problems
    # an image Info.txt does not list, and a line naming a reference it cannot read: said
    save(tmp_path / "mdb007.png", blob_image(7))
    info = tmp_path / "Info.txt"
    info.write_text(info.read_text() + "mdb008 ?? CIRC\n")
    problems = scan("mini-mias", tmp_path).problems
    assert any(
        "line 9 names a reference but is not understood: 'mdb008 ?? CIRC'" in p for p in problems
    )
    assert any(p.endswith("mdb007.png: not listed in Info.txt; skipped") for p in problems)


def test_idc_label_disagreement_is_reported_and_excluded(tmp_path):
    base = tmp_path / "IDC_regular_ps50_idx5"
    for patient in ("10253", "10254"):
        for cls in (0, 1):
            for k in range(3):
                save(
                    base / patient / str(cls) / f"{patient}_idx5_x{k * 50}_y100_class{cls}.png",
                    blob_image(k, (50, 50), rgb=True),
                )
    save(base / "10253" / "0" / "10253_idx5_x999_y1_class1.png", blob_image(9, (50, 50), True))
    save(base / "10254" / "1" / "10254_idx5_x2000_y0_class1.png", blob_image(9, (31, 50), True))
    m = scan("idc", tmp_path)
    assert len(m) == 13 and set(m.frame["group_id"]) == {"10253", "10254"}
    assert any("class 1, folder says 10253/0" in p for p in m.problems)
    assert {"x", "y"} <= set(m.frame.columns)


def test_breakhis_parses_names_and_filters_magnification(tmp_path):
    for mag in (40, 200):
        for cls, tumour, slide in (("B", "A", "14-22549AB"), ("M", "DC", "14-3909")):
            folder = (
                tmp_path
                / "BreaKHis_v1/histology_slides/breast"
                / ("benign" if cls == "B" else "malignant")
                / "SOB"
                / tumour
                / f"SOB_{cls}_{tumour}_{slide}"
                / f"{mag}X"
            )
            save(folder / f"SOB_{cls}_{tumour}-{slide}-{mag}-001.png", blob_image(mag, rgb=True))
    hidden = folder / ".ipynb_checkpoints" / f"SOB_{cls}_{tumour}-{slide}-{mag}-001-checkpoint.png"
    save(hidden, blob_image(mag, rgb=True))  # a notebook's copy: neither an image nor a problem
    m = scan("breakhis", tmp_path)
    assert len(m) == 4 and set(m.frame["group_id"]) == {"14-22549AB", "14-3909"}
    assert m.problems == []
    assert set(m.frame["tumour_type"]) == {"adenosis", "ductal_carcinoma"}
    assert len(scan("breakhis", tmp_path, magnifications=[200])) == 2


def test_folder_with_group_csv(tmp_path):
    for label in ("a", "b"):
        for i in range(3):
            save(tmp_path / label / f"{i}.jpg", blob_image(i, rgb=True), "JPEG")
    save(tmp_path / "a" / "x.tif", blob_image(5), "TIFF")
    pd.DataFrame({"file": ["a/0.jpg", "a/1.jpg"], "group_id": ["p1", "p1"]}).to_csv(
        tmp_path / "groups.csv", index=False
    )
    m = scan("folder", tmp_path, groups_csv="groups.csv")
    assert len(m) == 7 and m.patient_groups
    assert (m.frame["group_id"] == "p1").sum() == 2
    # images the CSV does not name (their own groups) and rows naming no image are said:
    # a typo in the CSV used to split a patient's images apart without a word
    assert m.problems[0].startswith("groups.csv: 5 images it does not name, each its own")
    pd.DataFrame({"file": ["a/0.jpg", "a/1.JPG"], "group_id": ["p1", "p1"]}).to_csv(
        tmp_path / "groups.csv", index=False
    )
    typo = scan("folder", tmp_path, groups_csv="groups.csv")
    assert "groups.csv: 1 rows name no image (first: a/1.JPG)" in typo.problems
    # an empty group id is no group: it used to join every such image into one
    pd.DataFrame({"file": ["a/0.jpg", "a/1.jpg", "b/0.jpg"], "group_id": ["", "", "p2"]}).to_csv(
        tmp_path / "groups.csv", index=False
    )
    empty = scan("folder", tmp_path, groups_csv="groups.csv")
    assert empty.frame["group_id"].nunique() == 7
    # a notebook's hidden checkpoint folders are neither a class nor images of one
    save(tmp_path / ".ipynb_checkpoints" / "0.jpg", blob_image(0, rgb=True), "JPEG")
    save(tmp_path / "a" / ".ipynb_checkpoints" / "0-checkpoint.jpg", blob_image(0), "JPEG")
    assert scan("folder", tmp_path).classes == ["a", "b"] and len(scan("folder", tmp_path)) == 7
    with pytest.raises(DataError, match="groups CSV not found"):
        scan("folder", tmp_path, groups_csv="nope.csv")


def test_unknown_dataset_and_empty_layout(tmp_path):
    with pytest.raises(ConfigError, match="unknown dataset"):
        scan("nope", tmp_path)
    with pytest.raises(DataError, match="no busi samples"):
        scan("busi", tmp_path)
    with pytest.raises(DataError, match="not found"):
        scan("busi", tmp_path / "missing")


def test_dicom_pseudonyms_are_stable_and_keyed_by_the_environment(monkeypatch):
    from breastcad.data.sources.dicom import pseudonym

    monkeypatch.delenv("BREASTCAD_PSEUDONYM_KEY", raising=False)
    default = pseudonym("P_00173")
    assert default == pseudonym("P_00173") and default != pseudonym("P_00174")
    assert "00173" not in default and default.startswith("patient-")
    monkeypatch.setenv("BREASTCAD_PSEUDONYM_KEY", "site secret")
    assert pseudonym("P_00173") != default
