"""The network's first layer: cached uint8 pixels in, normalised float the backbone expects out.

Keeping this inside the network means the model bundle, the Predictor, ONNX export and the
service all apply the same normalisation, derived once from the backbone's pretrained config
(mean, std, channels), never written twice.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class ImageInput(nn.Module):
    """uint8 (N, H, W, C) or float (N, C, H, W) in [0, 1] -> normalised float (N, in_chans, H, W).

    Gray (C=1) reaches a 3-channel backbone as a broadcast (no copy until normalisation);
    colour reaching a 1-channel network is averaged.
    """

    def __init__(
        self, in_chans: int, mean: Sequence[float] = (0.0,), std: Sequence[float] = (1.0,)
    ) -> None:
        super().__init__()
        self.in_chans = in_chans
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
        self.register_buffer("mean", mean_t.expand(1, in_chans, 1, 1).clone(), persistent=False)
        self.register_buffer("scale", 1.0 / std_t.expand(1, in_chans, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.permute(0, 3, 1, 2).float().mul_(1.0 / 255.0)
        if x.shape[1] != self.in_chans:
            x = x.mean(dim=1, keepdim=True) if self.in_chans == 1 else x.expand(-1, 3, -1, -1)
        return ((x - self.mean) * self.scale).contiguous(memory_format=torch.channels_last)

    def extra_repr(self) -> str:
        return f"in_chans={self.in_chans}"
