"""A thin LightningModule around any `ImageNetwork`: cross-entropy (class-weighted if asked) plus
the network's own regularisation, augmentation on the batch, and per-epoch train and validation
loss, accuracy, precision, recall and ROC AUC (the learning curves the published work plots).

Precision and recall are those of the positive class for two classes and macro averages for
more; AUC is macro one-vs-rest.
"""

from __future__ import annotations

from collections.abc import Callable

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


class ImageClassifier(L.LightningModule):
    """Trains `net`; `augment` maps a uint8 (N, H, W, C) batch to float (N, C, H, W) in [0, 1]."""

    def __init__(
        self,
        net: ImageNetwork,
        lr: float,
        positive: int = 1,
        class_weights: torch.Tensor | None = None,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__()
        self.net, self.lr, self.weight_decay = net, lr, weight_decay
        self.positive, self.augment = positive, augment
        self.register_buffer("class_weights", class_weights)
        self.train_metrics = _metrics(net.num_classes, positive).clone(prefix="train_")
        self.val_metrics = _metrics(net.num_classes, positive).clone(prefix="val_")
        self.history: list[dict[str, float]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, weight=self.class_weights)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        x, y = batch
        if self.augment is not None:
            x = self.augment(x)
        logits = self(x)
        loss = self._loss(logits, y)
        self.train_metrics.update(logits.detach().softmax(-1), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
        return loss + self.net.regularization()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
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

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.net.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=self.lr, eps=1e-7, weight_decay=self.weight_decay)
