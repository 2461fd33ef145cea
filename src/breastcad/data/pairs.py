"""A woman's two breasts: each image's contralateral partner, for bilateral comparison.

Radiologists read a mammogram beside the other breast's: a lesion is what one breast has and
the other does not (the mini-MIAS class ASYM is defined that way). An adapter that knows the
side fills a `side` column ('left' / 'right'); `group_id` is the woman (mini-MIAS pairs
consecutive references). Images are paired within the frame they are given, so pairs never
cross a split (the split keeps a woman's images together).

Outside a dataset, `breast_of` tells an image file's woman, side and view from what it carries
(a DICOM header, a mini-MIAS reference as its name), `pair_images` pairs files by it, and
`mismatch` says why two images given as a pair are not one woman's two breasts.
"""

from __future__ import annotations

import io
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

OTHER_SIDE = {"left": "right", "right": "left"}


def contralateral(frame: pd.DataFrame) -> np.ndarray:
    """Per row, the position of the same woman's other breast in `frame` (in the same view
    and examination where `view` and `exam` columns say them: CC with CC, not with an
    earlier examination's); -1 where there is none: no
    `side` column, a side that is not left or right, the other breast absent, or more than one
    image of either side of that woman and view (which one to compare would be a guess).

    >>> frame = pd.DataFrame({"group_id": ["a", "a", "b"], "side": ["left", "right", "left"]})
    >>> contralateral(frame).tolist()
    [1, 0, -1]
    """
    other = np.full(len(frame), -1, dtype=np.int64)
    if "side" not in frame.columns or not len(frame):
        return other
    group = frame["group_id"].astype(str)
    for column in ("exam", "view"):
        if column in frame.columns:
            group = group + "|" + frame[column].fillna("").astype(str)
    keys = pd.DataFrame({"group": group.to_numpy(), "side": frame["side"].to_numpy()})
    counts = keys.value_counts()
    position = {
        (g, s): i
        for i, (g, s) in enumerate(keys.itertuples(index=False))
        if s in OTHER_SIDE and counts[(g, s)] == 1
    }
    for i, (g, s) in enumerate(keys.itertuples(index=False)):
        if (g, s) in position:
            other[i] = position.get((g, OTHER_SIDE[s]), -1)
    return other


@dataclass(frozen=True)
class Breast:
    """Which woman's which breast an image shows, in which view. `woman` is a key of the
    patient in one examination (`sources.dicom.exam_key`, valid in this process only), never
    the id itself."""

    woman: str
    side: str
    """'left' or 'right'."""
    view: str
    """'CC', 'MLO'..., or '' where the image does not say."""
    told_by: str
    """What said so: 'DICOM header', 'CBIS-DDSM patient id', 'mini-MIAS name'."""


_MIAS_NAME = re.compile(r"^mdb(\d{3})$", re.IGNORECASE)
UNKNOWN_SIDE = (
    "which breast it shows is unknown (not a DICOM file with PatientID and ImageLaterality, "
    "nor named by a mini-MIAS reference such as mdb001)"
)


def breast_from_header(ds) -> Breast | str:
    """The `Breast` a DICOM header (pydicom Dataset) describes (`sources.dicom.breast_facts`),
    or why it does not say. The woman is the patient in one examination, so an earlier one is
    not taken for the other breast: on one StudyDate, or where there is none (de-identified
    files have it emptied) in one study (StudyInstanceUID, which de-identification replaces
    consistently). CBIS-DDSM's ids: the patient."""
    from breastcad.data.sources.dicom import breast_facts, exam_key

    facts = breast_facts(ds)
    if not facts["patient"]:
        return "the DICOM header has no PatientID"
    if not facts["side"]:
        return "the DICOM header has no ImageLaterality or Laterality (L or R)"
    woman = exam_key(facts["patient"], facts["exam"])
    return Breast(woman, facts["side"], facts["view"], facts["told_by"])


def breast_of(path: Path, data: bytes | None = None) -> Breast | str:
    """The `Breast` an image file shows, from its DICOM header or its mini-MIAS name
    (`mdb001.pgm`: `sources.mini_mias.woman_and_side`), or why that is unknown. `data`: the
    file's bytes where it is an upload rather than a file on disk."""
    import pydicom

    from breastcad.data.imaging import has_dicom_preamble
    from breastcad.data.sources.mini_mias import woman_and_side

    path = Path(path)
    try:
        if data is not None:
            head = data[:132]
        else:
            with path.open("rb") as f:
                head = f.read(132)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if has_dicom_preamble(head) or path.suffix.lower() == ".dcm":
        try:
            source = io.BytesIO(data) if data is not None else path
            return breast_from_header(pydicom.dcmread(source, stop_before_pixels=True))
        except Exception as exc:  # pydicom raises several kinds for a broken header
            return f"unreadable DICOM header ({type(exc).__name__})"
    mias = _MIAS_NAME.match(path.stem)
    if mias:
        woman, side = woman_and_side(int(mias.group(1)))
        return Breast(f"mini-mias-{woman}", side, "MLO", "mini-MIAS name")
    return UNKNOWN_SIDE


def mismatch(a: Breast | str, b: Breast | str) -> str:
    """Why two images given as a woman's two breasts are not, by what they carry: '' where
    they are, or where either does not say (the caller's word is taken then)."""
    if isinstance(a, str) or isinstance(b, str):
        return ""
    if a.woman != b.woman:
        return f"the two images are of different women (by their {a.told_by})"
    if a.side == b.side:
        return f"both images are of the {a.side} breast (by their {a.told_by})"
    if a.view and b.view and a.view != b.view:
        return f"the two images are different views ({a.view} and {b.view})"
    return ""


def pair_images(
    files: Iterable[Path], breasts: dict[Path, Breast | str] | None = None
) -> tuple[list[tuple[Path, Path]], dict[Path, str]]:
    """Files paired as one woman's left and right breast in the same view, by `breast_of`;
    and every file left unpaired, with the reason. Where a woman has more than one image of
    a side in a view, none of them is paired (which to compare would be a guess)."""
    files = list(dict.fromkeys(Path(f) for f in files))
    breasts = breasts if breasts is not None else {f: breast_of(f) for f in files}
    alone: dict[Path, str] = {}
    by_view: dict[tuple[str, str], dict[str, list[Path]]] = defaultdict(lambda: defaultdict(list))
    for f in files:
        breast = breasts[f]
        if isinstance(breast, str):
            alone[f] = breast
        else:
            by_view[(breast.woman, breast.view)][breast.side].append(f)
    pairs = []
    for (_, view), sides in by_view.items():
        in_view = f" in the {view} view" if view else ""
        if len(sides["left"]) == 1 and len(sides["right"]) == 1:
            pairs.append((sides["left"][0], sides["right"][0]))
            continue
        for side, images in list(sides.items()):
            crowded = max((side, OTHER_SIDE[side]), key=lambda s: len(sides[s]))
            if len(sides[crowded]) > 1:
                why = (
                    f"{len(sides[crowded])} images of this woman's {crowded} breast{in_view}: "
                    "which to compare is a guess"
                )
            else:
                why = f"no image of this woman's {OTHER_SIDE[side]} breast{in_view} given"
            alone |= dict.fromkeys(images, why)
    order = {f: i for i, f in enumerate(files)}
    pairs.sort(key=lambda pair: min(order[pair[0]], order[pair[1]]))
    return pairs, {f: alone[f] for f in files if f in alone}
