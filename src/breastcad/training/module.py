"""A thin LightningModule around any binary classifier network that returns one logit per sample."""

from __future__ import annotations

import lightning.pytorch as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC


class BinaryClassifier(L.LightningModule):
    """Binary cross-entropy on logits; logs loss, accuracy and (validation) ROC AUC per epoch."""

    def __init__(
        self, net: nn.Module, lr: float, pos_weight: float | None = None, adam_eps: float = 1e-7
    ) -> None:
        super().__init__()
        self.net = net
        self.lr = lr
        self.adam_eps = adam_eps  # Keras' Adam epsilon, for faithful reproductions
        self.register_buffer(
            "pos_weight", torch.tensor([pos_weight]) if pos_weight is not None else None
        )
        self.train_acc = BinaryAccuracy()
        self.val_acc = BinaryAccuracy()
        self.val_auc = BinaryAUROC()
        self.history: list[dict[str, float]] = []
        """Per-epoch train and validation metrics, for learning curves."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        x, y = batch
        logits = self(x)
        loss = F.binary_cross_entropy_with_logits(logits, y, pos_weight=self.pos_weight)
        return loss, torch.sigmoid(logits.detach()), y.long()

    # Metrics are updated per step and logged once per epoch: per-step `self.log` and a metric's
    # `forward` cost more than the step itself for small tabular networks.
    def on_train_epoch_start(self) -> None:
        self._loss_sum = torch.zeros((), device=self.device)
        self._n_seen = 0

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        loss, prob, y = self._step(batch)
        self.train_acc.update(prob, y)
        self._loss_sum += loss.detach() * len(y)
        self._n_seen += len(y)
        return loss

    def on_train_epoch_end(self) -> None:
        self.log("train_loss", self._loss_sum / max(self._n_seen, 1))
        self.log("train_acc", self.train_acc.compute())
        self.train_acc.reset()
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items()}
        self.history.append({"epoch": self.current_epoch + 1, **metrics})

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        loss, prob, y = self._step(batch)
        self.val_acc.update(prob, y)
        self.val_auc.update(prob, y)
        self.log("val_loss", loss, on_step=False, on_epoch=True, batch_size=len(y))

    def on_validation_epoch_end(self) -> None:
        self.log("val_acc", self.val_acc.compute())
        self.log("val_auc", self.val_auc.compute())
        self.val_acc.reset()
        self.val_auc.reset()

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        """Move (x, y) without Lightning's generic collection walk, a no-op on the CPU."""
        if all(t.device == device for t in batch):
            return batch
        return tuple(t.to(device, non_blocking=True) for t in batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr, eps=self.adam_eps, fused=True)
