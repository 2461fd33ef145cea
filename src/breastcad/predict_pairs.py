"""A woman's two breasts through one bundle: each image alone, as `Predictor.predict_paths`
gives it, and against the other with the bilateral fit of the bundle's run
(`evaluation.bilateral`); pairs from a CSV (`read_pairs`), or found by what the files carry
(`data.pairs.pair_images`). `Predictor.predict_pairs` and `Predictor.predict_paired` call these.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from breastcad.data.pairs import Breast, breast_of, mismatch, pair_images
from breastcad.errors import BundleError, ConfigError, DataError
from breastcad.predict import expand_paths

if TYPE_CHECKING:
    from breastcad.predict import Predictor


def read_pairs(path: str | Path) -> list[tuple[Path, Path]]:
    """A CSV of a woman's two images per row, columns `image` and `other` (paths relative to
    the CSV's folder unless absolute), for `Predictor.predict_pairs`."""
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise DataError(f"cannot read the pairs file: {error}", path) from error
    missing = {"image", "other"} - set(table.columns)
    if missing:
        raise DataError(
            f"the pairs file needs columns 'image' and 'other' (missing: "
            f"{', '.join(sorted(missing))}; found: {', '.join(table.columns) or 'none'})",
            path,
        )
    empty = table.index[(table["image"] == "") | (table["other"] == "")]
    if len(empty):
        raise DataError(f"row {int(empty[0]) + 2} of the pairs file has an empty path", path)
    if table.empty:
        raise DataError("the pairs file has no rows", path)
    return [
        (path.parent / a, path.parent / b)  # an absolute path stays as it is
        for a, b in zip(table["image"], table["other"], strict=True)
    ]


def pair_table(
    predictor: Predictor,
    pairs: Iterable[tuple[str | Path, str | Path]],
    batch_size: int = 32,
    progress: bool = True,
    jobs: int = 2,
    alone: dict[Path, str] | None = None,
    breasts: dict[Path, Breast | str] | None = None,
) -> pd.DataFrame:
    """Each (image, other) pair of one woman's two breasts, both ways: one row per image
    with its own probabilities and class (as `predict_paths`), its partner, and
    `p_bilateral` / `prediction_bilateral`, the probability of the bilateral score
    (its log-odds minus the partner's) and the decision at the bundle's bilateral
    threshold; empty where either image could not be read, or where what the two carry
    says they are not one woman's two breasts (`data.pairs.mismatch`: DICOM patient,
    side, view; mini-MIAS names); the `error` says which. `alone`: images predicted
    by themselves as well, each with why it has no partner (the `unpaired` column);
    `breasts`: `data.pairs.breast_of` of the files where already known."""
    fit = predictor.bilateral
    if fit is None:
        raise BundleError(
            f"{predictor.bundle.path}: no bilateral fit in this bundle (its run had no "
            "validation images with the other breast of the same woman); predict the "
            "images one at a time instead"
        )
    pairs = [(Path(a), Path(b)) for a, b in pairs]
    alone = {Path(f): why for f, why in (alone or {}).items()}
    folder = next((p for pair in pairs for p in pair if p.is_dir()), None)
    if folder is not None:
        raise ConfigError(f"{folder} is a folder; a pair is two image files")
    if any(a == b for a, b in pairs):
        same = next(str(a) for a, b in pairs if a == b)
        raise ConfigError(f"{same} is paired with itself; give the other breast's image")
    unique = list(dict.fromkeys([*(p for pair in pairs for p in pair), *alone]))
    single = predictor.predict_paths(unique, batch_size, progress, jobs).set_index("path")
    known = breasts or {}
    rows = []
    for a, b in pairs:
        not_a_pair = mismatch(*(known.get(f) or breast_of(f) for f in (a, b)))
        rows += [
            _row(predictor, single, own, partner, not_a_pair) for own, partner in ((a, b), (b, a))
        ]
    rows += [_row(predictor, single, image, None, unpaired=why) for image, why in alone.items()]
    columns = [f"p_{k}" for k in predictor.classes]
    bilateral = ["p_bilateral", "prediction_bilateral", "threshold_bilateral"]
    order = ["path", "partner", *columns, "prediction", *bilateral, "error", "warning", "unpaired"]
    if "seen_in_training" in single.columns:  # images the bundle learnt from, as predict_paths
        order.append("seen_in_training")
    frame = pd.DataFrame(rows, columns=order)
    frame["threshold"] = predictor.threshold
    frame["model"] = predictor.bundle.model_id
    return frame


def _row(
    predictor: Predictor,
    single: pd.DataFrame,
    image: Path,
    partner: Path | None,
    not_a_pair: str = "",
    unpaired: str = "",
) -> dict:
    """One image's row: its own answer (`single`, by path) and, with a `partner` both
    readable and not refused by `not_a_pair`, its bilateral probability and decision."""
    columns = [f"p_{k}" for k in predictor.classes]
    own = single.loc[str(image)]
    row = (
        {"path": str(image), "partner": "" if partner is None else str(partner)}
        | own[columns].to_dict()
        | {"prediction": own["prediction"], "p_bilateral": np.nan, "prediction_bilateral": ""}
        | {"threshold_bilateral": predictor.bilateral["threshold"], "error": own["error"]}
        | {"warning": own["warning"]}
        | {"unpaired": unpaired, "seen_in_training": own.get("seen_in_training", "")}
    )
    if partner is None:
        return row
    their = single.loc[str(partner)]
    row["error"] = "; ".join(
        f"{who}: {answer['error']}"
        for who, answer in (("image", own), ("partner", their))
        if answer["error"]
    )
    if not row["error"] and not_a_pair:
        row["error"] = f"not one woman's two breasts: {not_a_pair}"
    if not row["error"]:
        mine, theirs = (answer[columns].to_numpy(np.float64)[None] for answer in (own, their))
        p = float(predictor.pair_probability(mine, theirs)[0])
        row |= {"p_bilateral": p, "prediction_bilateral": predictor.bilateral_decision(p)}
    return row


def paired_table(
    predictor: Predictor,
    paths: Iterable[str | Path],
    batch_size: int = 32,
    progress: bool = True,
    jobs: int = 2,
) -> pd.DataFrame:
    """`predict_pairs` of images and folders paired by what they carry
    (`data.pairs.pair_images`: DICOM PatientID, examination, laterality and view;
    mini-MIAS reference names); the rest predicted alone, with why (`unpaired`). Rows in
    the order of the files."""
    files = expand_paths(paths)
    breasts = {f: breast_of(f) for f in tqdm(files, "reading sides", disable=not progress)}
    pairs, alone = pair_images(files, breasts)
    frame = predictor.predict_pairs(pairs, batch_size, progress, jobs, alone, breasts)
    order = {str(f): i for i, f in enumerate(dict.fromkeys(files))}
    return frame.sort_values("path", key=lambda s: s.map(order), kind="stable").reset_index(
        drop=True
    )
