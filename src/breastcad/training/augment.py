"""Modality-appropriate augmentation, applied to a whole batch at once on the training device.

Input: the cached uint8 batch (N, H, W, C). Output: float (N, C, H, W) in [0, 1], which the
network's input layer normalises. Every sample draws its own transform from the module's
generator, so a seeded run augments identically. Lesion masks (N, H, W), where given, get the
same flips, rotations, zoom and shift as their images (nearest neighbour), not the intensities.

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

    def __call__(
        self, batch: torch.Tensor, masks: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The augmented float batch, or `(batch, masks)` when masks are given."""
        x = batch.permute(0, 3, 1, 2).float().div_(255.0)
        m = None if masks is None else masks[:, None].float()
        if self.kind != "none":
            x, m = self._geometry(x, m)
            if self.kind == "histo":
                x = self._jitter(x, 0.1, colour=True)
            else:
                x = self._jitter(x, 0.15 if self.kind == "ultrasound" else 0.1)
        return x if m is None else (x, m[:, 0].round().to(masks.dtype))

    def _geometry(
        self, x: torch.Tensor, m: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        n = x.shape[0]

        def where(take: torch.Tensor, fn) -> None:
            nonlocal x, m
            x = torch.where(take[:, None, None, None], fn(x), x)
            m = None if m is None else torch.where(take[:, None, None, None], fn(m), m)

        where(self._rand(n, x.device) < 0.5, lambda t: t.flip(-1))
        if self.kind == "histo":
            where(self._rand(n, x.device) < 0.5, lambda t: t.flip(-2))
            k = (self._rand(n, x.device) * 4).long().tolist()
            x = torch.stack([torch.rot90(img, r, (-2, -1)) for img, r in zip(x, k, strict=True)])
            if m is not None:
                m = torch.stack([torch.rot90(a, r, (-2, -1)) for a, r in zip(m, k, strict=True)])
        elif self.kind == "ultrasound":
            grid = self._zoom_shift_grid(x, max_zoom=0.1, max_shift=0.05)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            if m is not None:
                m = F.grid_sample(
                    m, grid, mode="nearest", padding_mode="zeros", align_corners=False
                )
        return x, m

    def _jitter(self, x: torch.Tensor, amount: float, colour: bool = False) -> torch.Tensor:
        n, c = x.shape[:2]
        shape = (n, c if colour else 1, 1, 1)
        brightness = (self._rand(n * shape[1], x.device).reshape(shape) - 0.5) * 2 * amount
        contrast = 1 + (self._rand(n, x.device).reshape(n, 1, 1, 1) - 0.5) * 2 * amount
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return ((x - mean) * contrast + mean + brightness).clamp_(0.0, 1.0)

    def _zoom_shift_grid(self, x: torch.Tensor, max_zoom: float, max_shift: float) -> torch.Tensor:
        n = x.shape[0]
        scale = 1 - self._rand(n, x.device) * max_zoom
        shift = (torch.stack([self._rand(n, x.device), self._rand(n, x.device)], 1) - 0.5) * 2
        theta = torch.zeros(n, 2, 3, device=x.device)
        theta[:, 0, 0] = theta[:, 1, 1] = scale
        theta[:, :, 2] = shift * max_shift
        return F.affine_grid(theta, list(x.shape), align_corners=False)
