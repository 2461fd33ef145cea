"""Fit a network with the Lightning Trainer: in-memory batches, history, early stopping."""

from __future__ import annotations

import copy
import logging
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, TQDMProgressBar
from torch import nn

from breastcad.allocator import keep_freed_memory
from breastcad.training.module import BinaryClassifier

for _name in ("lightning.pytorch", "lightning.fabric", "lightning"):
    logging.getLogger(_name).setLevel(logging.WARNING)


# Known, harmless messages from this Lightning/torch pair and from training without validation.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
warnings.filterwarnings("ignore", message=r".*no `val_dataloader`. Skipping val loop.*")


def _skip_per_step_gpu_probe() -> None:
    """Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 on import; where NVML finds no GPU, torch's
    Adam then repeats the NVML lookup (a dlopen) at every step, ~0.3 ms each on a CPU machine.
    With no GPU there is no CUDA state for a fork to poison, so the cheap check is safe."""
    if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") == "1" and torch.cuda.device_count() == 0:
        del os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"]


_skip_per_step_gpu_probe()


@dataclass
class FitSettings:
    epochs: int
    batch_size: int
    lr: float
    seed: int = 0
    patience: int | None = None
    accelerator: str = "cpu"
    deterministic: bool = False
    progress: bool = True
    class_weight: str = "none"
    precision: str = "32"


class TensorBatches:
    """Mini-batches of in-memory tensors, reshuffled each epoch from a seeded generator.

    Slicing whole tensors avoids the per-sample indexing and collation of a DataLoader, which
    dominates the step time of small tabular networks.
    """

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool, seed: int = 0
    ) -> None:
        self.x, self.y, self.batch_size, self.shuffle = x, y, batch_size, shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.y) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = (
            torch.randperm(len(self.y), generator=self.generator)
            if self.shuffle
            else torch.arange(len(self.y))
        )
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            yield self.x[idx], self.y[idx]


class RestoreBestWeights(Callback):
    """Keep the weights of the epoch with the lowest validation loss and restore them at the end."""

    def __init__(self) -> None:
        self.best = math.inf
        self.state: dict[str, torch.Tensor] | None = None
        self.best_epoch = 0

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loss = float(trainer.callback_metrics["val_loss"])
        if loss < self.best:
            self.best, self.best_epoch = loss, trainer.current_epoch + 1
            self.state = copy.deepcopy(pl_module.state_dict())

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.state is not None:
            pl_module.load_state_dict(self.state)


def make_trainer(
    epochs: int, settings: Any, callbacks: list[Callback], checkpointing: bool
) -> L.Trainer:
    """The one Trainer configuration: no logger or model summary, no sanity validation, one
    device; `settings` gives accelerator, precision, deterministic and progress. The process
    keeps freed tensor memory from here on (`allocator.keep_freed_memory`)."""
    keep_freed_memory()
    return L.Trainer(
        max_epochs=epochs,
        accelerator=settings.accelerator,
        precision=settings.precision,
        devices=1,
        logger=False,
        enable_checkpointing=checkpointing,
        enable_model_summary=False,
        enable_progress_bar=settings.progress,
        num_sanity_val_steps=0,
        deterministic=settings.deterministic,
        callbacks=callbacks,
    )


def fit_binary(
    net: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor] | None,
    settings: FitSettings,
) -> list[dict[str, float]]:
    """Train `net` in place; return the per-epoch history."""
    L.seed_everything(settings.seed, verbose=False)
    pos_weight = None
    if settings.class_weight == "balanced":
        n_pos = float(train[1].sum())
        pos_weight = (len(train[1]) - n_pos) / max(n_pos, 1.0)
    module = BinaryClassifier(net, lr=settings.lr, pos_weight=pos_weight)
    callbacks: list[Callback] = []
    if settings.progress:
        callbacks.append(TQDMProgressBar(leave=True))
    if val is not None and settings.patience:
        callbacks += [
            EarlyStopping("val_loss", patience=settings.patience, mode="min"),
            RestoreBestWeights(),
        ]
    trainer = make_trainer(settings.epochs, settings, callbacks, checkpointing=False)
    trainer.fit(
        module,
        train_dataloaders=TensorBatches(*train, settings.batch_size, True, settings.seed),
        val_dataloaders=TensorBatches(*val, 1024, False) if val is not None else None,
    )
    net.cpu().eval()
    return module.history
