"""Image input benchmark: build the decode cache for a generated IDC tree of >= 50,000 50x50 PNG
patches and read cached epochs, against decoding the PNGs each epoch (the reference, measured in
the same run) and against an `idc_cnn` training step (data time must stay under 10% of it);
and the audit every run starts with (decode, hash), cold and with its cache of what it found.

Peak memory is sampled every 20 ms over this process and its worker processes as proportional
set size (pages shared by forked workers counted once): anonymous memory (what the program
really holds) and all resident memory (which also counts page-cache pages of the memory-mapped
cache and of shared libraries, reclaimable or shared). A cache of a 10,000-patch subset is built
first to show that peak memory does not grow with the number of images.

    .venv/bin/python benchmarks/bench_image_cache.py [--n 50000] [--jobs 2] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from breastcad.config import PreprocessConfig
from breastcad.data.audit import audit
from breastcad.data.cache import ImageCache
from breastcad.data.datamodule import ImageDataModule
from breastcad.data.duplicates import _all_pairs, hamming_pairs
from breastcad.data.imaging import prepare, read_image
from breastcad.data.sources import scan
from breastcad.models import create_model

PER_PATIENT = 500


def _write_patient(args: tuple[Path, int, int]) -> int:
    base, patient, n = args
    rng = np.random.default_rng(patient)
    for k in range(n):
        label = int(rng.random() < 0.3)
        h = 50 if k % 100 else 35  # 1% edge patches, smaller than 50x50 as in the full set
        low = rng.integers(60, 230, (7, 7, 3), dtype=np.uint8)
        img = Image.fromarray(low).resize((50, h), Image.BICUBIC)
        folder = base / str(patient) / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        img.save(folder / f"{patient}_idx5_x{50 * (k % 40)}_y{50 * (k // 40)}_class{label}.png")
    return n


def generate_tree(root: Path, n: int, jobs: int) -> None:
    base = root / "IDC_regular_ps50_idx5"
    tasks = [
        (base, 10000 + p, min(PER_PATIENT, n - p * PER_PATIENT))
        for p in range(-(-n // PER_PATIENT))
    ]
    with ProcessPoolExecutor(jobs) as pool:
        list(pool.map(_write_patient, tasks))
    bad = base / "10000" / "0" / "10000_idx5_x0_y9999_class0.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\ntruncated")  # a corrupt file: reported and skipped


class MemoryPeak:
    """Peak anonymous and resident memory of this process and its descendants, sampled."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval, self.anon, self.rss = interval, 0, 0
        self._stop = threading.Event()

    @staticmethod
    def _tree(pid: int) -> list[int]:
        pids = [pid]
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                text = Path(f"/proc/{pid}/task/{task}/children").read_text()
                for child in text.split():
                    pids += MemoryPeak._tree(int(child))
        except OSError:
            pass
        return pids

    @staticmethod
    def _status(pid: int) -> tuple[int, int]:
        """Proportional set sizes (anonymous, all): pages shared by forked workers count once."""
        fields = {}
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
                key, _, value = line.partition(":")
                if key in ("Pss_Anon", "Pss"):
                    fields[key] = int(value.split()[0]) * 1024
        except OSError:
            pass
        return fields.get("Pss_Anon", 0), fields.get("Pss", 0)

    def _run(self) -> None:
        while not self._stop.is_set():
            sums = np.sum([self._status(p) for p in self._tree(os.getpid())], axis=0)
            self.anon, self.rss = max(self.anon, int(sums[0])), max(self.rss, int(sums[1]))
            time.sleep(self.interval)

    def __enter__(self) -> MemoryPeak:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def generated_training_data(work: Path, n: int, size: int, batch: int) -> ImageDataModule:
    """`n` generated IDC-style patches under `work`, all in the training part, cached at
    `size` px: the data of the training-speed benchmarks."""
    generate_tree(work / "idc", n, 2)
    manifest = scan("idc", work / "idc")
    dm = ImageDataModule(
        manifest,
        ["train"] * len(manifest),
        PreprocessConfig(size=size, channels=3),
        batch_size=batch,
        cache_dir=work / "cache",
        progress=False,
    )
    dm.setup()
    return dm


def timed_build(
    manifest, config, cache_dir: Path, jobs: int
) -> tuple[ImageCache, float, MemoryPeak]:
    with MemoryPeak() as peak:
        start = time.perf_counter()
        cache = ImageCache.build(manifest, config, cache_dir, jobs=jobs, progress=False)
        seconds = time.perf_counter() - start
    return cache, seconds, peak


def step_seconds(batch: int = 35, steps: int = 20) -> float:
    """Median time of one idc_cnn training step (forward, backward, Adam) on a uint8 batch."""
    torch.manual_seed(0)
    net = create_model("idc_cnn")
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x = torch.randint(0, 256, (batch, 50, 50, 3), dtype=torch.uint8)
    y = torch.randint(0, 2, (batch,))
    times = []
    for i in range(steps + 3):
        start = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
        if i >= 3:
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-cache-"))
    mb = 1024**2
    try:
        start = time.perf_counter()
        generate_tree(work / "idc", args.n, args.jobs)
        print(f"generated {args.n} PNG patches in {time.perf_counter() - start:.0f} s")
        start = time.perf_counter()
        manifest = scan("idc", work / "idc")
        scan_s = time.perf_counter() - start
        config = PreprocessConfig(size=50, resize="pad", channels=3)
        base_anon, base_all = MemoryPeak._status(os.getpid())
        small = manifest.subset(manifest.frame.index < min(10_000, len(manifest) // 5))
        _, small_s, small_peak = timed_build(small, config, work / "cache", args.jobs)
        cache, build_s, peak = timed_build(manifest, config, work / "cache", args.jobs)
        start = time.perf_counter()
        reused = ImageCache.build(manifest, config, work / "cache", progress=False)
        reuse_s = time.perf_counter() - start

        audits = []
        for _ in range(2):  # cold (nothing known), then warm (every file known, unchanged)
            start = time.perf_counter()
            found = audit(manifest, jobs=args.jobs, progress=False, cache_dir=work / "cache")
            audits.append(time.perf_counter() - start)
        assert len(found.summary["unreadable"]) == 1
        hashes = found.records.loc[found.readable, "phash"].to_numpy(dtype=np.uint64)
        start = time.perf_counter()
        fast = hamming_pairs(hashes, 4)
        fields_s = time.perf_counter() - start
        start = time.perf_counter()  # reference: every pair compared (the audit before)
        assert np.array_equal(fast, _all_pairs(hashes, 4, 2048))
        all_pairs_s = time.perf_counter() - start

        # reference: decode + prepare every PNG, as training without a cache does each epoch
        sample = [p for p, ok in zip(cache.paths, cache.readable, strict=True) if ok][:3000]
        start = time.perf_counter()
        for p in sample:
            prepare(read_image(p), 50, "pad", 3)
        decode_rate = len(sample) / (time.perf_counter() - start)

        dm = ImageDataModule(
            manifest, ["train"] * len(manifest), config, batch_size=35, cache_dir=work / "cache"
        )
        dm.setup()
        with MemoryPeak() as read_peak:
            start = time.perf_counter()
            n_batches = n_seen = 0
            for x, _ in dm.train_dataloader():
                n_batches += 1
                n_seen += len(x)
            epoch_s = time.perf_counter() - start
        batch_s = epoch_s / n_batches
        step_s = step_seconds()
        size_mb = cache.pixels.nbytes / mb
        rows = [
            (
                "process before any build (anon / all)",
                f"{base_anon / mb:.0f} / {base_all / mb:.0f} MB",
            ),
            (
                "images (readable / problems)",
                f"{int(cache.readable.sum())} / {len(cache.problems)}",
            ),
            ("scan + manifest", f"{scan_s:.1f} s"),
            (
                "cache build, cold",
                f"{build_s:.1f} s = {len(manifest) / build_s:,.0f} patches/s "
                f"({args.jobs} processes)",
            ),
            ("cache reuse (fingerprint + index)", f"{reuse_s:.2f} s (reused={reused.reused})"),
            ("cache size on disk", f"{size_mb:.0f} MB"),
            (
                "audit (decode, hashes, duplicates), cold / files known",
                f"{audits[0]:.1f} s / {audits[1]:.2f} s ({audits[0] / audits[1]:.0f}x)",
            ),
            (
                "near-duplicate search: shared hash fields / every pair (reference)",
                f"{fields_s:.2f} s / {all_pairs_s:.2f} s ({all_pairs_s / fields_s:.1f}x), "
                f"{len(fast)} pairs",
            ),
            (
                f"peak anon / all, {len(small):,}-patch build",
                f"{small_peak.anon / mb:.0f} / {small_peak.rss / mb:.0f} MB ({small_s:.1f} s)",
            ),
            (
                f"peak anon / all, {len(manifest):,}-patch build",
                f"{peak.anon / mb:.0f} / {peak.rss / mb:.0f} MB",
            ),
            (
                "peak anon / all, reading an epoch",
                f"{read_peak.anon / mb:.0f} / {read_peak.rss / mb:.0f} MB",
            ),
            (
                "cached epoch read (batch 35, shuffled)",
                f"{epoch_s:.2f} s = {n_seen / epoch_s:,.0f} patches/s",
            ),
            ("reference: decode PNGs each epoch (1 process)", f"{decode_rate:,.0f} patches/s"),
            ("cached read vs decoding", f"{n_seen / epoch_s / decode_rate:.0f}x faster"),
            ("data time per batch", f"{batch_s * 1000:.2f} ms"),
            ("idc_cnn training step (batch 35)", f"{step_s * 1000:.1f} ms"),
            ("data time / step time (goal < 10%)", f"{batch_s / step_s:.1%}"),
        ]
        print(f"\n| measure ({len(manifest):,} generated 50x50 IDC patches) | value |\n|---|---|")
        for name, value in rows:
            print(f"| {name} | {value} |")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
