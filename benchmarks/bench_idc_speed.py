"""idc_cnn training speed on this machine, through the real path (cache -> datamodule ->
augmentation -> Lightning Trainer), against two references measured in the same run: the same
network and batches in a bare PyTorch loop, and the machine's float32 matrix-multiply rate.

Achieved GFLOP/s counts the multiply-adds of every convolution and dense layer (x2 for
FLOPs), times 3 for a training step (forward, input and weight gradients). The fit is repeated
(`--repeats`), each time between two matmul measurements, because this shared machine's speed
drifts by a third within minutes: each repeat's share of matmul is against its own references,
and the table gives every repeat and the median.

    .venv/bin/python benchmarks/bench_idc_speed.py [--n 3500] [--epochs 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from breastcad.models import create_model
from breastcad.training.image_fit import ImageFitSettings, fit_image


def matmul_gflops(n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def forward_flops(net: nn.Module, x: torch.Tensor) -> float:
    """FLOPs of one forward pass per image (convolutions and dense layers)."""
    total = 0.0

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total += 2.0 * k * output.numel()
        elif isinstance(module, nn.Linear):
            total += 2.0 * module.in_features * output.numel()

    handles = [m.register_forward_hook(hook) for m in net.modules()]
    with torch.no_grad():
        net.eval()(x)
    for h in handles:
        h.remove()
    return total / len(x)


def bare_loop(n_images: int, batch: int = 35, seed: int = 0) -> float:
    """Images per second of the same network in a plain loop on in-memory batches."""
    torch.manual_seed(seed)
    net = create_model("idc_cnn").train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4, eps=1e-7)
    x = torch.randint(0, 256, (n_images, 50, 50, 3), dtype=torch.uint8)
    y = torch.randint(0, 2, (n_images,))
    start = time.perf_counter()
    for i in range(0, n_images, batch):
        opt.zero_grad()
        F.cross_entropy(net(x[i : i + batch]), y[i : i + batch]).backward()
        opt.step()
    return n_images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3500, help="generated training patches")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_image_cache import generated_training_data

    work = Path(tempfile.mkdtemp(prefix="bench-idc-"))
    try:
        dm = generated_training_data(work, args.n, 50, 35)
        net = create_model("idc_cnn")
        flops = forward_flops(net, torch.zeros(2, 50, 50, 3, dtype=torch.uint8))
        settings = ImageFitSettings(epochs=args.epochs, lr=1e-4, augment="histo", progress=False)
        seen = args.epochs * int(dm.cache.readable.sum())
        rates, shares, refs = [], [], []
        for repeat in range(args.repeats):
            before = matmul_gflops()
            start = time.perf_counter()
            fit_image(create_model("idc_cnn"), dm, settings, work / f"run{repeat}")
            rates.append(seen / (time.perf_counter() - start))
            after = matmul_gflops()
            refs.append(f"{before:.0f} / {after:.0f}")
            shares.append(3 * flops * rates[-1] / 1e9 / float(np.mean([before, after])))
        bare = bare_loop(min(args.n, 1750))
        rate = statistics.median(rates)
        rows = [
            ("threads", str(torch.get_num_threads())),
            ("forward FLOPs per 50x50 patch", f"{flops / 1e6:.0f} M"),
            ("matmul rate, 2048^2 float32, before / after each fit", "; ".join(refs) + " GFLOP/s"),
            (
                f"idc_cnn fit, {args.epochs} epochs x {seen // args.epochs} patches, batch 35, "
                "histo augmentation, Lightning",
                f"{rate:.0f} images/s median ({', '.join(f'{r:.0f}' for r in rates)}; goal >= 150)",
            ),
            (
                "achieved training GFLOP/s as a share of matmul",
                f"{statistics.median(shares):.0%} median "
                f"({', '.join(f'{x:.0%}' for x in shares)}; goal >= 55%)",
            ),
            ("reference: bare PyTorch loop, same net, batch 35", f"{bare:.0f} images/s"),
            ("breastcad fit (median) / bare loop", f"{rate / bare:.2f}"),
        ]
        print("\n| measure | value |\n|---|---|")
        for name, value in rows:
            print(f"| {name} | {value} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
