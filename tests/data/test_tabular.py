from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from breastcad.config import TabularDataConfig
from breastcad.data.tabular import canonical_feature_name, load_csv, load_wdbc
from breastcad.errors import DataError


def write(tmp_path: Path, frame: pd.DataFrame, name: str = "t.csv") -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def csv_cfg(path: Path, **kw) -> TabularDataConfig:
    return TabularDataConfig(source="csv", path=path, **kw)


def test_wdbc_codes_malignant_as_one(wdbc):
    # scikit-learn codes malignant as 0; breastcad flips it once: 212 malignant, 357 benign.
    assert wdbc.X.shape == (569, 30)
    assert int(wdbc.y.sum()) == 212
    radius = wdbc.X[:, wdbc.feature_names.index("mean radius")]
    assert radius[wdbc.y == 1].mean() > radius[wdbc.y == 0].mean()  # malignant nuclei are larger
    assert wdbc.check.class_counts == {"benign": 357, "malignant": 212}


def test_kaggle_csv_matches_embedded_wdbc(kaggle_csv, wdbc):
    data = load_csv(kaggle_csv)
    assert data.feature_names == wdbc.feature_names  # radius_mean -> mean radius
    np.testing.assert_allclose(data.X, wdbc.X, rtol=1e-12)
    np.testing.assert_array_equal(data.y, wdbc.y)
    assert data.check.dropped_columns == ["Unnamed: 32"]
    assert data.ids[0] == "842302"
    assert data.fingerprint() == wdbc.fingerprint()


@pytest.mark.parametrize(
    ("sep", "decimal", "encoding"),
    [(";", ",", "utf-8"), (";", ".", "utf-8"), ("\t", ".", "utf-8"), (",", ".", "utf-8-sig")],
)
def test_spreadsheet_exports_read_like_the_plain_csv(kaggle_csv, tmp_path, sep, decimal, encoding):
    """Semicolons with decimal commas (spreadsheets in many locales), tabs, a byte-order mark."""
    plain = load_csv(kaggle_csv)
    frame = pd.read_csv(kaggle_csv, dtype={"id": str})
    frame.loc[3, "radius_mean"] = np.nan  # a missing value stays missing
    path = tmp_path / "export.csv"
    frame.to_csv(path, sep=sep, decimal=decimal, index=False, encoding=encoding)
    data = load_csv(path)
    assert data.feature_names == plain.feature_names and data.ids[0] == "842302"
    np.testing.assert_array_equal(data.y, plain.y)
    radius = plain.feature_names.index("mean radius")
    assert sum(data.check.missing_per_column.values()) == 1 and np.isnan(data.X[3, radius])
    keep = np.ones(len(plain.X), bool)
    keep[3] = False
    np.testing.assert_allclose(data.X[keep], plain.X[keep], rtol=1e-12)


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("radius_mean", "mean radius"),
        ("concave points_worst", "worst concave points"),
        ("area_se", "area error"),
        ("age", "age"),
    ],
)
def test_canonical_feature_name(name, canonical):
    assert canonical_feature_name(name) == canonical


@pytest.mark.parametrize(
    ("labels", "expected"),
    [(["malignant", "benign"], [1, 0]), (["1", "0"], [1, 0]), (["Benign", "Malignant"], [0, 1])],
)
def test_positive_label_inferred(tmp_path, labels, expected):
    frame = pd.DataFrame({"a": [1.0, 2.0] * 3, "label": labels * 3})
    data = load_csv(
        write(tmp_path, frame),
        csv_cfg(tmp_path / "t.csv", label_column="label", drop_duplicates=False),
    )
    assert data.y.tolist() == expected * 3


def test_named_label_column_and_positive_value(tmp_path):
    frame = pd.DataFrame({"f1": range(6), "f2": range(6, 12), "outcome": list("xyxyxy")})
    path = write(tmp_path, frame)
    data = load_csv(path, csv_cfg(path, label_column="outcome", positive_label="y"))
    assert data.y.tolist() == [0, 1, 0, 1, 0, 1]
    assert data.feature_names == ["f1", "f2"]


def test_ambiguous_labels_need_positive_label(tmp_path):
    path = write(tmp_path, pd.DataFrame({"f": [1, 2, 3, 4], "diagnosis": list("xyxy")}))
    with pytest.raises(DataError, match="--positive-label") as err:
        load_csv(path)
    assert str(path) in str(err.value)


def test_three_label_values_rejected(tmp_path):
    path = write(tmp_path, pd.DataFrame({"f": [1, 2, 3], "diagnosis": ["M", "B", "X"]}))
    with pytest.raises(DataError, match="expected two"):
        load_csv(path)


def test_missing_label_column_names_file_and_columns(tmp_path):
    path = write(tmp_path, pd.DataFrame({"f1": [1, 2], "f2": [3, 4]}))
    with pytest.raises(DataError) as err:
        load_csv(path)
    message = str(err.value)
    assert str(path) in message and "diagnosis" in message and "f1, f2" in message


def test_non_numeric_feature_names_column_and_row(tmp_path):
    frame = pd.DataFrame({"f1": ["1.0", "2.5", "abc"], "diagnosis": ["M", "B", "M"]})
    path = write(tmp_path, frame)
    with pytest.raises(DataError, match=r"'f1' \(row 3: 'abc'\)") as err:
        load_csv(path)
    assert str(path) in str(err.value)


def test_empty_file_and_header_only(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        load_csv(empty)
    header = tmp_path / "header.csv"
    header.write_text("id,diagnosis,f1\n")
    with pytest.raises(DataError, match="no rows"):
        load_csv(header)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_csv(tmp_path / "nope.csv")


def missing_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "f1": [1.0, np.nan, 3.0, 4.0, 5.0, 6.0],
            "f2": [1.0, 2.0, 3.0, 4.0, np.nan, 6.0],
            "diagnosis": list("MBMBMB"),
        }
    )


def test_missing_values_impute_keeps_rows_and_reports(tmp_path):
    path = write(tmp_path, missing_frame())
    data = load_csv(path, csv_cfg(path, missing="impute"))
    assert len(data.y) == 6 and np.isnan(data.X).sum() == 2  # imputed inside each fold later
    assert data.check.missing_per_column == {"f1": 1, "f2": 1}
    assert data.check.rows_with_missing == 2


def test_missing_values_drop_and_error(tmp_path):
    path = write(tmp_path, missing_frame())
    dropped = load_csv(path, csv_cfg(path, missing="drop"))
    assert len(dropped.y) == 4 and not np.isnan(dropped.X).any()
    assert dropped.check.rows_dropped_missing == 2
    with pytest.raises(DataError, match="2 rows have missing values"):
        load_csv(path, csv_cfg(path, missing="error"))


def test_duplicates_dropped_and_conflicts_removed(tmp_path):
    frame = pd.DataFrame(
        {
            "f1": [1.0, 1.0, 2.0, 2.0, 3.0, 4.0],
            "f2": [5.0, 5.0, 6.0, 6.0, 7.0, 8.0],
            "diagnosis": ["M", "M", "M", "B", "B", "M"],
        }
    )
    path = write(tmp_path, frame)
    data = load_csv(path)
    # rows 0/1 are one sample twice (one kept); rows 2/3 disagree on the label (both dropped)
    assert data.check.duplicate_rows == 1
    assert data.check.conflicting_duplicate_rows == 2
    assert data.check.rows_dropped_duplicates == 3
    assert sorted(map(tuple, data.X.tolist())) == [(1.0, 5.0), (3.0, 7.0), (4.0, 8.0)]
    kept = load_csv(path, csv_cfg(path, drop_duplicates=False))
    assert len(kept.y) == 6 and kept.check.rows_dropped_duplicates == 0


def test_far_out_values_are_reported_not_removed(tmp_path):
    values = [1.0, 1.1, 0.9, 1.01, 1.05, 0.95, 1.02, 50.0]
    path = write(tmp_path, pd.DataFrame({"f": values, "diagnosis": list("MBMBMBMB")}))
    data = load_csv(path)
    assert data.check.outliers_per_feature == {"f": 1}
    assert len(data.y) == 8
    assert any("far-out" in line for line in data.check.lines())


def test_rows_without_label_are_dropped_and_reported(tmp_path):
    frame = pd.DataFrame({"f": [1.0, 2.0, 3.0, 4.0], "diagnosis": ["M", None, "B", "M"]})
    data = load_csv(write(tmp_path, frame))
    assert len(data.y) == 3 and data.check.dropped_unlabelled == 1


def test_fingerprint_changes_with_data(wdbc):
    other = load_wdbc()
    assert other.fingerprint() == wdbc.fingerprint()
    other.X[0, 0] += 1e-9
    assert other.fingerprint() != wdbc.fingerprint()
