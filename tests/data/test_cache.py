import os

import numpy as np
import pytest
import torch

from breastcad.config import PreprocessConfig
from breastcad.data import cache as cache_module
from breastcad.data.cache import ImageCache, resolve_channels
from breastcad.data.datamodule import BalancedSampler, ImageDataModule
from breastcad.data.imaging import prepare, read_image
from breastcad.data.sources import scan
from breastcad.errors import DataError
from breastcad.models.inputs import ImageInput
from tests.data.conftest import blob_image, save


@pytest.fixture
def colour_tree(tmp_path):
    """A folder dataset: 30 colour images of two classes, odd sizes, one corrupt file."""
    root = tmp_path / "data"
    for i in range(30):
        label = "benign" if i % 3 else "malignant"
        save(root / label / f"img{i:02d}.png", blob_image(i, (40 + i, 60), rgb=True))
    (root / "benign" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


def test_prepare_sizes_channels_and_dtypes():
    gray = blob_image(0, (30, 60))
    rgb = blob_image(1, (60, 30), rgb=True)
    sixteen = gray.astype(np.float32) / 255.0
    assert prepare(gray, 32, "pad", 1).shape == (32, 32, 1)
    three = prepare(gray, 32, "pad", 3)
    assert three.shape == (32, 32, 3) and np.array_equal(three[..., 0], three[..., 2])
    one = prepare(rgb, 32, "crop", 1)
    assert one.dtype == np.uint8 and one.shape == (32, 32, 1)
    # float input gives the same pixels as its uint8 original, within rounding
    assert np.abs(prepare(sixteen, 32).astype(int) - prepare(gray, 32).astype(int)).max() <= 1
    # padding keeps the aspect ratio: a 30x60 image fills 16 of 32 rows, the rest is black
    padded = prepare(gray, 32, "pad", 1)[..., 0]
    assert padded[:7].max() == 0 and padded[-7:].max() == 0 and padded[12:20].max() > 0


def test_auto_channels_follow_the_data(colour_tree, busi_tree):
    colour = scan("folder", colour_tree)
    gray = scan("busi", busi_tree)
    auto = PreprocessConfig(size=16)
    assert resolve_channels(colour.frame["path"].tolist(), auto) == 3
    assert resolve_channels(gray.frame["path"].tolist(), auto) == 1
    assert resolve_channels(gray.frame["path"].tolist(), PreprocessConfig(channels=3)) == 3


def test_cache_holds_prepared_pixels_reports_bad_files_and_is_reused(colour_tree, tmp_path):
    manifest = scan("folder", colour_tree)
    config = PreprocessConfig(size=24, resize="pad")
    cache = ImageCache.build(manifest, config, tmp_path / "cache", jobs=1, progress=False)
    assert not cache.reused and cache.pixels.shape == (31, 24, 24, 3)
    broken = [i for i, p in enumerate(cache.paths) if p.endswith("broken.png")]
    assert list(np.flatnonzero(~cache.readable)) == broken
    assert list(cache.problems) == [cache.paths[broken[0]]]
    for i in np.flatnonzero(cache.readable):
        assert np.array_equal(cache.pixels[i], prepare(read_image(cache.paths[i]), 24, "pad", 3))

    # decoded patient images, and their paths, for this account alone; the folder it made
    # on the way too
    assert cache.path.stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "cache").stat().st_mode & 0o777 == 0o700
    cache.path.chmod(0o755)  # as caches were written before they were made private
    assert ImageCache.build(manifest, config, tmp_path / "cache", progress=False).reused
    assert cache.path.stat().st_mode & 0o777 == 0o700
    stamp = os.stat(cache.path / "pixels.u8").st_mtime_ns
    again = ImageCache.build(manifest, config, tmp_path / "cache", progress=False)
    assert again.reused and again.path == cache.path
    assert os.stat(again.path / "pixels.u8").st_mtime_ns == stamp
    assert np.array_equal(again.readable, cache.readable)

    other_size = ImageCache.build(manifest, PreprocessConfig(size=16), tmp_path / "cache")
    assert other_size.path != cache.path and other_size.pixels.shape[1] == 16
    # a changed file changes the manifest fingerprint, hence the key
    save(colour_tree / "benign" / "img01.png", blob_image(99, (41, 60), rgb=True))
    changed = ImageCache.build(scan("folder", colour_tree), config, tmp_path / "cache")
    assert changed.path != cache.path and not changed.reused


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_build_asked_for_facts_keeps_what_an_audit_would_find(
    colour_tree, tmp_path, jobs, monkeypatch
):
    """`facts=True` (evaluate with a bundle that keeps training hashes): the build records,
    from its own decode, what `inspect_image` finds of each readable image in the audit
    cache, so the hashes need no second decode; a plain build records nothing."""
    from breastcad.data.inspection import AuditCache, file_key, inspect_image

    manifest = scan("folder", colour_tree)
    config = PreprocessConfig(size=24)
    monkeypatch.setattr(cache_module, "CHUNK", 8)  # several chunks, in processes with jobs=2
    plain = ImageCache.build(manifest, config, tmp_path / "plain", jobs, progress=False)
    built = ImageCache.build(manifest, config, tmp_path / "c", jobs, progress=False, facts=True)
    assert np.array_equal(plain.pixels, built.pixels)
    assert AuditCache(tmp_path / "plain").get([file_key(p) for p in plain.paths]) == {}
    known = AuditCache(tmp_path / "c").get([file_key(p) for p in built.paths])
    readable = [p for p, ok in zip(built.paths, built.readable, strict=True) if ok]
    assert len(known) == len(readable) == len(built.paths) - 1  # broken.png: not kept
    for path in readable:
        assert known[file_key(path)] == inspect_image(path)


def test_parallel_build_matches_serial_and_ignores_a_crashed_partial(
    colour_tree, tmp_path, monkeypatch
):
    manifest = scan("folder", colour_tree)
    config = PreprocessConfig(size=20, channels=1)
    serial = ImageCache.build(manifest, config, tmp_path / "a", jobs=1, progress=False)
    monkeypatch.setattr(cache_module, "CHUNK", 4)  # 8 chunks over 2 processes
    key = ImageCache.key(manifest.fingerprint(), serial.settings)
    partial = tmp_path / "b" / f"{key}.partial"
    partial.mkdir(parents=True)
    (partial / "pixels.u8").write_bytes(b"left by a crash")
    parallel = ImageCache.build(manifest, config, tmp_path / "b", jobs=2, progress=False)
    assert not parallel.reused and not partial.exists()
    assert np.array_equal(np.asarray(parallel.pixels), np.asarray(serial.pixels))
    assert np.array_equal(parallel.readable, serial.readable)


def test_a_cache_that_does_not_match_is_refused(colour_tree, tmp_path):
    manifest = scan("folder", colour_tree)
    cache = ImageCache.build(manifest, PreprocessConfig(size=8), tmp_path, progress=False)
    with open(cache.path / "pixels.u8", "ab") as f:
        f.write(b"x")
    with pytest.raises(Exception, match="wrong size"):
        ImageCache.build(manifest, PreprocessConfig(size=8), tmp_path, progress=False)
    # a cache folder that cannot be made (below a file) is named, with what to set
    blocked = tmp_path / "a file"
    blocked.write_text("x")
    with pytest.raises(DataError, match=r"decode cache cannot be written here .*BREASTCAD_CACHE"):
        ImageCache.build(manifest, PreprocessConfig(size=8), blocked / "cache", progress=False)


def test_datamodule_batches_partitions_and_leaves_out_bad_files(colour_tree, tmp_path):
    manifest = scan("folder", colour_tree)
    partition = np.where(np.arange(len(manifest)) % 5 == 0, "val", "train")
    dm = ImageDataModule(
        manifest, partition, PreprocessConfig(size=16), batch_size=8, cache_dir=tmp_path
    )
    dm.setup()
    assert len(dm.problems) == 1 and "broken.png" in dm.problems[0]
    counts = dm.counts()
    assert sum(counts["train"].values()) + sum(counts["val"].values()) == 30
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.uint8 and x.shape == (8, 16, 16, 3) and y.dtype == torch.int64
    # every val image arrives once, with its own label, in a reproducible order
    seen = torch.cat([y for _, y in dm.val_dataloader()])
    ds = dm.datasets["val"]
    assert seen.tolist() == ds.targets.tolist()
    labels = manifest.frame["label"].map({"benign": 0, "malignant": 1}).to_numpy()
    assert ds.targets.tolist() == labels[ds.rows].tolist()
    first = [b[1].tolist() for b in dm.train_dataloader()]
    dm2 = ImageDataModule(
        manifest, partition, PreprocessConfig(size=16), batch_size=8, cache_dir=tmp_path
    )
    dm2.setup()
    assert dm2.cache.reused and [b[1].tolist() for b in dm2.train_dataloader()] == first


def test_datamodule_works_with_worker_processes(colour_tree, tmp_path):
    manifest = scan("folder", colour_tree)
    dm = ImageDataModule(
        manifest,
        ["train"] * len(manifest),
        PreprocessConfig(size=16),
        batch_size=10,
        cache_dir=tmp_path,
        num_workers=1,
    )
    dm.setup()
    assert sum(len(y) for _, y in dm.train_dataloader()) == 30


def test_a_training_epoch_never_ends_with_a_batch_of_one(colour_tree, tmp_path):
    """30 images in batches of 29 would leave one image alone, which batch norm cannot train
    on: that epoch drops it; batches of 10 keep all; evaluation never drops any."""
    manifest = scan("folder", colour_tree)
    sizes = {}
    for batch in (29, 10):
        dm = ImageDataModule(
            manifest,
            ["train"] * len(manifest),
            PreprocessConfig(size=16),
            batch_size=batch,
            cache_dir=tmp_path,
        )
        dm.setup()
        sizes[batch] = [len(y) for _, y in dm.train_dataloader()]
        assert sum(len(y) for _, y in dm.ordered_dataloader("train")) == 30
    assert sizes == {29: [29], 10: [10, 10, 10]}


@pytest.mark.parametrize("mode", ["oversample", "undersample"])
def test_balanced_sampler_draws_classes_equally(mode):
    targets = np.array([0] * 20 + [1] * 5)
    sampler = BalancedSampler(targets, mode, seed=1)
    drawn = targets[list(sampler)]
    per_class = 20 if mode == "oversample" else 5
    assert np.bincount(drawn).tolist() == [per_class, per_class]
    epoch1 = list(BalancedSampler(targets, mode, 3))
    resampled = BalancedSampler(targets, mode, 3)
    epoch1b, epoch2 = list(resampled), list(resampled)
    assert epoch1 == epoch1b and epoch1 != epoch2  # seeded, and new draws each epoch
    if mode == "undersample":
        assert len(set(np.array(epoch1)[targets[epoch1] == 0])) == 5  # no repeats


def test_image_input_normalises_and_broadcasts_gray():
    gray = torch.full((2, 4, 4, 1), 255, dtype=torch.uint8)
    layer = ImageInput(3, mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 0.5))
    out = layer(gray)
    assert out.shape == (2, 3, 4, 4)
    assert torch.allclose(out[:, 0], torch.ones(1)) and torch.allclose(
        out[:, 1], torch.full((1,), 2.0)
    )
    colour = torch.zeros((1, 4, 4, 3), dtype=torch.uint8)
    colour[..., 0] = 255
    assert torch.allclose(ImageInput(1)(colour), torch.full((1, 1, 4, 4), 1 / 3))


def test_rectangular_sizes_reach_the_cache_and_the_published_mammogram_cnn(colour_tree, tmp_path):
    from breastcad.models import create_model

    wide = blob_image(3, (30, 90))
    for mode in ("pad", "crop", "stretch"):
        assert prepare(wide, (24, 16), mode, 1).shape == (24, 16, 1)
    cache = ImageCache.build(
        scan("folder", colour_tree), PreprocessConfig(size=(24, 16), channels=1), tmp_path
    )
    assert cache.pixels.shape == (31, 24, 16, 1)
    net = create_model("mammo_cnn", size=(48, 32))  # the published 2250 x 1500 shape, scaled
    assert net(torch.zeros(2, 48, 32, 1, dtype=torch.uint8)).shape == (2, 2)
    with pytest.raises(ValueError, match="outside"):
        PreprocessConfig(size=(4, 5000))
