"""Tabular data: the Wisconsin diagnostic (WDBC) features and any CSV with a label column.

Labels are always 1 = malignant (the positive class), 0 = benign. Note that scikit-learn's
`load_breast_cancer` codes malignant as 0; it is flipped here, once.

Example:
    >>> data = load_wdbc()
    >>> data.X.shape, int(data.y.sum())
    ((569, 30), 212)
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from breastcad.config import TabularDataConfig
from breastcad.errors import DataError

CLASS_NAMES = ("benign", "malignant")

_WDBC_STATS = {"mean": "mean {}", "se": "{} error", "worst": "worst {}"}
_POSITIVE_NAMES = {"m": "b", "malignant": "benign", "1": "0", "1.0": "0.0", "true": "false"}


@dataclass
class DataCheck:
    """What the data checks found and what was done about it (reported in every run)."""

    n_rows_read: int
    n_rows_used: int
    missing_per_column: dict[str, int]
    rows_with_missing: int
    rows_dropped_missing: int
    duplicate_rows: int
    conflicting_duplicate_rows: int
    rows_dropped_duplicates: int
    outliers_per_feature: dict[str, int]
    class_counts: dict[str, int]
    dropped_columns: list[str] = field(default_factory=list)
    dropped_unlabelled: int = 0

    def lines(self) -> list[str]:
        """Human-readable findings, one per line."""
        out = [f"{self.n_rows_read} rows read, {self.n_rows_used} used"]
        if self.dropped_columns:
            out.append(f"empty columns dropped: {', '.join(self.dropped_columns)}")
        if self.dropped_unlabelled:
            out.append(f"{self.dropped_unlabelled} rows without a label dropped")
        missing = {k: v for k, v in self.missing_per_column.items() if v}
        if missing:
            out.append(
                f"{self.rows_with_missing} rows with missing values "
                f"({self.rows_dropped_missing} dropped); per column: {missing}"
            )
        else:
            out.append("no missing values")
        out.append(
            f"{self.duplicate_rows} exact duplicate rows, {self.conflicting_duplicate_rows} with "
            f"conflicting labels; {self.rows_dropped_duplicates} dropped"
        )
        n_out = sum(self.outliers_per_feature.values())
        top = sorted(self.outliers_per_feature.items(), key=lambda kv: -kv[1])[:5]
        out.append(
            f"{n_out} far-out values (beyond 3 IQR of the quartiles; reported, not removed); "
            f"most in: {dict(top)}"
        )
        out.append(f"class balance: {self.class_counts}")
        return out


@dataclass
class TabularData:
    """Features, labels (1 = malignant) and row ids, after cleaning."""

    X: np.ndarray
    y: np.ndarray
    feature_names: list[str]
    ids: list[str]
    source: str
    check: DataCheck

    def fingerprint(self) -> str:
        """sha256 of the features, labels and feature names: identifies the exact data used."""
        h = hashlib.sha256()
        h.update("\x1f".join(self.feature_names).encode())
        h.update(np.ascontiguousarray(self.X, dtype=np.float64).tobytes())
        h.update(np.ascontiguousarray(self.y, dtype=np.int64).tobytes())
        return h.hexdigest()

    def record(self) -> dict[str, Any]:
        """What a run's or an evaluation's results say of the data."""
        return {
            "source": self.source,
            "n_samples": len(self.y),
            "n_features": self.X.shape[1],
            "feature_names": self.feature_names,
            "fingerprint": self.fingerprint(),
            "checks": self.check.lines(),
            "class_counts": self.check.class_counts,
            "positive_class": "malignant",
        }


def canonical_feature_name(name: str) -> str:
    """Map the UCI/Kaggle WDBC column names (`radius_mean`) to scikit-learn's (`mean radius`).

    Other names are returned stripped, unchanged.
    """
    name = name.strip()
    match = re.fullmatch(r"(.+?)_(mean|se|worst)", name)
    if match:
        return _WDBC_STATS[match.group(2)].format(match.group(1).strip())
    return name


def load_wdbc() -> TabularData:
    """The 569 WDBC samples that ship with scikit-learn, malignant = 1."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.frame.copy()
    frame["diagnosis"] = np.where(bunch.target == 0, "M", "B")
    frame = frame.drop(columns=["target"])
    frame.insert(0, "id", [f"wdbc-{i}" for i in range(len(frame))])
    return _prepare(
        frame, TabularDataConfig(positive_label="M"), "sklearn.datasets.load_breast_cancer"
    )


def load_tabular(cfg: TabularDataConfig) -> TabularData:
    """Load the data a config names (WDBC or a CSV), checked and cleaned."""
    if cfg.source == "wdbc":
        return load_wdbc()
    assert cfg.path is not None  # guaranteed by the config validator
    return load_csv(cfg.path, cfg)


def read_csv(path: Path) -> pd.DataFrame:
    """Read a CSV, with a clear error for a missing, empty or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path)
    if path.stat().st_size == 0:
        raise DataError("the file is empty", path)
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            header = f.readline()
        sep = _separator(header)
        frame = pd.read_csv(
            path, sep=sep, na_values=["?"], skipinitialspace=True, encoding="utf-8-sig"
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"not a readable CSV ({exc})", path) from exc
    if frame.empty:
        raise DataError("the CSV has a header but no rows", path)
    if sep != ",":  # spreadsheet exports that use ';' or tabs often write decimal commas
        for column in frame.columns:
            if pd.api.types.is_numeric_dtype(frame[column]):
                continue
            values = frame[column].dropna().astype(str).str.strip()
            number = values.str.fullmatch(r"[-+]?\d+(,\d*)?([eE][-+]?\d+)?")
            if len(values) and number.all() and values.str.contains(",").any():
                frame[column] = pd.to_numeric(
                    frame[column].astype(str).str.strip().str.replace(",", "."), errors="coerce"
                ).where(frame[column].notna())
    return frame


def _separator(header: str) -> str:
    """',' unless the header line has none and is split by ';' or tabs (spreadsheet exports
    in many locales)."""
    if "," in header:
        return ","
    counts = {sep: header.count(sep) for sep in (";", "\t")}
    best = max(counts, key=counts.__getitem__)
    return best if counts[best] else ","


def load_csv(path: Path, cfg: TabularDataConfig | None = None) -> TabularData:
    """Load a labelled CSV: the UCI/Kaggle `data.csv` or any CSV with a named label column."""
    cfg = cfg or TabularDataConfig(source="csv", path=path)
    return _prepare(read_csv(path), cfg, str(path))


def _prepare(frame: pd.DataFrame, cfg: TabularDataConfig, source: str) -> TabularData:
    n_read = len(frame)
    frame, dropped_columns = _drop_empty_columns(frame)
    label_col = _pick_column(frame, cfg.label_column, "diagnosis", "label", source)
    id_col = _pick_column(frame, cfg.id_column, "id", "id", source, required=False)
    labelled = frame[label_col].notna()
    dropped_unlabelled = int((~labelled).sum())
    frame = frame[labelled].reset_index(drop=True)
    y = encode_labels(frame[label_col], cfg.positive_label, source, label_col)
    ids = frame[id_col].astype(str).tolist() if id_col else [str(i) for i in range(len(frame))]
    features = frame.drop(columns=[c for c in (label_col, id_col) if c])
    features.columns = [canonical_feature_name(str(c)) for c in features.columns]
    X = numeric_features(features, source)
    return _clean(
        X, y, ids, list(features.columns), cfg, source, n_read, dropped_columns, dropped_unlabelled
    )


def _drop_empty_columns(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    empty = [c for c in frame.columns if frame[c].isna().all()]
    return frame.drop(columns=empty), [str(c) for c in empty]


def _pick_column(
    frame: pd.DataFrame,
    given: str | None,
    default: str,
    what: str,
    source: str,
    required: bool = True,
) -> str | None:
    if given is not None:
        if given not in frame.columns:
            raise DataError(
                f"no {what} column '{given}'; columns are: {', '.join(map(str, frame.columns))}",
                source,
            )
        return given
    if default in frame.columns:
        return default
    if required:
        raise DataError(
            f"no '{default}' column: name the {what} column (--label-column); columns are: "
            f"{', '.join(map(str, frame.columns))}",
            source,
        )
    return None


def encode_labels(labels: pd.Series, positive: str | None, source: str, column: str) -> np.ndarray:
    """Labels as 1 = malignant / 0 = benign; the positive value is given or inferred."""
    text = labels.astype(str).str.strip()
    values = sorted(set(text))
    if len(values) > 2:
        raise DataError(
            f"label column '{column}' has {len(values)} values {values[:6]}; expected two", source
        )
    if positive is None:
        lowered = {v.lower() for v in values}
        for pos, neg in _POSITIVE_NAMES.items():
            if lowered <= {pos, neg}:
                positive = next((v for v in values if v.lower() == pos), pos)
                break
        else:
            raise DataError(
                f"cannot tell which of {values} in '{column}' is malignant: pass --positive-label",
                source,
            )
    elif positive not in values and len(values) == 2:
        raise DataError(f"positive label '{positive}' is not one of {values} in '{column}'", source)
    return (text == str(positive)).to_numpy(dtype=np.int64)


def numeric_features(features: pd.DataFrame, source: str) -> np.ndarray:
    """Features as a float array; a non-numeric column is an error naming it and a bad value."""
    if features.shape[1] == 0:
        raise DataError("no feature columns besides the label and id", source)
    bad = []
    for col in features.columns:
        values = pd.to_numeric(features[col], errors="coerce")
        not_numeric = values.isna() & features[col].notna()
        if not_numeric.any():
            row = int(np.flatnonzero(not_numeric.to_numpy())[0])
            bad.append(f"'{col}' (row {row + 1}: {features[col].iloc[row]!r})")
    if bad:
        raise DataError(f"non-numeric feature values in {', '.join(bad)}", source)
    X = features.apply(pd.to_numeric).to_numpy(dtype=np.float64)
    infinite = np.isinf(X)
    if infinite.any():  # not a measurement, and not missing either: say where
        row, col = (int(v[0]) for v in np.nonzero(infinite))
        raise DataError(
            f"infinite feature values ({int(infinite.sum())}; first: '{features.columns[col]}' "
            f"row {row + 1}, {X[row, col]}); leave the cell empty if the value is missing",
            source,
        )
    return X


def numeric_rows(features: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """Features as floats, row by row, for prediction: a cell that is not a finite number
    (text, inf) becomes NaN and its row's problem names it ("" for rows without one), so one
    bad cell costs its row, not the table (`numeric_features` refuses the table: training)."""
    X = np.empty(features.shape, dtype=np.float64)
    problems: list[list[str]] = [[] for _ in range(len(features))]
    for k, col in enumerate(features.columns):
        values = pd.to_numeric(features[col], errors="coerce").to_numpy(dtype=np.float64)
        raw = features[col].to_numpy(dtype=object)
        bad = (np.isnan(values) & features[col].notna().to_numpy()) | np.isinf(values)
        for row in np.flatnonzero(bad):
            problems[row].append(f"'{col}' is {raw[row]!r}, not a finite number")
        X[:, k] = np.where(bad, np.nan, values)
    return X, ["; ".join(p) for p in problems]


def _clean(
    X: np.ndarray,
    y: np.ndarray,
    ids: list[str],
    names: list[str],
    cfg: TabularDataConfig,
    source: str,
    n_read: int,
    dropped_columns: list[str],
    dropped_unlabelled: int,
) -> TabularData:
    missing = np.isnan(X)
    rows_missing = missing.any(axis=1)
    if rows_missing.any() and cfg.missing == "error":
        raise DataError(
            f"{int(rows_missing.sum())} rows have missing values (first: row "
            f"{int(np.flatnonzero(rows_missing)[0]) + 1}); use missing: impute or drop",
            source,
        )
    keep = np.ones(len(y), bool)
    if cfg.missing == "drop":
        keep &= ~rows_missing
    row_keys = pd.util.hash_pandas_object(pd.DataFrame(X), index=False).to_numpy()
    dup_rows = pd.DataFrame({"k": row_keys, "y": y}).duplicated(keep="first").to_numpy()
    conflicting = pd.Series(y).groupby(row_keys).transform("nunique").to_numpy() > 1
    dropped_duplicates = 0
    if cfg.drop_duplicates:
        dropped_duplicates = int((keep & (dup_rows | conflicting)).sum())
        keep &= ~(dup_rows | conflicting)
    check = DataCheck(
        n_rows_read=n_read,
        n_rows_used=int(keep.sum()),
        missing_per_column={n: int(c) for n, c in zip(names, missing.sum(axis=0), strict=True)},
        rows_with_missing=int(rows_missing.sum()),
        rows_dropped_missing=int(rows_missing.sum()) if cfg.missing == "drop" else 0,
        duplicate_rows=int(dup_rows.sum()),
        conflicting_duplicate_rows=int(conflicting.sum()),
        rows_dropped_duplicates=dropped_duplicates,
        outliers_per_feature=_far_out_counts(X, names),
        class_counts={CLASS_NAMES[k]: int((y[keep] == k).sum()) for k in (0, 1)},
        dropped_columns=dropped_columns,
        dropped_unlabelled=dropped_unlabelled,
    )
    if check.n_rows_used == 0:
        raise DataError("no rows left after cleaning", source)
    if len(set(y[keep].tolist())) < 2:
        raise DataError(f"only one class present after cleaning: {check.class_counts}", source)
    return TabularData(
        X=X[keep],
        y=y[keep],
        feature_names=names,
        ids=[i for i, k in zip(ids, keep, strict=True) if k],
        source=source,
        check=check,
    )


def _far_out_counts(X: np.ndarray, names: list[str]) -> dict[str, int]:
    q1, q3 = np.nanpercentile(X, [25, 75], axis=0)
    iqr = q3 - q1
    far = (q1 - 3 * iqr > X) | (q3 + 3 * iqr < X)
    return {n: int(c) for n, c in zip(names, far.sum(axis=0), strict=True)}
