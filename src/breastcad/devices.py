"""Where a network runs: training (`--accelerator`) and inference (`--device`) name devices the
same way, `auto` (the GPU when there is one), `cpu` or `gpu` (`cuda` is accepted too).
Training defaults to `auto`; prediction and evaluation to `cpu`, so that a bundle gives the
same answers on every machine unless a GPU is asked for (PyTorch computes its float32
convolutions in TF32 by default: a 10-bit mantissa, about three significant digits).

Example:
    >>> inference_device("cpu")
    device(type='cpu')
    >>> inference_device("tpu")
    Traceback (most recent call last):
    ...
    breastcad.errors.ConfigError: unknown device 'tpu'; choose from auto, cpu, gpu
"""

from __future__ import annotations

import torch

from breastcad.errors import ConfigError

CHOICES = ("auto", "cpu", "gpu")


def chosen_device(accelerator: str) -> torch.device:
    """Where a run's work goes: the GPU for 'auto', 'gpu' or 'cuda' when there is one."""
    wanted = accelerator in ("auto", "gpu", "cuda")
    return torch.device("cuda" if wanted and torch.cuda.is_available() else "cpu")


def inference_device(name: str) -> torch.device:
    """The device a Predictor runs its network on: `auto` the GPU when there is one, else the
    CPU; `gpu` (or `cuda`) the GPU, and a `ConfigError` where there is none, rather than
    quietly running on the CPU."""
    if name not in (*CHOICES, "cuda"):
        raise ConfigError(f"unknown device '{name}'; choose from {', '.join(CHOICES)}")
    if name in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"--device {name}: PyTorch sees no CUDA GPU here (torch {torch.__version__}, "
            f"CUDA build {torch.version.cuda or 'none'}); use --device cpu or auto"
        )
    return chosen_device(name)


def device_name(device: torch.device) -> str:
    """What ran the network, for the record: `cpu`, or `cuda:0 (NVIDIA H100 80GB HBM3)`."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)


def device_of(net: torch.nn.Module) -> torch.device:
    """The device of a network's first parameter or buffer (the CPU for one with neither)."""
    for tensor in (*net.parameters(), *net.buffers()):
        return tensor.device
    return torch.device("cpu")
