import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from breastcad.data.audit import audit, write_audit
from breastcad.data.duplicates import hamming_pairs, nearest, phash
from breastcad.data.sources import scan
from breastcad.data.splits import (
    check_no_leak,
    load_split,
    make_split,
    pairs_to_merge,
    save_split,
    split_groups,
    train_val_test,
    union_find,
)
from breastcad.errors import ConfigError, DataError
from tests.data.conftest import blob_image, save, scene_frames


def test_phash_is_stable_under_small_changes_and_separates_images():
    a = blob_image(1, (128, 128))
    noisy = np.clip(a.astype(int) + np.random.default_rng(0).integers(-6, 7, a.shape), 0, 255)
    assert bin(phash(a) ^ phash(noisy.astype(np.uint8))).count("1") <= 4
    assert bin(phash(a) ^ phash(blob_image(2, (128, 128)))).count("1") > 10


def test_hamming_pairs_matches_brute_force():
    rng = np.random.default_rng(0)
    h = rng.integers(0, 2**63, 300, dtype=np.uint64)
    h[10] = h[20] ^ np.uint64(0b101)
    pairs = hamming_pairs(h, 3, block=64)
    brute = {
        (i, j)
        for i in range(300)
        for j in range(i + 1, 300)
        if bin(int(h[i]) ^ int(h[j])).count("1") <= 3
    }
    assert {(int(i), int(j)) for i, j, _ in pairs} == brute and (10, 20) in brute


@pytest.mark.parametrize("distance", [0, 1, 4, 7, 8])
def test_hamming_pairs_by_shared_fields_equals_comparing_all_pairs(distance, monkeypatch):
    # clusters of near-identical hashes (as near-duplicate images give), a run of identical
    # ones longer than a block, and unrelated ones; 8 bits leave fields too narrow: all pairs;
    # candidates compared a few thousand at a time, as millions are in a large data set
    from breastcad.data import duplicates

    monkeypatch.setattr(duplicates, "CANDIDATES", 5000)
    rng = np.random.default_rng(distance)
    centres = rng.integers(0, 2**63, 40, dtype=np.uint64)
    h = centres[rng.integers(0, 40, 1500)]
    flips = rng.integers(0, 64, (1500, 3))
    for k in range(3):
        h ^= np.where(rng.random(1500) < 0.5, np.uint64(1) << flips[:, k].astype(np.uint64), 0)
    h = np.concatenate([h, np.full(300, centres[0]), rng.integers(0, 2**63, 700, np.uint64)])
    h = rng.permutation(h)
    fast = hamming_pairs(h, distance, block=128)
    dist = np.bitwise_count(h[:, None] ^ h[None, :])
    i, j = np.nonzero(np.triu(dist <= distance, k=1))
    assert np.array_equal(fast, np.stack([i, j, dist[i, j]], axis=1).astype(np.int64))
    assert len(fast) > 300 * 299 // 2  # the identical run alone gives 44,850


@pytest.mark.parametrize("distance", [0, 2, 4, 8])
def test_nearest_training_hash_equals_comparing_every_pair(distance, monkeypatch):
    # queries near clustered reference hashes, far from them, and identical to them; the
    # candidates compared in chunks of a few thousand; 8 bits leave fields too narrow
    from breastcad.data import duplicates

    monkeypatch.setattr(duplicates, "CANDIDATES", 5000)
    rng = np.random.default_rng(distance)
    centres = rng.integers(0, 2**63, 30, dtype=np.uint64)

    def around(n):
        h = centres[rng.integers(0, 30, n)]
        for bit in rng.integers(0, 64, (3, n)).astype(np.uint64):
            h = np.where(rng.random(n) < 0.6, h ^ (np.uint64(1) << bit), h)
        return h

    reference = np.concatenate([around(2000), rng.integers(0, 2**63, 2000, np.uint64)])
    queries = np.concatenate([around(800), rng.integers(0, 2**63, 400, np.uint64)])
    queries[:50] = reference[:50]
    found = nearest(queries, reference, distance)
    best = np.bitwise_count(queries[:, None] ^ reference[None, :]).min(axis=1).astype(int)
    assert np.array_equal(found, np.where(best <= distance, best, -1))
    assert (found[:50] == 0).all() and (found == -1).any() and (found > 0).any() == (distance > 0)
    assert nearest(queries[:3], reference[:0], distance).tolist() == [-1, -1, -1]


def test_fingerprints_match_the_same_pixels_and_near_copies_only_where_asked(tmp_path):
    """A copy under another name is the same picture; a re-encoded, slightly changed copy is a
    near duplicate, counted only with a near-duplicate distance (not for data split by
    patient); an unrelated image and an unreadable file are neither."""
    from breastcad.data import fingerprints

    a, other = blob_image(1, (96, 96)), blob_image(7, (96, 96))
    save(tmp_path / "a.png", a)
    save(tmp_path / "renamed.png", a)
    noisy = np.clip(a.astype(int) + np.random.default_rng(0).integers(-5, 6, a.shape), 0, 255)
    save(tmp_path / "noisy.png", noisy.astype(np.uint8))
    save(tmp_path / "other.png", other)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    hashes, record = fingerprints.training_record(
        [str(tmp_path / "a.png"), str(tmp_path / "broken.png")], 4, 1, False, tmp_path / "c"
    )
    assert record["images"] == 1 and record["near_duplicate_distance"] == 4
    fingerprints.save(tmp_path, hashes)
    stored = fingerprints.load(tmp_path)
    names = ["renamed.png", "noisy.png", "other.png", "broken.png"]
    found = fingerprints.fingerprints([str(tmp_path / n) for n in names], 1, False, tmp_path / "c")
    assert fingerprints.match(found, stored, 4).tolist() == ["same", "near", "", ""]
    assert fingerprints.match(found, stored, None).tolist() == ["same", "", "", ""]


def test_a_square_copy_of_a_wider_image_is_a_near_duplicate_both_ways(tmp_path):
    """MedMNIST made BreastMNIST from BUSI by resizing each image's centred square to 28 px:
    such a copy is recognised as a near duplicate of a training original, and an original of
    a square training copy, by the bundle's centred-square hashes; the decoding path
    (`image_fingerprint`, as `predict` hashes) agrees with the audit's. A wide image with the
    same centre but other sides is a near duplicate too, as the audit pairs them (and so a
    split keeps them together). A bundle's hashes from before the centred squares still match
    whole images."""
    from breastcad.data import fingerprints
    from breastcad.data.imaging import read_image

    wide = [blob_image(seed, (90, 150)) for seed in (11, 12, 13)]
    for i, image in enumerate(wide):
        save(tmp_path / "wide" / f"w{i}.png", image)
        small = Image.fromarray(image[:, 30:120]).resize((28, 28), Image.BICUBIC)
        save(tmp_path / "small" / f"s{i}.png", np.asarray(small))
    save(tmp_path / "small" / "unrelated.png", blob_image(40, (28, 28)))
    sides = wide[0].copy()
    sides[:, :30], sides[:, 120:] = blob_image(50, (90, 30)), blob_image(51, (90, 30))
    save(tmp_path / "wide" / "same_centre.png", sides)
    cache = tmp_path / "cache"

    def paths(folder: str) -> list[str]:
        return sorted(str(p) for p in (tmp_path / folder).glob("*.png"))

    # sorted: small s0, s1, s2, unrelated; wide same_centre, w0, w1, w2
    trained_wide, _ = fingerprints.training_record(paths("wide")[1:], 4, 1, False, cache)
    assert len(trained_wide["centre"]) == 3 and len(trained_wide["square"]) == 0
    small = fingerprints.fingerprints(paths("small"), 1, False, cache)
    assert small["square"].all()
    assert fingerprints.match(small, trained_wide, 4).tolist() == ["near", "near", "near", ""]
    assert fingerprints.match(small, trained_wide, None).tolist() == ["", "", "", ""]
    decoded = fingerprints.as_arrays(
        [fingerprints.image_fingerprint(read_image(p)) for p in paths("small")]
    )
    for key in ("pixels", "phash", "centre", "square", "readable"):
        assert (decoded[key] == small[key]).all(), key
    trained_small, _ = fingerprints.training_record(paths("small")[:3], 4, 1, False, cache)
    assert len(trained_small["square"]) == 3 and len(trained_small["centre"]) == 0
    originals = fingerprints.fingerprints(paths("wide"), 1, False, cache)
    # same_centre's centred square is w0's, the source of s0: it is an original of s0 too
    assert fingerprints.match(originals, trained_small, 4).tolist() == ["near"] * 4
    wider = fingerprints.match(originals, trained_wide, 4).tolist()
    assert wider == ["near", "same", "same", "same"]  # same_centre: w0's centred square
    assert originals["phash"][0] != originals["phash"][1]
    manifest = scan("folder", tmp_path)
    found = audit(manifest, max_distance=4, jobs=1, progress=False, cache_dir=cache)
    names = [Path(p).name for p in found.records["path"]]
    by_name = {
        tuple(sorted((names[i], names[j]))): kind
        for i, j, kind in found.pairs[["i", "j", "found_by"]].itertuples(index=False)
    }
    assert by_name[("same_centre.png", "w0.png")] == "centre_phash"
    assert by_name[("s0.png", "w0.png")] == "centre_phash"  # a square cut of a wider image
    assert found.summary["near_duplicate_pairs_by"]["centre_phash"] == sum(
        kind == "centre_phash" for kind in by_name.values()
    )
    split = make_split(manifest, pairs_to_merge(manifest, found.pairs), 0.25, 0.0, seed=0)
    groups = dict(zip(names, split["split_group"], strict=True))
    assert groups["same_centre.png"] == groups["w0.png"] == groups["s0.png"]
    centre = fingerprints.fingerprints([paths("wide")[0]], 1, False, cache)["centre"]
    assert centre[0] == fingerprints.fingerprints([paths("wide")[1]], 1, False, cache)["centre"][0]
    old = {k: trained_wide[k] for k in ("pixels", "phash")}  # a bundle from before
    assert fingerprints.match(originals, old, 4).tolist() == ["", "same", "same", "same"]
    assert fingerprints.match(small, old, 4).tolist() == ["", "", "", ""]


def test_frames_of_one_scene_pair_by_thumbnail_correlation_where_there_are_no_patients(
    tmp_path,
):
    """Two frames of one scene, a moment apart (shifted, new noise) and one with a caliper
    line drawn on it, differ in their pHashes but their thumbnails correlate: the audit pairs
    them where the data has no patient ids (and a split keeps them together), not where
    patients are known; an unrelated image pairs with neither. Images smaller than a
    thumbnail have none."""
    from breastcad.data.audit import SAME_SCENE_CORRELATION
    from breastcad.data.duplicates import THUMBNAIL, correlated_pairs, thumbnail

    first, later = scene_frames(tmp_path / "data" / "benign")
    root, cache = tmp_path / "data", tmp_path / "cache"
    assert phash(first) != phash(later)
    found = audit(scan("folder", root), max_distance=0, jobs=1, progress=False, cache_dir=cache)
    rows = found.pairs[["i", "j", "found_by", "correlation"]].itertuples(index=False)
    names = [Path(p).stem for p in found.records["path"]]
    by = {(names[i], names[j]): (kind, r) for i, j, kind, r in rows}
    assert list(by) == [("a", "b")]
    assert by["a", "b"][0] == "correlation" and by["a", "b"][1] >= SAME_SCENE_CORRELATION
    assert found.summary["near_duplicate_pairs_by"] == {
        "phash": 0, "centre_phash": 0, "correlation": 1,
    }  # fmt: skip
    assert "thumbnail" not in found.records.columns  # pixels stay out of records.csv
    groups = split_groups(found.manifest, pairs_to_merge(found.manifest, found.pairs))
    assert groups[names.index("a")] == groups[names.index("b")] != groups[names.index("other")]
    (root / "groups.csv").write_text("file,group_id\nbenign/a.png,p1\nbenign/b.png,p2\n")
    patients = scan("folder", root, groups_csv="groups.csv")
    assert audit(patients, max_distance=0, jobs=1, progress=False, cache_dir=cache).pairs.empty
    assert thumbnail(blob_image(3, (50, 80))) is None
    assert len(thumbnail(blob_image(3, (64, 80)))) == THUMBNAIL * THUMBNAIL
    flat = np.zeros((2, 16), np.uint8)  # no contrast: correlates with nothing, no error
    assert correlated_pairs(flat, 0.5).shape == (0, 3)


def test_hashes_keep_all_64_bits_beside_an_unreadable_file(tmp_path):
    """A gap (an unreadable file) in a column of 64-bit ints made pandas store it as float64,
    which rounds the low bits of a hash away: they stay Python ints, exactly."""
    from breastcad.data.duplicates import centre_phash
    from breastcad.data.inspection import inspect_all

    images = [blob_image(seed, (70, 90)) for seed in range(6)]
    paths = [str(save(tmp_path / f"{k}.png", image)) for k, image in enumerate(images)]
    (tmp_path / "broken.png").write_bytes(b"not an image")
    records = inspect_all([str(tmp_path / "broken.png"), *paths], jobs=1, progress=False)
    assert records["phash"].tolist()[1:] == [phash(image) for image in images]
    assert records["centre_phash"].tolist()[1:] == [centre_phash(image) for image in images]
    assert any(phash(image) >= 2**53 for image in images)  # where float64 would round


def test_row_hashes_survive_a_csv_round_trip_and_tell_rows_apart(tmp_path):
    from breastcad.data.fingerprints import row_hashes

    X = np.random.default_rng(0).normal(size=(50, 30)) * 100
    X[3, 4], X[5, 0] = np.nan, -0.0
    pd.DataFrame(X).to_csv(tmp_path / "x.csv", index=False)
    again = pd.read_csv(tmp_path / "x.csv").to_numpy()
    again[5, 0] = 0.0
    assert np.array_equal(row_hashes(X), row_hashes(again))
    assert len(set(row_hashes(X).tolist())) == 50
    moved = X.copy()
    moved[7, 29] *= 1.001
    assert (row_hashes(moved) != row_hashes(X)).tolist() == [i == 7 for i in range(50)]


def test_busi_audit_reports_corrupt_file_and_cross_class_duplicate(busi_tree, tmp_path):
    result = audit(scan("busi", busi_tree), max_distance=2, jobs=1, progress=False)
    s = result.summary
    assert [u["path"].endswith("benign (9).png") for u in s["unreadable"]] == [True]
    # shapes read as integers although the unreadable file leaves gaps in the records
    assert s["shapes"] and all(k.replace("x", "").isdigit() for k in s["shapes"])
    assert s["exact_duplicate_sets_with_conflicting_labels"] == 1
    assert s["near_duplicate_pairs_across_labels"] >= 1
    out = write_audit(result, tmp_path / "audit")
    for name in (
        "audit.json",
        "records.csv",
        "pairs.csv",
        "report.md",
        "plots/samples.png",
        "plots/class_balance.png",
        "plots/duplicates.png",
    ):
        assert (out / name).is_file(), name


def test_a_second_audit_decodes_only_changed_files_and_the_cache_names_none(busi_tree, tmp_path):
    manifest = scan("busi", busi_tree)
    cache = tmp_path / "cache"
    first = audit(manifest, max_distance=2, jobs=1, progress=False, cache_dir=cache)
    again = audit(manifest, max_distance=2, jobs=1, progress=False, cache_dir=cache)
    pd.testing.assert_frame_equal(first.records, again.records)
    assert first.summary == again.summary
    # what was found is taken from the cache while a file keeps its size and time: a file
    # overwritten with noise of the same size and time still counts as readable ...
    base = busi_tree / "Dataset_BUSI_with_GT"
    target = base / "malignant" / "malignant (3).png"
    stat = target.stat()
    target.write_bytes(os.urandom(stat.st_size))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    cached = audit(manifest, max_distance=2, jobs=1, progress=False, cache_dir=cache)
    assert not any("malignant (3)" in u["path"] for u in cached.summary["unreadable"])
    # ... and is decoded again (and reported) once its time changes; without the cache, at once
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    for result in (
        audit(manifest, max_distance=2, jobs=1, progress=False, cache_dir=cache),
        audit(manifest, max_distance=2, jobs=1, progress=False, cache=False),
    ):
        assert sum("malignant (3)" in u["path"] for u in result.summary["unreadable"]) == 1
    # an unreadable file is not remembered: mended in place (same size and time), it is read
    broken = base / "benign" / "benign (9).png"
    stat = broken.stat()
    mended = save(tmp_path / "mended.png", blob_image(99, (8, 8))).read_bytes()
    assert len(mended) <= stat.st_size
    broken.write_bytes(mended + b"\0" * (stat.st_size - len(mended)))  # PNG ignores the tail
    os.utime(broken, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    result = audit(manifest, max_distance=2, jobs=1, progress=False, cache_dir=cache)
    assert not any("benign (9)" in u["path"] for u in result.summary["unreadable"])
    # the cache holds hashes and facts, no file name (BUSI's, or a patient's in others')
    stored = b"".join(f.read_bytes() for f in cache.rglob("*") if f.is_file())
    assert b"benign" not in stored and b"malignant" not in stored and b"BUSI" not in stored
    assert (cache / "audit.sqlite").stat().st_mode & 0o777 == 0o600  # this account's alone
    (cache / "audit.sqlite").chmod(0o644)  # as written before it was made private
    audit(manifest, max_distance=2, jobs=1, progress=False, cache_dir=cache)
    assert (cache / "audit.sqlite").stat().st_mode & 0o777 == 0o600
    # a damaged cache file is started again (the audit never fails on it)
    (cache / "audit.sqlite").write_bytes(b"not a database")
    for _ in range(2):
        again = audit(manifest, max_distance=2, jobs=1, progress=False, cache_dir=cache)
        assert again.summary == result.summary
    import sqlite3

    with sqlite3.connect(cache / "audit.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM facts").fetchone()[0] == len(manifest) - 1


def test_audit_counts_colour_marks_per_class_and_ignores_gray_rgb_and_jpeg_noise(tmp_path):
    from breastcad.data.inspection import colour_fraction

    root = tmp_path / "data"
    for i in range(4):  # gray content stored as RGB (PNG) and as RGB JPEG: not marked
        gray = blob_image(i, (64, 80))
        save(root / "benign" / f"b{i}.png", np.stack([gray] * 3, axis=-1))
        save(root / "benign" / f"j{i}.jpg", np.stack([gray] * 3, axis=-1))
    for i in range(2):  # a red caliper cross drawn on a gray image
        marked = np.stack([blob_image(10 + i, (64, 80))] * 3, axis=-1)
        marked[30:33, 20:40] = marked[20:45, 29:31] = (255, 40, 40)
        save(root / "malignant" / f"m{i}.png", marked)
    save(root / "malignant" / "m9.png", blob_image(20, (64, 80)))  # 1-channel gray
    result = audit(scan("folder", root), jobs=1, progress=False)
    s = result.summary
    assert s["colour_marked_images"] == 2 and s["colour_marked_by_class"] == {"malignant": 2}
    assert all("malignant" in p for p in s["colour_marked_examples"])
    fractions = result.records.set_index(result.records["path"].str.rsplit("/", n=1).str[-1])
    assert fractions.loc["m0.png", "colour_fraction"] == pytest.approx(
        (3 * 20 + 25 * 2 - 6) / (64 * 80)
    )
    assert fractions.loc["j0.jpg", "colour_fraction"] == 0.0
    assert colour_fraction(blob_image(1, (8, 8))) == 0.0
    report = (write_audit(result, tmp_path / "audit") / "report.md").read_text()
    assert "colour marks" in report and "{'malignant': 2}" in report and "m0.png" in report


def test_busi_split_keeps_duplicates_together_and_reloads(busi_tree, tmp_path):
    manifest = scan("busi", busi_tree)
    result = audit(manifest, max_distance=2, jobs=1, progress=False)
    pairs = pairs_to_merge(manifest, result.pairs)
    split = make_split(manifest, pairs, test_size=0.25, val_size=0.0, seed=3)
    check_no_leak(split)
    dup = split[split["path"].str.endswith(("benign (1).png", "malignant (7).png"))]
    assert dup["partition"].nunique() == 1 and dup["split_group"].nunique() == 1
    save_split(split, tmp_path / "s.json", manifest, {"seed": 3})
    pd.testing.assert_series_equal(
        load_split(tmp_path / "s.json", manifest)["partition"],
        split["partition"].reset_index(drop=True),
        check_dtype=False,
    )
    # copied or extracted again: new modification times, same files; the split still holds
    for file in busi_tree.rglob("*.png"):
        os.utime(file, ns=(file.stat().st_atime_ns, file.stat().st_mtime_ns + 10**9))
    touched = scan("busi", busi_tree)
    assert touched.fingerprint() != manifest.fingerprint()  # the cache key sees the change
    assert touched.layout_fingerprint() == manifest.layout_fingerprint()
    assert (
        load_split(tmp_path / "s.json", touched)["partition"].tolist()
        == split["partition"].tolist()
    )
    # moved elsewhere and named by a relative root: the split holds, with the new paths
    moved = tmp_path / "elsewhere" / "busi"
    shutil.copytree(busi_tree, moved)
    relative = Path(os.path.relpath(moved))
    there = scan("busi", relative)
    assert there.fingerprint() != manifest.fingerprint()
    reloaded = load_split(tmp_path / "s.json", there)
    assert (
        set(reloaded["path"]) == set(there.frame["path"]) and str(relative) in reloaded["path"][0]
    )
    assert reloaded["partition"].tolist() == split["partition"].tolist()
    older = json.loads((tmp_path / "s.json").read_text())  # a split saved before sizes alone
    del older["relative_layout_fingerprint"]
    (tmp_path / "older.json").write_text(json.dumps(older))
    with pytest.raises(ConfigError, match="older split file"):
        load_split(tmp_path / "older.json", touched)
    (busi_tree / "Dataset_BUSI_with_GT/normal/normal (1).png").write_bytes(b"changed")
    with pytest.raises(ConfigError, match="other data"):
        load_split(tmp_path / "s.json", scan("busi", busi_tree))


def test_union_find_and_groups():
    assert union_find(5, np.array([[0, 1], [3, 4], [1, 4]])).tolist() == [0, 0, 2, 0, 0]


@pytest.mark.parametrize("seed", range(5))
def test_no_group_ever_spans_partitions(seed):
    rng = np.random.default_rng(seed)
    from breastcad.data.manifest import Manifest

    n = 300
    frame = pd.DataFrame(
        {
            "path": [f"f{i}" for i in range(n)],
            "label": rng.choice(["a", "b", "c"], n),
            "group_id": rng.integers(0, 60, n).astype(str),
            "dataset": "t",
        }
    )
    manifest = Manifest(frame, __import__("pathlib").Path("."), ["a", "b", "c"])
    pairs = rng.integers(0, n, (20, 2))
    for kwargs in ({"test_size": 0.2, "val_size": 0.1}, {"folds": 5}):
        split = make_split(manifest, pairs, seed=seed, **kwargs)
        check_no_leak(split)
        groups = split_groups(manifest, pairs)
        for a, b in pairs:
            assert split["partition"][a] == split["partition"][b]
        assert len(set(groups)) <= 60


def test_too_few_groups_is_a_clear_error():
    from pathlib import Path

    from breastcad.data.manifest import Manifest

    frame = pd.DataFrame(
        {"path": list("abcd"), "label": list("xyxy"), "group_id": list("ppqq"), "dataset": "t"}
    )
    with pytest.raises(DataError, match="too few"):
        make_split(Manifest(frame, Path("."), ["x", "y"]), test_size=0.2)
    with pytest.raises(DataError, match="3 folds: n_splits=3 cannot be greater"):
        make_split(Manifest(frame, Path("."), ["x", "y"]), folds=3)


@pytest.mark.parametrize(
    ("test_size", "val_size", "folds", "problem"),
    [
        (1.5, 0.1, None, "between 0 and 1"),
        (0.0, 0.1, None, "between 0 and 1"),
        (0.2, -0.1, None, "between 0 and 1"),
        (0.5, 0.6, None, "add up to 1.1, which leaves nothing to train on"),
        (0.5, 0.5, None, "add up to 1, which leaves nothing"),
        (0.2, 0.1, 1, "2 or more folds, got 1"),
    ],
)
def test_fractions_that_leave_no_training_part_are_refused(test_size, val_size, folds, problem):
    # they were taken: a test fraction of 1.5 gave a split; 0.9 + 0.5 trained a model
    from pathlib import Path

    from breastcad.data.manifest import Manifest

    frame = pd.DataFrame(
        {
            "path": [f"{i}.png" for i in range(40)],
            "label": ["x", "y"] * 20,
            "group_id": [str(i) for i in range(40)],
            "dataset": "t",
        }
    )
    with pytest.raises(ConfigError, match=problem):
        make_split(Manifest(frame, Path("."), ["x", "y"]), None, test_size, val_size, folds)


def test_a_file_that_is_not_a_split_is_named_not_a_traceback(tmp_path):
    cases = {
        "photo.jpg": b"\xff\xd8\xff not json",
        "list.json": b"[1, 2]",
        "rows.json": b'{"rows": [], "manifest_fingerprint": "x"}',
        "empty.json": b"",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ConfigError, match="not a breastcad split file") as err:
            load_split(tmp_path / name)
        assert str(tmp_path / name) in str(err.value)
    with pytest.raises(ConfigError, match="split file not found"):
        load_split(tmp_path / "gone.json")


def test_official_split_is_kept(tmp_path):
    arrays = {
        "train_images": np.zeros((6, 28, 28), np.uint8),
        "train_labels": np.zeros((6, 1)),
        "val_images": np.zeros((2, 28, 28), np.uint8),
        "val_labels": np.ones((2, 1)),
    }
    np.savez(tmp_path / "breastmnist.npz", **arrays)
    split = make_split(scan("breastmnist", tmp_path))
    assert split["partition"].tolist() == ["train"] * 6 + ["val"] * 2


def test_evaluate_with_a_split_resamples_its_groups_not_images(busi_tree, tmp_path):
    """A BUSI split keeps near duplicates in one group; `evaluate --split` must resample those
    groups, as the training run did, not single images."""
    from breastcad.evaluation.image_evaluation import evaluate_image_bundle
    from tests.conftest import make_image_bundle

    manifest = scan("busi", busi_tree)
    result = audit(manifest, max_distance=2, jobs=1, progress=False)
    split = make_split(manifest, pairs_to_merge(manifest, result.pairs), 0.25, 0.0, seed=3)
    dup = split["path"].str.endswith(("benign (1).png", "malignant (7).png"))
    split.loc[split["split_group"] == split.loc[dup, "split_group"].iloc[0], "partition"] = "test"
    save_split(split, tmp_path / "s.json", manifest, {"seed": 3})
    bundle = make_image_bundle(tmp_path / "bundle", classes=tuple(manifest.classes))
    out = evaluate_image_bundle(
        bundle,
        "busi",
        busi_tree,
        tmp_path / "eval",
        split_file=tmp_path / "s.json",
        n_boot=20,
        cache_dir=tmp_path / "cache",
        progress=False,
    )
    test = split[split["partition"] == "test"]
    readable = test[~test["path"].str.endswith("benign (9).png")]  # the truncated file
    assert out["test"]["n"] == len(readable)
    assert out["test"]["ci"]["n_groups"]["value"] == readable["split_group"].nunique()
    assert readable["split_group"].nunique() < len(readable)  # the duplicate pair is one group


def test_breastmnist_val_carve_keeps_near_duplicates_together_and_counts_official_leaks(
    tmp_path,
):
    """BreastMNIST has no patient ids and its images (from BUSI) include near duplicates: the
    validation part carved from the official train part keeps each cluster on one side, and
    the official val part (the test set here), which the official split drew image by image,
    is kept as it is and its images with a near duplicate in training are counted."""
    from breastcad.config import ImageRunConfig
    from breastcad.evaluation.image_report import _split_text
    from breastcad.image_experiment import make_partition

    distinct = [blob_image(seed, (28, 28)) for seed in range(40)]
    copies = [np.clip(distinct[k].astype(int) + 1, 0, 255).astype(np.uint8) for k in range(10)]
    train = np.stack(distinct + copies)
    val = np.stack([blob_image(100 + k, (28, 28)) for k in range(10)] + [distinct[20]])
    np.savez(
        tmp_path / "breastmnist.npz",
        train_images=train,
        train_labels=(np.arange(len(train)) % 2)[:, None],
        val_images=val,
        val_labels=(np.arange(len(val)) % 2)[:, None],
    )
    manifest = scan("breastmnist", tmp_path)
    assert not manifest.patient_groups
    in_val = 0
    for seed in range(3):
        cfg = ImageRunConfig.model_validate(
            {
                "data": {"dataset": "breastmnist", "root": str(tmp_path), "val_size": 0.25},
                "model": "transfer",
                "seed": seed,
                "train": {"jobs": 1},
            }
        )
        split, settings = make_partition(manifest, cfg, progress=False)
        part = split["partition"].to_numpy()
        assert (part[:50] != "test").all() and (part[50:] == "test").all()  # official kept
        for k in range(10):
            assert part[k] == part[40 + k], (seed, k)  # a cluster never straddles train/val
            in_val += part[k] == "val"
        assert settings["test_images_sharing_a_group"] == 1  # the copy of train image 20
        assert "1 test images have a near duplicate" in _split_text(settings)
    assert in_val > 0  # the carve did put clusters into validation


def test_a_thin_class_splits_quietly_and_keeps_groups_whole():
    """A class with fewer images than the folds behind a partition thins that partition; the
    counts are reported with the split, so sklearn's warning about it is not repeated."""
    labels = np.array(["benign"] * 40 + ["malignant"] * 5)
    groups = np.arange(45) // 2  # pairs of images share a group
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parts = train_val_test(labels, groups, 0.2, 0.1, seed=0)
    assert not [w for w in caught if "least populated" in str(w.message)]
    assert set(parts) == {"train", "val", "test"}
    for g in np.unique(groups):
        assert len(set(parts[groups == g])) == 1
