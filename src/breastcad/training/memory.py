"""Will a run fit in memory? Lower bounds, worked out before anything is allocated.

The network is built on PyTorch's `meta` device (shapes, no storage) and one image of the
run's size goes through it: float32 parameters that learn cost 16 bytes each (the weight, its
gradient and Adam's two moments), frozen ones 4, and every layer that learns keeps its output
for the backward pass (4 bytes a value, per image in the batch). Everything else (buffers,
the frozen layers' transient outputs, the allocator's slack) is left out, so the true peak is
higher: a run whose bound already exceeds the memory available is refused with the numbers,
instead of being killed by the operating system part way through (the published mammogram CNN
at its 2250 x 1500 input needs at least 76 GB at its batch of 32). For prediction, where
nothing is kept for a backward pass, `inference_need` bounds one image and `batch_that_fits`
lowers a batch that would not fit (the answers do not depend on the batch beyond
rounding).

Example:
    >>> import torch
    >>> need = training_need(lambda: torch.nn.Linear(1000, 10), (1, 1000), batch=4)
    >>> need.parameter_bytes, need.activation_bytes
    (160160, 160)
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

GB = 1e9


@dataclasses.dataclass(frozen=True)
class MemoryNeed:
    parameter_bytes: int
    activation_bytes: int  # for the whole batch

    @property
    def total(self) -> int:
        return self.parameter_bytes + self.activation_bytes


def training_need(
    build: Callable[[], nn.Module],
    input_shape: tuple[int, ...],
    batch: int,
    dtype=torch.float32,
    unfrozen: bool = False,
) -> MemoryNeed:
    """The lower bound for training the network `build()` makes on batches of `batch` inputs of
    `input_shape` (one input, batch dimension first, as the network takes it); `unfrozen`: a
    later stage trains every parameter (the published fine-tuning recipe), so count them all
    as learning."""
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # weights copied into meta: no-ops
        net = build()
        if unfrozen:
            for p in net.parameters():
                p.requires_grad_(True)
        params = sum(p.numel() * (16 if p.requires_grad else 4) for p in net.parameters())
        kept = 0

        def hook(module: nn.Module, inputs: tuple, output: object) -> None:
            nonlocal kept
            if isinstance(output, torch.Tensor):
                kept += output.numel() * 4

        learning = [
            m
            for m in net.modules()
            if not list(m.children()) and any(p.requires_grad for p in m.parameters(False))
        ]
        _forward_watched(net, learning, hook, torch.empty(input_shape, dtype=dtype))
    return MemoryNeed(int(params), int(kept) * batch)


def inference_need(
    build: Callable[[], nn.Module],
    input_shape: tuple[int, ...],
    dtype=torch.uint8,
    on_meta: bool = True,
) -> int:
    """Bytes one input of `input_shape` (batch dimension 1) needs at least to go through the
    network `build()` makes, without gradients: the largest layer's input and output, which
    are both alive while it runs (the rest of the peak, and the weights, come on top).
    `on_meta=False` runs what `build()` returns as it is, on one input of zeros: for a network
    already loaded and a small input that takes milliseconds, where the meta device's first
    use in a process takes about 2 s here."""
    place = torch.device("meta") if on_meta else contextlib.nullcontext()
    with place, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        net = build()
        largest = 0

        def hook(module: nn.Module, inputs: tuple, output: object) -> None:
            nonlocal largest
            tensors = [t for t in (*inputs, output) if isinstance(t, torch.Tensor)]
            largest = max(largest, sum(t.numel() * t.element_size() for t in tensors))

        leaves = [m for m in net.modules() if not list(m.children())]
        _forward_watched(net, leaves, hook, torch.zeros(input_shape, dtype=dtype))
    return int(largest)


def _forward_watched(net: nn.Module, watched: list[nn.Module], hook: Callable, x) -> None:
    """One forward pass of `net` in inference mode with `hook` on the `watched` modules (`x`
    moved to the network's device)."""
    from breastcad.devices import device_of

    handles = [m.register_forward_hook(hook) for m in watched]
    try:
        with torch.no_grad():
            net.eval()(x.to(device_of(net)))
    finally:
        for h in handles:
            h.remove()


def batch_that_fits(requested: int, per_input: int, free: int | None) -> int:
    """The largest batch up to `requested` whose inputs' bound (`inference_need`) takes at
    most half of `free` bytes (the other half for what the bound leaves out); at least 1."""
    if free is None or per_input <= 0:
        return requested
    return max(1, min(requested, free // 2 // per_input))


def available_bytes(device: torch.device) -> int | None:
    """Free memory on `device` (the GPU's, or the system's MemAvailable); None where unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    meminfo = Path("/proc/meminfo")
    if device.type != "cpu" or not meminfo.is_file():
        return None
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None
