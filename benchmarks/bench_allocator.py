"""Training and inference steps with glibc's default malloc thresholds against `keep_freed_memory`.

Each measurement is a fresh process (the setting cannot be undone) that trains a network (or
runs it in inference mode) on random uint8 batches for a fixed number of steps after two
warm-up steps; the two settings
alternate, so slow phases of a shared machine hit both. Prints images/s, page faults and system
time per batch, and peak resident memory, as medians over the repeats. One case runs the real
training path (`fit_image`) instead of a plain loop.

    .venv/bin/python benchmarks/bench_allocator.py [--repeats 3] [--steps 12]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = {  # name: (registry model, keyword arguments, input size, batch, mode)
    "idc_cnn 50 px, batch 35, training steps": ("idc_cnn", {}, 50, 35, "train"),
    "full_finetune Lite0 160 px, batch 32, training steps": (
        "full_finetune",
        {"size": 160},
        160,
        32,
        "train",
    ),
    "full_finetune Lite0 160 px, batch 32, fit_image (1 epoch, setup included)": (
        "full_finetune",
        {"size": 160, "num_classes": 2},
        160,
        32,
        "fit",
    ),
    "transfer Lite0 224 px, batch 64, inference": ("transfer", {"size": 224}, 224, 64, "infer"),
}


def worker(case: str, keep: bool, steps: int) -> dict:
    if not keep:
        os.environ["BREASTCAD_KEEP_FREED_MEMORY"] = "0"  # fit_image would apply it otherwise
    import torch

    from breastcad.allocator import keep_freed_memory
    from breastcad.models import create_model

    applied = keep_freed_memory()
    name, kwargs, size, batch, mode = CASES[case]
    torch.manual_seed(0)
    net = create_model(name, **kwargs).train(mode != "infer")
    if mode == "fit":
        step, warmup, steps = fit_step(net, size, batch), 0, 1
        images = batch * 10
    else:
        step, warmup, images = direct_step(net, size, batch, steps, mode), 2, batch * steps
    for i in range(warmup):
        step(i)
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for i in range(warmup, warmup + steps):
        step(i)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "applied": applied,
        "images_per_s": images / seconds,
        "faults_per_step": (after.ru_minflt - before.ru_minflt) * batch / images,
        "sys_ms_per_step": 1e3 * (after.ru_stime - before.ru_stime) * batch / images,
        "peak_rss_mb": after.ru_maxrss / 1024,
    }


def direct_step(net, size: int, batch: int, steps: int, mode: str):
    """A plain loop's step i: AdamW training or inference on random uint8 batches."""
    import torch
    import torch.nn.functional as F

    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x = torch.randint(0, 256, (batch * (steps + 2), size, size, 3), dtype=torch.uint8)
    y = torch.randint(0, 2, (len(x),))

    def step(i: int) -> None:
        part = slice(i * batch, (i + 1) * batch)
        if mode == "infer":
            with torch.inference_mode():
                net(x[part])
            return
        opt.zero_grad()
        F.cross_entropy(net(x[part]), y[part]).backward()
        opt.step()

    return step


def fit_step(net, size: int, batch: int):
    """The real path, once: one epoch of `fit_image` (Lightning, augmentation, checkpoints) on
    ten batches of generated IDC-style patches resized to `size`."""
    from bench_image_cache import generated_training_data
    from breastcad.training.image_fit import ImageFitSettings, fit_image

    work = Path(tempfile.mkdtemp(prefix="bench-alloc-"))
    dm = generated_training_data(work, batch * 10, size, batch)
    settings = ImageFitSettings(
        epochs=1, lr=1e-4, augment="histo", progress=False, optim=net.recipe.optim_settings()
    )

    def step(i: int) -> None:
        fit_image(net, dm, settings, work / "run")
        shutil.rmtree(work, ignore_errors=True)

    return step


def measure(case: str, keep: bool, steps: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", case, "--keep", str(int(keep))]
    out = subprocess.run([*cmd, "--steps", str(steps)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--keep", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        print(json.dumps(worker(args.worker, bool(args.keep), args.steps)))
        return
    columns = ["network", "malloc", "images/s", "page faults / batch", "system ms / batch"]
    print("\n| " + " | ".join([*columns, "peak RSS MB"]) + " |")
    print("|---|---|---|---|---|---|")
    for case in CASES:
        runs: dict[bool, list[dict]] = {False: [], True: []}
        for _ in range(args.repeats):
            for keep in (False, True):
                runs[keep].append(measure(case, keep, args.steps))
        for keep in (False, True):
            med = {k: statistics.median(r[k] for r in runs[keep]) for k in runs[keep][0]}
            label = "keep_freed_memory" if keep else "glibc defaults"
            if keep and not all(r["applied"] for r in runs[keep]):
                label += " (not applied here)"
            rates = ", ".join(f"{r['images_per_s']:.1f}" for r in runs[keep])
            print(
                f"| {case} | {label} | {med['images_per_s']:.1f} ({rates}) | "
                f"{med['faults_per_step']:.0f} | {med['sys_ms_per_step']:.0f} | "
                f"{med['peak_rss_mb']:.0f} |"
            )
        ratio = statistics.median(
            a["images_per_s"] / b["images_per_s"]
            for a, b in zip(runs[True], runs[False], strict=True)
        )
        print(f"| {case} | speed ratio, median of pairs | {ratio:.2f}x | | | |")


if __name__ == "__main__":
    main()
