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
