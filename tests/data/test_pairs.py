"""Pairing a woman's two breasts."""

import pandas as pd

from breastcad.data.pairs import contralateral


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
