"""idc_cnn training speed on this machine, through the real path (cache -> datamodule ->
augmentation -> Lightning Trainer), against two references measured in the same run: the same
network and batches in a bare PyTorch loop, and the machine's matrix-multiply rate; for float32
training and for bfloat16 mixed precision (`--precision bf16-mixed`), each against the matmul
rate of its own arithmetic, the two alternating within each repeat.

Achieved GFLOP/s counts the multiply-adds of every convolution and dense layer (x2 for
FLOPs), times 3 for a training step (forward, input and weight gradients). The fit is repeated
(`--repeats`), each time between two matmul measurements, because this shared machine's speed
drifts by a third within minutes: each repeat's share of matmul is against its own references,
and the table gives every repeat and the median.

    .venv/bin/python benchmarks/bench_idc_speed.py [--n 3500] [--epochs 2] [--repeats 3]
        [--precisions 32 bf16-mixed]
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


def matmul_gflops(n: int = 2048, reps: int = 10, dtype: torch.dtype = torch.float32) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
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


def bare_loop(n_images: int, batch: int = 35, seed: int = 0, bf16: bool = False) -> float:
    """Images per second of the same network in a plain loop on in-memory batches (bfloat16
    autocast around the forward pass with `bf16`, as Lightning's bf16-mixed does)."""
    torch.manual_seed(seed)
    net = create_model("idc_cnn").train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4, eps=1e-7)
    x = torch.randint(0, 256, (n_images, 50, 50, 3), dtype=torch.uint8)
    y = torch.randint(0, 2, (n_images,))
    start = time.perf_counter()
    for i in range(0, n_images, batch):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = net(x[i : i + batch])
        F.cross_entropy(logits.float(), y[i : i + batch]).backward()
        opt.step()
    return n_images / (time.perf_counter() - start)


def cpu_model() -> str:
    """The CPU's name and its bfloat16 instructions (the matmul reference and the bf16 gain
    depend on both; this shared machine has not always been the same CPU)."""
    info = Path("/proc/cpuinfo")
    text = info.read_text() if info.is_file() else ""
    names = [line.split(":", 1)[1].strip() for line in text.splitlines() if "model name" in line]
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "").split()
    bf16 = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    return f"{names[0] if names else 'unknown'}; bfloat16 instructions: {', '.join(bf16) or 'none'}"


PRECISIONS = {"32": ("float32", torch.float32), "bf16-mixed": ("bfloat16", torch.bfloat16)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3500, help="generated training patches")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--precisions", nargs="+", default=list(PRECISIONS), choices=list(PRECISIONS)
    )
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_image_cache import generated_training_data

    work = Path(tempfile.mkdtemp(prefix="bench-idc-"))
    try:
        dm = generated_training_data(work, args.n, 50, 35)
        flops = forward_flops(create_model("idc_cnn"), torch.zeros(2, 50, 50, 3, dtype=torch.uint8))
        seen = args.epochs * int(dm.cache.readable.sum())
        rates = {p: [] for p in args.precisions}
        shares = {p: [] for p in args.precisions}
        refs = {p: [] for p in args.precisions}
        for repeat in range(args.repeats):  # the precisions alternate within each repeat
            for precision in args.precisions:
                dtype = PRECISIONS[precision][1]
                before = matmul_gflops(dtype=dtype)
                settings = ImageFitSettings(
                    epochs=args.epochs,
                    lr=1e-4,
                    augment="histo",
                    progress=False,
                    precision=precision,
                )
                start = time.perf_counter()
                fit_image(create_model("idc_cnn"), dm, settings, work / f"run{repeat}{precision}")
                rates[precision].append(seen / (time.perf_counter() - start))
                after = matmul_gflops(dtype=dtype)
                refs[precision].append(f"{before:.0f} / {after:.0f}")
                achieved = 3 * flops * rates[precision][-1] / 1e9
                shares[precision].append(achieved / float(np.mean([before, after])))
        rows = [
            ("CPU", cpu_model()),
            ("threads", str(torch.get_num_threads())),
            ("forward FLOPs per 50x50 patch", f"{flops / 1e6:.0f} M"),
        ]
        for precision in args.precisions:
            name, dtype = PRECISIONS[precision]
            bare = bare_loop(min(args.n, 1750), bf16=dtype == torch.bfloat16)
            rate = statistics.median(rates[precision])
            rows += [
                (
                    f"matmul rate, 2048^2 {name}, before / after each fit",
                    "; ".join(refs[precision]) + " GFLOP/s",
                ),
                (
                    f"idc_cnn fit, precision {precision}, {args.epochs} epochs x "
                    f"{seen // args.epochs} patches, batch 35, histo augmentation, Lightning",
                    f"{rate:.0f} images/s median "
                    f"({', '.join(f'{r:.0f}' for r in rates[precision])}; goal >= 150)",
                ),
                (
                    f"achieved training GFLOP/s as a share of {name} matmul",
                    f"{statistics.median(shares[precision]):.0%} median "
                    f"({', '.join(f'{x:.0%}' for x in shares[precision])}; goal >= 55%)",
                ),
                (
                    f"reference: bare PyTorch loop, same net, batch 35, {name}",
                    f"{bare:.0f} images/s",
                ),
                (f"breastcad fit (median) / bare loop, {name}", f"{rate / bare:.2f}"),
            ]
        if set(PRECISIONS) <= set(args.precisions):
            ratios = [b / f for f, b in zip(rates["32"], rates["bf16-mixed"], strict=True)]
            rows.append(
                (
                    "bf16-mixed / float32 fit, pairs of the same repeat",
                    f"{statistics.median(ratios):.2f} median "
                    f"({', '.join(f'{r:.2f}' for r in ratios)})",
                )
            )
        print("\n| measure | value |\n|---|---|")
        for name, value in rows:
            print(f"| {name} | {value} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
