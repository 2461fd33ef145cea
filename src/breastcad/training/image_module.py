"""A thin LightningModule around any `ImageNetwork`: cross-entropy (class-weighted if asked) plus
the network's own regularisation, augmentation on the batch, and per-epoch train and validation
loss, accuracy, precision, recall and ROC AUC (the learning curves the published work plots).

Precision and recall are those of the positive class for two classes and macro averages for
more; AUC is macro one-vs-rest.

A lesion-supervised network (`lesion_map`) gets training batches with lesion masks; its head
adds a cell-level loss (`supervised`), logged per epoch as `train_lesion_loss`.

The optimiser follows the network's recipe (`Optim`): Keras-style Adam at a constant rate for the
published recipes; AdamW with the body at a lower rate than the head, a linear warm-up and a
cosine decay (stepped every batch) for the full fine-tuning recipe.

Under `bf16-mixed` precision the network runs in bfloat16 autocast; augmentation runs outside it
(the same pixels in any precision) and logits are cast to float32 before loss and metrics.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as L
import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassPrecision,
    MulticlassRecall,
)

from breastcad.models.image import ImageNetwork


def _metrics(num_classes: int, positive: int) -> MetricCollection:
    average = None if num_classes == 2 else "macro"
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "precision": MulticlassPrecision(num_classes, average=average),
            "recall": MulticlassRecall(num_classes, average=average),
            "auc": MulticlassAUROC(num_classes, average="macro"),
        }
    )


@dataclass(frozen=True)
class Optim:
    """How the weights are updated (the fields of `Recipe` of the same names)."""

    lr: float
    optimizer: str = "adam"  # adam | adamw
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant | cosine
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    body_lr_factor: float = 1.0

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "adamw"):
            raise ValueError(f"unknown optimizer '{self.optimizer}' (adam, adamw)")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"unknown schedule '{self.schedule}' (constant, cosine)")


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """Learning-rate factor: linear from 1/warmup to 1 over `warmup` steps, then cosine to 0."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class ImageClassifier(L.LightningModule):
    """Trains `net`; `augment` maps a uint8 (N, H, W, C) batch to float (N, C, H, W) in [0, 1]."""

    def __init__(
        self,
        net: ImageNetwork,
        optim: Optim,
        positive: int = 1,
        class_weights: torch.Tensor | None = None,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.net, self.optim = net, optim
        self.positive, self.augment = positive, augment
        self.register_buffer("class_weights", class_weights)
        self.train_metrics = _metrics(net.num_classes, positive).clone(prefix="train_")
        self.val_metrics = _metrics(net.num_classes, positive).clone(prefix="val_")
        self.history: list[dict[str, float]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            logits, y, weight=self.class_weights, label_smoothing=self.optim.label_smoothing
        )

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int):
        """A batch is (pixels, targets) or, for a lesion-supervised network, (pixels,
        targets, lesion masks): its head then adds the cell loss (`supervised`)."""
        x, y = batch[:2]
        masks = batch[2] if len(batch) > 2 else None
        with torch.autocast(x.device.type, enabled=False):  # the same pixels in any precision
            if self.augment is not None and masks is not None:
                x, masks = self.augment(x, masks)
            elif self.augment is not None:
                x = self.augment(x)
        if masks is None:
            logits, extra = self(x).float(), 0.0
        else:
            logits, extra = self.net.head.supervised(self.net.forward_features(x), masks, y)
            logits, extra = logits.float(), extra.float()
            self.log("train_lesion_loss", extra, on_step=False, on_epoch=True, batch_size=len(y))
        loss = self._loss(logits, y)
        self.train_metrics.update(logits.detach().softmax(-1), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
        return loss + extra + self.net.regularization()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x).float()  # loss and metrics in float32 whatever the precision
        self.val_metrics.update(logits.softmax(-1), y)
        self.log("val_loss", self._loss(logits, y), on_epoch=True, batch_size=len(y))

    def _log_metrics(self, metrics: MetricCollection) -> None:
        for name, value in metrics.compute().items():
            self.log(name, value[self.positive] if value.ndim else value)
        metrics.reset()

    def on_train_epoch_end(self) -> None:
        self._log_metrics(self.train_metrics)
        row = {"epoch": self.current_epoch + 1}
        row.update({k: float(v) for k, v in self.trainer.callback_metrics.items()})
        self.history.append(row)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics(self.val_metrics)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["history"] = self.history

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.history = checkpoint.get("history", [])

    def configure_optimizers(self) -> Any:
        o = self.optim
        trainable = [p for p in self.net.parameters() if p.requires_grad]
        in_body = {id(p) for p in self.net.body.parameters()}
        groups = []
        for name, lr, in_body_part in (
            ("head", o.lr, False),
            ("body", o.lr * o.body_lr_factor, True),
        ):
            params = [p for p in trainable if (id(p) in in_body) == in_body_part]
            # weight decay shrinks weight matrices and kernels; norm scales and shifts and
            # biases (1-D) are left alone, as usual (decaying a batch-norm scale only rescales)
            for decays in (True, False):
                chosen = [p for p in params if (p.ndim > 1) == decays]
                if chosen:
                    wd = o.weight_decay if decays else 0.0
                    groups.append({"params": chosen, "lr": lr, "weight_decay": wd, "name": name})
        if o.optimizer == "adamw":
            optimizer = torch.optim.AdamW(groups, lr=o.lr, weight_decay=o.weight_decay)
        else:  # Keras' Adam (epsilon 1e-7), weight decay as an L2 term
            optimizer = torch.optim.Adam(groups, lr=o.lr, eps=1e-7, weight_decay=o.weight_decay)
        if o.schedule == "constant":
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        warmup = o.warmup_epochs * total // max(1, self.trainer.max_epochs)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, warmup, total)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
