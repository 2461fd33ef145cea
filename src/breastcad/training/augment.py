"""Modality-appropriate augmentation, applied to a whole batch at once on the training device.

Input: the cached uint8 batch (N, H, W, C). Output: float (N, C, H, W) in [0, 1], which the
network's input layer normalises. Every sample draws its own transform from the module's
generator, so a seeded run augments identically.

- histopathology: patches have no orientation: flips and 90-degree rotations, mild colour
  jitter (staining varies between labs).
- ultrasound: left-right flip, a small zoom and shift, brightness and contrast.
- mammography: left-right flip (left and right breasts are mirror images), brightness and
  contrast. No rotation: the chest wall and nipple orientation carries meaning.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MODALITY_AUGMENT = {
    "histopathology": "histo",
    "ultrasound": "ultrasound",
    "mammography": "mammo",
}


class BatchAugment:
    """`kind` in {'none', 'histo', 'ultrasound', 'mammo'}; callable on a uint8 NHWC batch."""

    def __init__(self, kind: str = "none", seed: int = 0) -> None:
        if kind not in ("none", "histo", "ultrasound", "mammo"):
            raise ValueError(f"unknown augmentation '{kind}'")
        self.kind = kind
        self.generator = torch.Generator().manual_seed(seed)

    def _rand(self, n: int, device: torch.device) -> torch.Tensor:
        return torch.rand(n, generator=self.generator).to(device)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.permute(0, 3, 1, 2).float().div_(255.0)
        if self.kind == "none":
            return x
        n = x.shape[0]
        flip = self._rand(n, x.device) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if self.kind == "histo":
            x = torch.where((self._rand(n, x.device) < 0.5)[:, None, None, None], x.flip(-2), x)
            k = (self._rand(n, x.device) * 4).long()
            x = torch.stack(
                [torch.rot90(img, int(r), (-2, -1)) for img, r in zip(x, k, strict=True)]
            )
            return self._jitter(x, 0.1, colour=True)
        if self.kind == "ultrasound":
            x = self._zoom_shift(x, max_zoom=0.1, max_shift=0.05)
            return self._jitter(x, 0.15)
        return self._jitter(x, 0.1)

    def _jitter(self, x: torch.Tensor, amount: float, colour: bool = False) -> torch.Tensor:
        n, c = x.shape[:2]
        shape = (n, c if colour else 1, 1, 1)
        brightness = (self._rand(n * shape[1], x.device).reshape(shape) - 0.5) * 2 * amount
        contrast = 1 + (self._rand(n, x.device).reshape(n, 1, 1, 1) - 0.5) * 2 * amount
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return ((x - mean) * contrast + mean + brightness).clamp_(0.0, 1.0)

    def _zoom_shift(self, x: torch.Tensor, max_zoom: float, max_shift: float) -> torch.Tensor:
        n = x.shape[0]
        scale = 1 - self._rand(n, x.device) * max_zoom
        shift = (torch.stack([self._rand(n, x.device), self._rand(n, x.device)], 1) - 0.5) * 2
        theta = torch.zeros(n, 2, 3, device=x.device)
        theta[:, 0, 0] = theta[:, 1, 1] = scale
        theta[:, :, 2] = shift * max_shift
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
