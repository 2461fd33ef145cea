"""Layers that compute what their Keras / torch.nn namesakes do, faster on small CPU batches.

Measured on the 2-core development machine for the published 1D-CNN at batch 32 (see
benchmarks/bench_tabular.py): nn.Dropout's Bernoulli sampling cost ~1 ms per call and nn.Conv1d's
small-kernel path several times a matmul's; these versions cut a training step by about 40%.
"""

from __future__ import annotations

import torch
from torch import nn


class Dropout(nn.Module):
    """Inverted dropout, like `nn.Dropout`, with the mask drawn by `torch.rand` (uniform < p)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        return x * ((torch.rand_like(x) >= self.p) * (1.0 / (1.0 - self.p)))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Conv1dChannelsLast(nn.Module):
    """A 'valid' 1-D convolution on (batch, steps, channels), as Keras' Conv1D lays it out.

    The k shifted windows are stacked along the channel axis and multiplied by one weight
    matrix: the same arithmetic as a convolution with stride 1, as a single matmul.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.linear = nn.Linear(in_channels * kernel_size, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = x.shape[1] - self.kernel_size + 1
        windows = torch.cat([x[:, i : i + steps] for i in range(self.kernel_size)], dim=-1)
        return self.linear(windows)


class BatchNormChannelsLast(nn.BatchNorm1d):
    """Batch norm over the last axis of (batch, steps, channels), statistics over both."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).reshape(x.shape)
