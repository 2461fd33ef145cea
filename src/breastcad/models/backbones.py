"""Pretrained backbones (timm) and the two published recipes built on them.

Input size defaults to 160 (ImageNet's 224 works, `size=224`): on a 2-core CPU the fine-tuning
recipe then trains BUSI in about 10 minutes instead of about 30.

Backbones and their weights (ImageNet offline, timm's download, a user file or random) come
from `breastcad.models.pretrained`; each network's `init` records which was used.
Normalisation comes from timm's pretrained config.

- `transfer`: frozen backbone (batch norm in inference mode), global average pooling, dropout
  0.2, linear head (the published ResNet50V2 transfer-learning recipe).
- `finetune`: backbone, Flatten, BatchNorm, Dense 256, Dropout 0.5, Dense 128, Dropout 0.3, output;
  stage 1 trains the head (early stopping patience 10, up to 30 epochs), stage 2 unfreezes the
  backbone at a tenth of the rate for up to 10 epochs (`training.image_fit.StagedFinetuning`).
- `full_finetune`: not a published recipe but the current practice for small medical sets: the
  whole network (batch norm included) trains from the first epoch; global average pooling,
  dropout 0.2, linear head; AdamW (weight decay 0.01), the body at a tenth of the head's rate,
  one warm-up epoch then a cosine decay, label smoothing 0.1, early stopping patience 8.
- `probe`: not a published recipe: a linear probe. The frozen backbone's global average of its
  last feature map and of every stage's output (timm's `forward_intermediates`: edges and
  textures as well as ImageNet's object parts), standardised; a logistic regression on them,
  its regularisation chosen by grouped cross-validation within the training part, folded into
  one linear layer (`breastcad.training.probe_fit`). No epochs, no early stopping; on
  BreastMNIST ahead of the trained recipes, on BUSI level with them (README). `branches` adds
  more backbones, each at its own input size.
- `lesion_map` and `cell_probe` (lesion-supervised heads on these backbones):
  `breastcad.models.lesion_recipes`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from breastcad.data.imaging import as_hw
from breastcad.errors import ConfigError
from breastcad.models.image import ImageNetwork, Recipe
from breastcad.models.layers import Dropout
from breastcad.models.pretrained import create_backbone
from breastcad.models.registry import register_model


class _Features(nn.Module):
    """A timm model's `forward_features` as a module (the body Grad-CAM explains)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


class _Branches(nn.Module):
    """A timm model and `extra` ones, each extra model seeing the input resized to its entry
    of `sizes` (bilinear): the bodies of `probe` and `cell_probe` with branches."""

    def __init__(
        self,
        model: nn.Module,
        extra: Sequence[nn.Module] = (),
        sizes: Sequence[tuple[int, int]] = (),
    ) -> None:
        super().__init__()
        self.model = model
        self.extra = nn.ModuleList(extra)
        self.sizes = [tuple(s) for s in sizes]

    def seen(self, x: torch.Tensor) -> Iterator[tuple[nn.Module, torch.Tensor]]:
        """(model, its input): the first model on `x`, each extra one on `x` at its size."""
        yield self.model, x
        for model, size in zip(self.extra, self.sizes, strict=True):
            if tuple(x.shape[-2:]) != size:
                yield model, F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            else:
                yield model, x


class _PooledStages(_Branches):
    """A timm model's global average of its last feature map and of each stage's output
    (`forward_intermediates`, the stages of `feature_info`), concatenated: N x
    `num_features`; with `extra` models, theirs too, each on the input resized to its entry
    of `sizes` (bilinear). `cam_layer` names the module whose map Grad-CAM explains (the last
    one the first model's `forward_features` passes through)."""

    NOT_FEATURES = ("global_pool", "fc", "classifier", "head", "head_drop")

    @property
    def num_features(self) -> int:
        return sum(
            m.num_features + sum(f["num_chs"] for f in m.feature_info)
            for m in [self.model, *self.extra]
        )

    @property
    def cam_layer(self) -> str:
        last = [n for n, _ in self.model.named_children() if n not in self.NOT_FEATURES][-1]
        return f"body.model.{last}"

    @staticmethod
    def _pool(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        final, stages = model.forward_intermediates(x)
        return torch.cat([final.mean((2, 3)), *(s.mean((2, 3)) for s in stages)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self._pool(model, seen) for model, seen in self.seen(x)], dim=1)


class _StackedMaps(_Branches):
    """A timm model's last feature map with the last feature maps of `extra` models stacked
    on its channels, each extra model seeing the input resized to its entry of `sizes`
    (bilinear) and its map resized to the first model's grid where that differs (bilinear):
    each cell holds every model's features of that place (`cell_probe`'s branches)."""

    @property
    def num_features(self) -> int:
        return self.model.num_features + sum(m.num_features for m in self.extra)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = [model.forward_features(seen) for model, seen in self.seen(x)]
        grid = maps[0].shape[-2:]
        return torch.cat(
            [
                F.interpolate(m, size=grid, mode="bilinear", align_corners=False)
                if m.shape[-2:] != grid
                else m
                for m in maps
            ],
            dim=1,
        )


def branch_models(
    who: str, backbone: str, weights: str, size: int | Sequence[int], branches
) -> tuple[list[tuple[nn.Module, tuple[int, int], str]], list[str] | None]:
    """`branches` (a list, or one comma-separated string of 'name@size' or 'name': the
    network's size) as built models, (model, size, init) each, and as the list the bundle
    records. They must normalise their input as `backbone` does."""
    import timm.models

    if isinstance(branches, str):
        branches = [b.strip() for b in branches.split(",") if b.strip()]
    if not branches:
        return [], None
    main_cfg = timm.models.get_pretrained_cfg(backbone)
    built = []
    for spec in branches:
        name, _, at = spec.partition("@")
        try:
            branch_size = as_hw(int(at)) if at else as_hw(size)
        except ValueError:
            raise ConfigError(
                f"{who} branch '{spec}': give 'backbone@size', e.g. '{name}@224'"
            ) from None
        model, init = create_backbone(name, weights)
        cfg = model.pretrained_cfg
        if (tuple(cfg["mean"]), tuple(cfg["std"])) != (main_cfg.mean, main_cfg.std):
            raise ConfigError(
                f"{who} branch '{spec}' normalises its input differently from {backbone}; "
                "branches must share the main backbone's mean and std"
            )
        built.append((model.eval(), branch_size, f"branch {name} at {branch_size}: {init}"))
    return built, list(branches)


def pretrained_network(
    name: str,
    make_head: Callable[[int, int], nn.Module],
    recipe: Recipe,
    num_classes: int,
    backbone: str,
    weights: str,
    size: int | Sequence[int],
    frozen: bool = True,
    pooled_stages: bool = False,
    extra_models: Sequence[tuple[nn.Module, tuple[int, int], str]] = (),
    **arch: Any,
) -> ImageNetwork:
    """A recipe's network: the backbone, `make_head(num_features, num_classes)`, the body
    frozen unless `frozen=False`; with `pooled_stages` the body gives the pooled stages
    (`_PooledStages`, of `extra_models` too: (model, size, init) each) instead of the last
    feature map; without it, `extra_models`' last feature maps are stacked on the backbone's
    (`_StackedMaps`). `arch` (num_classes, backbone, weights, size and the recipe's own
    parameters) is what a bundle stores to rebuild it. Input is 3-channel: gray arrives as a
    broadcast."""
    model, init = create_backbone(backbone, weights)
    cfg = model.pretrained_cfg
    extra, sizes = [m[0] for m in extra_models], [m[1] for m in extra_models]
    if pooled_stages:
        body = _PooledStages(model, extra, sizes)
    elif extra_models:
        body = _StackedMaps(model, extra, sizes)
    else:
        body = _Features(model)
    init = "; ".join([init, *(m[2] for m in extra_models)])
    net = ImageNetwork(
        body,
        make_head(getattr(body, "num_features", model.num_features), num_classes),
        num_classes=num_classes,
        in_chans=3,
        arch={
            "name": name,
            "num_classes": num_classes,
            "backbone": backbone,
            "weights": weights,
            "size": size,
            **arch,
        },
        recipe=recipe,
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        init=init,
        cam_layer=getattr(body, "cam_layer", "body"),
    )
    if frozen:
        net.freeze_body()
    return net


def _pooled_head(num_features: int, num_classes: int) -> nn.Module:
    return nn.Sequential(
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        Dropout(0.2),
        nn.Linear(num_features, num_classes),
    )


@register_model(
    "transfer",
    family="pretrained",
    modality="image",
    description="Frozen pretrained backbone (inference-mode BN), global average pooling, "
    "dropout 0.2, linear head (published transfer learning; default EfficientNet-Lite0)",
)
def transfer(
    num_classes: int = 2,
    backbone: str = "tf_efficientnet_lite0",
    weights: str = "imagenet",
    size: int | Sequence[int] = 160,
) -> ImageNetwork:
    recipe = Recipe(epochs=30, batch_size=32, lr=1e-3, patience=5, size=size, resize="pad")
    return pretrained_network(
        "transfer", _pooled_head, recipe, num_classes, backbone, weights, size
    )


@register_model(
    "probe",
    family="pretrained",
    modality="image",
    description="Linear probe: frozen pretrained backbone, global average of the last feature "
    "map and of every stage's output, logistic regression with its regularisation chosen by "
    "grouped cross-validation (no epochs; not a published recipe)",
)
def probe(
    num_classes: int = 2,
    backbone: str = "tf_efficientnet_lite0",
    weights: str = "imagenet",
    size: int | Sequence[int] = 160,
    branches: Sequence[str] | str | None = None,
) -> ImageNetwork:
    """`branches`: more backbones whose pooled stages join the features, each 'name@size' (or
    'name': the network's size), seeing the network's input resized; a list or one
    comma-separated string. They must normalise their input as `backbone` does."""
    recipe = Recipe(epochs=0, batch_size=64, lr=0.0, size=size, resize="pad", closed_form=True)
    built, branches = branch_models("probe", backbone, weights, size, branches)

    def head(num_features: int, num_classes: int) -> nn.Module:
        return nn.Linear(num_features, num_classes)

    return pretrained_network(
        "probe",
        head,
        recipe,
        num_classes,
        backbone,
        weights,
        size,
        pooled_stages=True,
        extra_models=built,
        **({"branches": branches} if branches else {}),
    )


@register_model(
    "finetune",
    family="pretrained",
    modality="image",
    description="Pretrained backbone + Flatten, BN, Dense 256/128 with dropout; head first "
    "(patience 10, <= 30 epochs), then the whole network at lr/10 (<= 10 epochs)",
)
def finetune(
    num_classes: int = 3,
    backbone: str = "tf_efficientnet_lite0",
    weights: str = "imagenet",
    size: int | Sequence[int] = 160,
) -> ImageNetwork:
    height, width = as_hw(size)

    def head(num_features: int, num_classes: int) -> nn.Module:
        flat = num_features * -(-height // 32) * -(-width // 32)
        return nn.Sequential(
            nn.Flatten(),
            nn.BatchNorm1d(flat),
            nn.Linear(flat, 256),
            nn.ReLU(inplace=True),
            Dropout(0.5),
            nn.Linear(256, 128),
            nn.ReLU(inplace=True),
            Dropout(0.3),
            nn.Linear(128, num_classes),
        )

    stages = [{"after_epochs": 30, "head_patience": 10, "epochs": 10, "lr_factor": 0.1}]
    recipe = Recipe(
        epochs=40, batch_size=32, lr=1e-3, patience=10, size=size, resize="pad", stages=stages
    )
    return pretrained_network("finetune", head, recipe, num_classes, backbone, weights, size)


WHOLE_NETWORK = {
    "epochs": 20,
    "lr": 1e-3,
    "patience": 8,
    "resize": "pad",
    "weight_decay": 0.01,
    "optimizer": "adamw",
    "schedule": "cosine",
    "warmup_epochs": 1,
    "label_smoothing": 0.1,
    "body_lr_factor": 0.1,
}
"""How `full_finetune` and `lesion_map` train the whole network (besides batch and size)."""


@register_model(
    "full_finetune",
    family="pretrained",
    modality="image",
    description="Whole pretrained network trained from the start (BN included): average "
    "pooling, dropout 0.2, linear head; AdamW, body at lr/10, warm-up + cosine, label "
    "smoothing 0.1 (current practice, not a published recipe)",
)
def full_finetune(
    num_classes: int = 3,
    backbone: str = "tf_efficientnet_lite0",
    weights: str = "imagenet",
    size: int | Sequence[int] = 160,
) -> ImageNetwork:
    recipe = Recipe(**WHOLE_NETWORK, batch_size=32, size=size)
    return pretrained_network(
        "full_finetune", _pooled_head, recipe, num_classes, backbone, weights, size, frozen=False
    )
