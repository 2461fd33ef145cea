"""A woman's two breasts: each image's contralateral partner, for bilateral comparison.

Radiologists read a mammogram beside the other breast's: a lesion is what one breast has and
the other does not (the mini-MIAS class ASYM is defined that way). An adapter that knows the
side fills a `side` column ('left' / 'right'); `group_id` is the woman (mini-MIAS pairs
consecutive references). Images are paired within the frame they are given, so pairs never
cross a split (the split keeps a woman's images together).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

OTHER_SIDE = {"left": "right", "right": "left"}


def contralateral(frame: pd.DataFrame) -> np.ndarray:
    """Per row, the position of the same woman's other breast in `frame`; -1 where there is
    none: no `side` column, a side that is not left or right, the other breast absent, or
    more than one image of either side of that woman (which one to compare would be a guess).

    >>> frame = pd.DataFrame({"group_id": ["a", "a", "b"], "side": ["left", "right", "left"]})
    >>> contralateral(frame).tolist()
    [1, 0, -1]
    """
    other = np.full(len(frame), -1, dtype=np.int64)
    if "side" not in frame.columns or not len(frame):
        return other
    keys = pd.DataFrame(
        {"group": frame["group_id"].astype(str).to_numpy(), "side": frame["side"].to_numpy()}
    )
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
