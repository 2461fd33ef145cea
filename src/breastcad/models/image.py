"""What every image network in the registry is: an input layer, a body, a head, and a recipe.

`ImageNetwork.forward` takes the cached uint8 batch (N, H, W, C) or a float (N, C, H, W) batch in
[0, 1] and returns `num_classes` logits. `forward_features` (the last convolutional feature map,
where Grad-CAM hooks in) and `forward_head` follow timm's convention. `arch` is what a bundle
stores to rebuild the network (`create_model(**arch)`); `recipe` is the published training
recipe; `init` says where the weights came from (random, ImageNet file, user file).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from breastcad.models.inputs import ImageInput


@dataclass(frozen=True)
class Recipe:
    """Default training settings of a model, as published (overridable per run)."""

    epochs: int
    batch_size: int
    lr: float
    patience: int | None = None
    size: int | tuple[int, int] = 224
    resize: str = "pad"
    weight_decay: float = 0.0
    stages: list[dict[str, Any]] = field(default_factory=list)
    """Fine-tuning stages after the first (e.g. unfreeze the backbone at a lower rate)."""
    optimizer: str = "adam"
    """adam (Keras' Adam, L2 weight decay) or adamw (decoupled weight decay)."""
    schedule: str = "constant"
    """constant, or cosine: linear warm-up for `warmup_epochs`, then cosine decay to 0."""
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    body_lr_factor: float = 1.0
    """The body's learning rate as a fraction of the head's, where the body trains."""
    lesion_masks: bool = False
    """Trains on lesion masks besides labels (the head has `supervised(features, masks)`)."""
    closed_form: bool = False
    """Fitted without epochs: the frozen body's features once, then a logistic regression
    (`breastcad.training.probe_fit`); epochs, learning rate and patience do not apply."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def optim_settings(self) -> dict[str, Any]:
        """How the weights are updated, as keyword arguments of `ImageFitSettings`."""
        keys = ("optimizer", "weight_decay", "schedule", "warmup_epochs", "label_smoothing")
        return {k: getattr(self, k) for k in (*keys, "body_lr_factor")}


class ImageNetwork(nn.Module):
    """input -> body (feature maps) -> head (logits)."""

    def __init__(
        self,
        body: nn.Module,
        head: nn.Module,
        *,
        num_classes: int,
        in_chans: int,
        arch: dict[str, Any],
        recipe: Recipe,
        mean: tuple[float, ...] = (0.0,),
        std: tuple[float, ...] = (1.0,),
        init: str = "random",
        cam_layer: str = "body",
    ) -> None:
        super().__init__()
        self.input = ImageInput(in_chans, mean, std)
        self.body, self.head = body, head
        self.num_classes, self.in_chans = num_classes, in_chans
        self.arch, self.recipe, self.init = arch, recipe, init
        self.cam_layer = cam_layer
        """Name of the module whose output Grad-CAM explains (the last convolutional block)."""
        self.body_frozen = self.body_trainable = False
        # NHWC: oneDNN's depthwise and small convolutions run 1.2-2.6x faster on the CPU in
        # channels-last layout (EfficientNet-Lite0 transfer step at 160 px: 728 -> 284 ms)
        self.to(memory_format=torch.channels_last)

    def freeze_body(self) -> None:
        """Freeze the body: no gradients, and batch norm in inference mode even while training
        (Keras' `trainable=False` + `training=False`, the published transfer recipe)."""
        self.body_frozen, self.body_trainable = True, False
        self.body.requires_grad_(False)
        self.body.eval()

    def unfreeze_body(self) -> None:
        """Train the body's weights; its batch norm stays in inference mode (as published)."""
        self.body_trainable = True
        self.body.requires_grad_(True)
        for m in self.body.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.requires_grad_(False)

    def train(self, mode: bool = True) -> ImageNetwork:
        super().train(mode)
        if self.body_frozen and not self.body_trainable:
            self.body.eval()
        elif self.body_frozen:
            for m in self.body.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    @property
    def preprocessing(self) -> dict[str, Any]:
        """Input settings derived from the model: size, resize, normalisation, channels."""
        return {
            "size": self.recipe.size,
            "resize": self.recipe.resize,
            "in_chans": self.in_chans,
            "mean": self.input.mean.flatten().tolist(),
            "std": (1.0 / self.input.scale.flatten()).tolist(),
        }

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.input(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def regularization(self) -> torch.Tensor | float:
        """Extra loss terms (e.g. a published L2 kernel penalty); 0 by default."""
        return 0.0
