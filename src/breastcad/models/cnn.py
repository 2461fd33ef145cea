"""The published CNNs, layer for layer, with Keras' initialisers and batch-norm settings.

`idc_cnn`: the histopathology CNN for 50x50 RGB patches. `mammo_cnn`: the mammogram CNN for
grayscale input. Both return `num_classes` logits (the published softmax/sigmoid is in the loss).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from breastcad.data.imaging import as_hw
from breastcad.errors import ConfigError
from breastcad.models.image import ImageNetwork, Recipe
from breastcad.models.layers import Dropout
from breastcad.models.registry import register_model


def keras_image_init(module: nn.Module, conv_init: str = "glorot_uniform") -> None:
    """Keras defaults: glorot-uniform dense (and conv unless `he_uniform`), zero biases,
    batch norm momentum 0.99 (PyTorch 0.01) and epsilon 1e-3."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d) and conv_init == "he_uniform":
            nn.init.kaiming_uniform_(m.weight, a=0.0, nonlinearity="relu")  # sqrt(6 / fan_in)
        elif isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.xavier_uniform_(m.weight)
        if isinstance(m, nn.Conv2d | nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            m.momentum, m.eps = 0.01, 1e-3


def conv_relu_bn(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True), nn.BatchNorm2d(c_out)]


def dense(n_in: int, n_out: int, *extra: nn.Module) -> list[nn.Module]:
    return [nn.Linear(n_in, n_out), nn.ReLU(inplace=True), *extra]


def _pooled_size(size: int | Sequence[int], pools: int, model: str) -> tuple[int, int]:
    """(height, width), checked to survive the network's 2 x 2 poolings before its dense head."""
    height, width = as_hw(size)
    if min(height, width) < 2**pools:
        raise ConfigError(
            f"`{model}` cannot take {height} x {width} px input: it halves the image {pools} "
            f"times before its dense layers, so it needs at least {2**pools} px a side; give a "
            "larger --size"
        )
    return height, width


@register_model(
    "idc_cnn",
    family="cnn",
    modality="histopathology",
    description="Published IDC patch CNN: Conv 32,32 / 64,64 / 128 with BN and dropout 0.3, "
    "Dense 128-64-64-24 (Adam 1e-4, batch 35, early stopping 5)",
)
def idc_cnn(
    num_classes: int = 2, in_chans: int = 3, size: int | Sequence[int] = 50
) -> ImageNetwork:
    body = nn.Sequential(
        *conv_relu_bn(in_chans, 32),
        *conv_relu_bn(32, 32),
        nn.MaxPool2d(2),
        nn.BatchNorm2d(32),
        Dropout(0.3),
        *conv_relu_bn(32, 64),
        *conv_relu_bn(64, 64),
        nn.MaxPool2d(2),
        Dropout(0.3),
        nn.Conv2d(64, 128, 3, padding=1),
        nn.ReLU(inplace=True),
    )
    height, width = _pooled_size(size, 2, "idc_cnn")
    head = nn.Sequential(
        nn.Flatten(),
        *dense(128 * (height // 4) * (width // 4), 128, nn.BatchNorm1d(128)),
        *dense(128, 64, nn.BatchNorm1d(64)),
        *dense(64, 64, Dropout(0.3)),
        *dense(64, 24),
        nn.Linear(24, num_classes),
    )
    net = ImageNetwork(
        body,
        head,
        num_classes=num_classes,
        in_chans=in_chans,
        arch={"name": "idc_cnn", "num_classes": num_classes, "in_chans": in_chans, "size": size},
        recipe=Recipe(epochs=40, batch_size=35, lr=1e-4, patience=5, size=size, resize="pad"),
        cam_layer="body",
    )
    keras_image_init(net, "he_uniform")
    return net


class MammoNetwork(ImageNetwork):
    """The mammogram CNN, whose first dense layer carries the published L2 penalty (0.1)."""

    l2 = 0.1

    def regularization(self) -> torch.Tensor:
        return self.l2 * self.head[1].weight.square().sum()


@register_model(
    "mammo_cnn",
    family="cnn",
    modality="mammography",
    description="Published mammogram CNN: grayscale, Conv 32/64/256/512 with BN and max-pool, "
    "Dense 128 (L2 0.1), dropout 0.3, Dense 64 (batch 32)",
)
def mammo_cnn(
    num_classes: int = 2, in_chans: int = 1, size: int | Sequence[int] = 256
) -> MammoNetwork:
    """`size` up to the published 2250 x 1500 (height, width); the default trains on a CPU."""
    layers: list[nn.Module] = []
    width = in_chans
    for c in (32, 64, 256, 512):
        layers += [*conv_relu_bn(width, c), nn.MaxPool2d(2)]
        width = c
    height, width = _pooled_size(size, 4, "mammo_cnn")
    head = nn.Sequential(
        nn.Flatten(),
        *dense(512 * (height // 16) * (width // 16), 128, Dropout(0.3)),
        *dense(128, 64),
        nn.Linear(64, num_classes),
    )
    net = MammoNetwork(
        nn.Sequential(*layers),
        head,
        num_classes=num_classes,
        in_chans=in_chans,
        arch={"name": "mammo_cnn", "num_classes": num_classes, "in_chans": in_chans, "size": size},
        recipe=Recipe(epochs=30, batch_size=32, lr=1e-3, patience=8, size=size, resize="pad"),
    )
    keras_image_init(net)
    return net
