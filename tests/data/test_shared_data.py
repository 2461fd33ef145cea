"""Integration tests on the real datasets in ../shared/data (skipped, with why, when absent)."""

import numpy as np
import pytest

from breastcad.data.audit import audit
from breastcad.data.imaging import read_image
from breastcad.data.sources import scan
from breastcad.data.splits import check_no_leak, make_split, pairs_to_merge
from tests.conftest import shared_dir

pytestmark = [
    pytest.mark.integration,
]


@pytest.mark.parametrize(
    ("dataset", "folder", "options", "counts", "groups"),
    [
        ("busi", "busi", {}, {"normal": 106, "benign": 350, "malignant": 168}, 624),
        ("breastmnist", "breastmnist", {}, {"normal_or_benign": 456, "malignant": 168}, 624),
        ("mini-mias", "mini-mias", {}, {"normal": 166, "abnormal": 90}, 128),
        ("idc", "idc", {}, {"benign": 4302, "idc": 1500}, 7),
        ("breakhis", "breakhis", {"magnifications": [200]}, {"benign": 1, "malignant": 1}, 2),
        ("dicom", "cbis-ddsm", {}, {"benign": 1, "malignant": 0}, 1),
    ],
)
def test_adapters_read_the_real_layouts(dataset, folder, options, counts, groups):
    m = scan(dataset, shared_dir(folder), **options)
    assert m.class_counts() == counts
    assert m.frame["group_id"].nunique() == groups
    assert read_image(m.frame["path"].iloc[0]).size > 0


def test_real_dicom_decodes_and_its_patient_id_is_pseudonymised():
    m = scan("dicom", shared_dir("cbis-ddsm"))
    image = read_image(m.frame["path"].iloc[0])
    assert image.shape == (4432, 2864) and image.dtype == np.float32
    assert 0.0 <= image.min() < image.max() <= 1.0
    assert "P_00173" not in m.frame.to_csv() and m.frame["group_id"].iloc[0].startswith("patient-")


@pytest.mark.slow
def test_busi_near_duplicates_never_straddle_a_split():
    manifest = scan("busi", shared_dir("busi"))
    result = audit(manifest, max_distance=4, progress=False)
    s = result.summary
    assert s["near_duplicate_pairs"] >= 100  # the known problem of BUSI
    assert s["near_duplicate_pairs_across_labels"] >= 1
    assert s["exact_duplicate_sets_with_conflicting_labels"] >= 1
    # a few BUSI images carry coloured drawings (calipers, markers); the audit finds them
    assert 0 < s["colour_marked_images"] < 0.05 * s["n_samples"]
    assert sum(s["colour_marked_by_class"].values()) == s["colour_marked_images"]
    split = make_split(manifest, pairs_to_merge(manifest, result.pairs), seed=0)
    check_no_leak(split)
    part = split["partition"].to_numpy()
    assert all(part[i] == part[j] for i, j in result.pairs[["i", "j"]].to_numpy())


@pytest.mark.slow
def test_busi_pairs_found_beyond_the_whole_image_hash_show_one_lesion_twice():
    """Frames of one scan cropped a little differently slip past the whole image's pHash, and
    frames a moment apart or with calipers past both pHashes; the centred square's pHash and
    the thumbnails' correlation find them. Checked by the same pixel correlation at 64 px
    computed here, and by name for pairs looked at by eye (the same lesion)."""
    from breastcad.data.audit import SAME_SCENE_CORRELATION

    manifest = scan("busi", shared_dir("busi"))
    result = audit(manifest, max_distance=4, progress=False)
    by = result.summary["near_duplicate_pairs_by"]
    assert by["centre_phash"] >= 10 and by["correlation"] >= 20
    pairs = result.pairs
    found = pairs[pairs["found_by"] == "correlation"]["correlation"]
    assert (found >= SAME_SCENE_CORRELATION).all()
    paths = result.records["path"].str.rsplit("/", n=1).str[1]
    named = {
        (paths[i], paths[j]): kind
        for i, j, kind in pairs[["i", "j", "found_by"]].itertuples(index=False)
    }
    assert named[("malignant (95).png", "malignant (96).png")] == "centre_phash"  # one frame
    assert named[("malignant (6).png", "malignant (8).png")] == "correlation"  # a moment apart
    assert named[("benign (141).png", "benign (64).png")] == "correlation"  # calipers added
    split = make_split(manifest, pairs_to_merge(manifest, pairs), seed=0)
    group = dict(zip(paths, split["split_group"], strict=True))
    cluster = {group[f"malignant ({k}).png"] for k in range(3, 10)}
    assert len(cluster) == 1  # seven frames of one lesion: one group


def test_idc_and_mias_split_by_patient_and_woman():
    for dataset, kwargs in (("idc", {"folds": 7}), ("mini-mias", {})):
        manifest = scan(dataset, shared_dir(dataset))
        split = make_split(manifest, **kwargs)
        check_no_leak(split)
        assert split.groupby("group_id")["partition"].nunique().max() == 1


@pytest.mark.parametrize(
    ("dataset", "folder", "size", "channels"),
    # 11 of the 624 BUSI images carry colour pixels (overlays), so 'auto' keeps 3 channels
    [("idc", "idc", 50, 3), ("busi", "busi", 64, 3), ("dicom", "cbis-ddsm", 128, 1)],
)
def test_real_data_caches_with_channels_from_the_data(tmp_path, dataset, folder, size, channels):
    from breastcad.config import PreprocessConfig
    from breastcad.data.cache import ImageCache

    m = scan(dataset, shared_dir(folder))
    cache = ImageCache.build(m, PreprocessConfig(size=size), tmp_path, progress=False)
    assert cache.pixels.shape == (len(m), size, size, channels)
    assert cache.readable.all() and not cache.problems
    assert cache.pixels[len(m) - 1].std() > 0  # real content, not the zero fill


def test_breastmnist_official_split_straddles_near_duplicates_and_our_carve_does_not():
    """BreastMNIST comes from BUSI, near duplicates included, and its official split was drawn
    image by image: some official val images (our test set) have a near duplicate in official
    train. Our validation part, carved from official train, keeps every cluster on one side."""
    from breastcad.config import ImageRunConfig
    from breastcad.image_experiment import make_partition

    manifest = scan("breastmnist", shared_dir("breastmnist"))
    cfg = ImageRunConfig.model_validate(
        {
            "data": {"dataset": "breastmnist", "root": str(shared_dir("breastmnist"))},
            "model": "transfer",
        }
    )
    split, settings = make_partition(manifest, cfg, progress=False)
    pairs = audit(manifest, max_distance=4, progress=False).pairs
    part = dict(zip(split["path"], split["partition"], strict=True))
    paths = manifest.frame["path"].tolist()
    kinds = {tuple(sorted((part[paths[i]], part[paths[j]]))) for i, j in pairs[["i", "j"]].values}
    assert ("train", "val") not in kinds  # the carve keeps clusters together
    assert ("test", "train") in kinds  # the official split does not
    assert settings["test_images_sharing_a_group"] > 0


@pytest.mark.slow
def test_breastmnist_copies_of_busi_images_are_recognised_by_their_centred_squares(tmp_path):
    """BreastMNIST is BUSI's centred squares at 28 px. With the hashes a bundle keeps of the
    benign and normal BUSI images, the BreastMNIST images whose source is one of them (found
    independently, by pixel correlation with every BUSI image's centred square) are all
    flagged, with next to nothing else; by the whole image's pHash alone, few would be."""
    from PIL import Image

    from breastcad.data import fingerprints
    from breastcad.data.duplicates import nearest

    busi = scan("busi", shared_dir("busi")).frame
    mnist = scan("breastmnist", shared_dir("breastmnist")).frame["path"].tolist()

    def centre_28(path: str) -> np.ndarray:
        image = Image.open(path).convert("L")
        side = min(image.size)
        left, top = (image.size[0] - side) // 2, (image.size[1] - side) // 2
        square = image.crop((left, top, left + side, top + side))
        return np.asarray(square.resize((28, 28), Image.BICUBIC), float).ravel()

    def unit(rows: np.ndarray) -> np.ndarray:
        rows = rows - rows.mean(axis=1, keepdims=True)
        return rows / (np.linalg.norm(rows, axis=1, keepdims=True) + 1e-9)

    sources = unit(np.stack([centre_28(p) for p in busi["path"]]))
    copies = unit(np.stack([read_image(p).astype(float).ravel() for p in mnist]))
    likeness = copies @ sources.T
    has_source = likeness.max(axis=1) > 0.98
    trained = (busi["label"] != "malignant").to_numpy()
    from_trained = has_source & trained[likeness.argmax(axis=1)]
    cache = tmp_path / "cache"
    paths = busi["path"][trained].tolist()
    hashes, _ = fingerprints.training_record(paths, 4, 2, False, cache)
    found = fingerprints.fingerprints(mnist, 2, False, cache)
    flagged = fingerprints.match(found, hashes, 4) != ""
    assert has_source.sum() > 450 and from_trained.sum() > 300
    assert flagged[from_trained].all()
    assert (flagged & ~from_trained).sum() <= 0.02 * len(mnist)
    whole = nearest(found["phash"], hashes["phash"], 4) >= 0
    assert whole.sum() < 0.25 * from_trained.sum()
