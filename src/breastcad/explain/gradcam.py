"""Grad-CAM (Selvaraju et al. 2017) for every image network in the registry.

The class score's gradient with respect to the feature map of the network's `cam_layer` (the
last convolutional block), averaged over space, weights that feature map; the ReLU of the sum is
upsampled to the input size. A forward hook, attached by layer name and removed afterwards,
makes the layer's output a leaf that records its gradient, so frozen backbones work too; the
network's train/eval mode is restored afterwards. An ensemble's map is the mean of its
members' maps, each scaled to its own maximum; a bundle with test-time flips explains the
average of the image and its mirror image, and its map is the mean of both views' maps.

Example:
    >>> cam = grad_cam(net, pixels)  # pixels: uint8 (N, H, W, C)  # doctest: +SKIP
    >>> Image.fromarray(overlay(pixels[0], cam[0])).save("cam.png")  # doctest: +SKIP
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def grad_cam(
    net: nn.Module,
    pixels: np.ndarray | torch.Tensor,
    target: int | Sequence[int] | None = None,
    tta: str = "none",
) -> np.ndarray:
    """Grad-CAM maps (N, H, W) in [0, 1] at the input's size, for class `target` (one per
    image, or the predicted class when None). An image whose map is zero everywhere (no
    positive evidence) warns and gets NaN, as MONAI does, rather than a misleading picture.
    For an ensemble (a network with `members`), the mean of its members' maps, each scaled to
    its own maximum, for the class the ensemble predicts. With test-time views (`tta` flip or
    affine, `breastcad.models.tta`) the answer explained is the views' average, so the map is
    too: each view's map moved back onto the image (the mirror image's mirrored back, a
    rotated view's rotated back), averaged with the image's (each scaled)."""
    from breastcad.models.tta import check_mode, unview, views, with_views

    check_mode(tta)
    from breastcad.devices import device_of

    x = torch.as_tensor(np.ascontiguousarray(pixels) if isinstance(pixels, np.ndarray) else pixels)
    x = x.to(device_of(net))  # where the network is: the CPU or the GPU
    height, width = (x.shape[1], x.shape[2]) if x.dtype == torch.uint8 else x.shape[2:]
    size = (int(height), int(width))
    if target is None and (hasattr(net, "members") or tta != "none"):  # what is deployed
        was_training = net.training
        with torch.inference_mode():
            target = with_views(net.eval(), x.clone(), tta).argmax(dim=1).tolist()
        net.train(was_training)
    cam = _view_cam(net, x, target, size)
    if tta != "none":  # each view's map scaled on its view, then moved back
        maps = [cam] + [_view_cam(net, v, target, size) for v in views(x, tta)[1:]]
        scaled = [_scaled(m) for m in maps]
        back = unview([torch.from_numpy(np.nan_to_num(m, nan=0.0)) for m in scaled], tta)
        cam = _nan_mean(
            [np.where(np.isnan(m), np.nan, b.numpy()) for m, b in zip(scaled, back, strict=True)]
        )
    top = cam.reshape(len(cam), -1).max(axis=1)
    if np.any(top <= 0):
        warnings.warn(
            f"Grad-CAM is zero everywhere for {int(np.sum(top <= 0))} image(s): no positive "
            "evidence for the class at the explained layer; returning NaN for those",
            stacklevel=2,
        )
    return _scaled(cam)


def _view_cam(
    net: nn.Module, x: torch.Tensor, target: int | Sequence[int] | None, size: tuple[int, int]
) -> np.ndarray:
    """The unscaled map of one view: the network's, or the mean of an ensemble's members'
    maps, each scaled to its own maximum."""
    members = getattr(net, "members", None)
    if members is None:
        return _cam(net, x, target, size)
    return _mean_of_scaled([_cam(m, x, target, size) for m in members])


def _mean_of_scaled(maps: list[np.ndarray]) -> np.ndarray:
    """The mean of maps each scaled to its maximum; 0 where none has positive evidence."""
    return _nan_mean([_scaled(m) for m in maps])


def _nan_mean(maps: list[np.ndarray]) -> np.ndarray:
    """The mean of maps, NaN (no evidence) left out; 0 where every map is NaN."""
    stacked = np.stack(maps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # no map with evidence: NaN
        return np.nan_to_num(np.nanmean(stacked, axis=0), nan=0.0)


def _scaled(cam: np.ndarray) -> np.ndarray:
    """Each map divided by its maximum; NaN where the map has no positive value."""
    top = cam.reshape(len(cam), -1).max(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cam = np.where(top[:, None, None] > 0, cam / top[:, None, None], np.nan)
    return cam.astype(np.float32)


def _cam(
    net: nn.Module, x: torch.Tensor, target: int | Sequence[int] | None, size: tuple[int, int]
) -> np.ndarray:
    """One network's unscaled Grad-CAM (N, H, W) at `size`."""
    layer = net.get_submodule(getattr(net, "cam_layer", "body"))
    captured: list[torch.Tensor] = []

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        leaf = output.detach().requires_grad_(True)
        captured.append(leaf)
        return leaf

    was_training = net.training
    handle = layer.register_forward_hook(hook)
    try:
        net.eval()
        with torch.inference_mode(False), torch.enable_grad():
            logits = net(x.clone())
            if target is None:
                index = logits.argmax(dim=1)
            else:
                index = torch.as_tensor(target, dtype=torch.long, device=logits.device)
                index = index.reshape(-1).expand(len(x))
            features = captured[-1]
            score = logits.gather(1, index[:, None]).sum()
            # autograd.grad, not backward(): no .grad is left on the network's weights
            (grad,) = torch.autograd.grad(score, features)
            weights = grad.mean(dim=(2, 3), keepdim=True)
            cam = F.relu((weights * features).sum(dim=1, keepdim=True)).detach()
    finally:
        handle.remove()
        net.train(was_training)
    cam = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)
    return cam[:, 0].cpu().numpy().astype(np.float32)


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """An RGB uint8 picture: `image` (uint8, H x W [x C]) under the map in a heat colour map.
    A NaN map (see `grad_cam`) leaves the image as it is."""
    from matplotlib import colormaps

    base = image if image.ndim == 3 else image[..., None]
    base = np.repeat(base, 3, axis=2) if base.shape[2] == 1 else base[..., :3]
    base = base.astype(np.float32)
    if np.all(np.isnan(cam)):
        return base.astype(np.uint8)
    heat = colormaps["jet"](np.nan_to_num(cam, nan=0.0))[..., :3] * 255.0
    weight = alpha * np.clip(np.nan_to_num(cam, nan=0.0), 0.15, 1.0)[..., None]
    return np.clip(base * (1 - weight) + heat * weight, 0, 255).astype(np.uint8)


def overlay_on_image(
    image: np.ndarray, cam: np.ndarray, resize_mode: str, max_side: int = 1024
) -> np.ndarray:
    """The map over the image as it was read (not the model's input): its own aspect ratio,
    without padding, at its own size or, for large images (DICOM mammograms), scaled so that
    the longer side is `max_side`."""
    from breastcad.data.imaging import resize, to_uint8, unresize

    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    shown = to_uint8(resize(image, size, "stretch") if scale < 1 else image)
    if np.all(np.isnan(cam)):  # no positive evidence: the image as it is
        return overlay(shown, np.full(size, np.nan, dtype=np.float32))
    return overlay(shown, np.clip(unresize(np.nan_to_num(cam, nan=0.0), size, resize_mode), 0, 1))


def png_bytes(image: np.ndarray) -> bytes:
    """A uint8 image as PNG bytes (for the API and the page)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image if image.ndim == 3 and image.shape[2] == 3 else image.squeeze()).save(
        buffer, format="PNG"
    )
    return buffer.getvalue()
