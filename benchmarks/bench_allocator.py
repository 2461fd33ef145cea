"""Training steps with glibc's default malloc thresholds against `keep_freed_memory`.

Each measurement is a fresh process (the setting cannot be undone) that trains a network on
random uint8 batches for a fixed number of steps after two warm-up steps; the two settings
alternate, so slow phases of a shared machine hit both. Prints images/s, page faults and system
time per measured step, and peak resident memory, as medians over the repeats.

    .venv/bin/python benchmarks/bench_allocator.py [--repeats 3] [--steps 12]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

CASES = {  # name: (registry model, keyword arguments, input size, batch)
    "idc_cnn 50 px, batch 35": ("idc_cnn", {}, 50, 35),
    "full_finetune Lite0 160 px, batch 32": ("full_finetune", {"size": 160}, 160, 32),
}


def worker(case: str, keep: bool, steps: int) -> dict:
    import torch
    import torch.nn.functional as F

    from breastcad.allocator import keep_freed_memory
    from breastcad.models import create_model

    applied = keep_freed_memory() if keep else False
    name, kwargs, size, batch = CASES[case]
    torch.manual_seed(0)
    net = create_model(name, **kwargs).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x = torch.randint(0, 256, (batch * (steps + 2), size, size, 3), dtype=torch.uint8)
    y = torch.randint(0, 2, (len(x),))

    def step(i: int) -> None:
        opt.zero_grad()
        part = slice(i * batch, (i + 1) * batch)
        F.cross_entropy(net(x[part]), y[part]).backward()
        opt.step()

    for i in range(2):
        step(i)
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for i in range(2, steps + 2):
        step(i)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "applied": applied,
        "images_per_s": steps * batch / seconds,
        "faults_per_step": (after.ru_minflt - before.ru_minflt) / steps,
        "sys_ms_per_step": 1e3 * (after.ru_stime - before.ru_stime) / steps,
        "peak_rss_mb": after.ru_maxrss / 1024,
    }


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
        print(json.dumps(worker(args.worker, bool(args.keep), args.steps)))
        return
    print("\n| network | malloc | images/s | page faults / step | system ms / step | peak RSS MB |")
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
