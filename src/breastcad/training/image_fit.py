"""Train an image network with the Lightning Trainer: CPU by default, GPU when asked, same code.

Checkpoints `best.ckpt` (lowest validation loss) and `last.ckpt` go to `<run>/checkpoints/`;
`resume=True` continues an interrupted run from `last.ckpt` (epoch, optimiser, early-stopping
and fine-tuning state included). At the end the best weights are loaded into the network.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
from lightning.pytorch.callbacks import (
    BaseFinetuning,
    Callback,
    EarlyStopping,
    ModelCheckpoint,
    TQDMProgressBar,
)

from breastcad.data.datamodule import ImageDataModule
from breastcad.devices import chosen_device, device_name
from breastcad.errors import ConfigError, Interrupted
from breastcad.models.image import ImageNetwork
from breastcad.training.augment import BatchAugment
from breastcad.training.fit import make_trainer  # also quiets Lightning, skips the NVML probe
from breastcad.training.image_module import ImageClassifier, Optim


@dataclass
class ImageFitSettings:
    epochs: int
    lr: float
    patience: int | None = None
    seed: int = 0
    class_weight: str = "none"  # none | balanced
    augment: str = "none"  # none | histo | ultrasound | mammo
    accelerator: str = "cpu"
    deterministic: bool = False
    progress: bool = True
    resume: bool = False
    precision: str = "32"
    """Lightning's precision of the training steps: 32 or bf16-mixed (`precision_text`)."""
    stages: list[dict[str, Any]] | None = None
    tta: str = "none"
    """How the run's answers are scored (`breastcad.models.tta`); a linear probe's
    cross-validation scores its held-out images the same way."""
    optim: dict[str, Any] = field(default_factory=dict)
    """`Optim`'s fields other than `lr` (from `Recipe.optim_settings`); empty: Keras' Adam."""


class StagedFinetuning(BaseFinetuning):
    """Stage 1 trains the head (the body is frozen by the model) until validation loss has not
    improved for `head_patience` epochs or `after_epochs` have run; then the best head weights
    are restored, the body is unfrozen at `lr * lr_factor` (batch norm kept in inference mode)
    and trained for at most `epochs` more."""

    def __init__(
        self, after_epochs: int, head_patience: int, epochs: int, lr_factor: float
    ) -> None:
        super().__init__()
        self.after_epochs, self.head_patience = after_epochs, head_patience
        self.stage2_epochs, self.lr_factor = epochs, lr_factor
        self.best, self.wait, self.switch_at = float("inf"), 0, -1
        self.best_state: dict[str, torch.Tensor] | None = None

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(best=self.best, wait=self.wait, switch_at=self.switch_at)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.best, self.wait = state_dict["best"], state_dict["wait"]
        self.switch_at = state_dict["switch_at"]

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        pl_module.net.freeze_body()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.switch_at >= 0 or trainer.sanity_checking:
            return
        loss = float(trainer.callback_metrics["val_loss"])
        if loss < self.best:
            self.best, self.wait = loss, 0
            self.best_state = {k: v.clone() for k, v in pl_module.net.head.state_dict().items()}
        else:
            self.wait += 1

    def finetune_function(self, pl_module: L.LightningModule, epoch: int, optimizer) -> None:
        if self.switch_at >= 0:
            if pl_module.net.body_trainable is False:  # resumed in stage 2
                pl_module.net.unfreeze_body()
            return
        if epoch > 0 and (self.wait >= self.head_patience or epoch >= self.after_epochs):
            if self.best_state is not None:
                pl_module.net.head.load_state_dict(self.best_state)
            pl_module.net.unfreeze_body()
            lr = pl_module.optim.lr * self.lr_factor
            self.unfreeze_and_add_param_group(pl_module.net.body, optimizer, lr=lr, train_bn=False)
            pl_module.net.unfreeze_body()  # keep batch norm frozen after Lightning's helper
            self.switch_at = epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.switch_at >= 0 and trainer.current_epoch + 1 >= self.switch_at + self.stage2_epochs:
            trainer.should_stop = True


class LastCheckpoint(ModelCheckpoint):
    """`last.ckpt` at the end of every training epoch, for `--resume`.

    Lightning >= 2.6 writes `save_last` only in epochs that also write a top-k checkpoint, which
    made last.ckpt the best epoch rather than the last one; hence a checkpoint of its own (a
    `ModelCheckpoint`, so that it runs after the module's epoch-end hook writes the history)."""

    def __init__(self, dirpath: Path) -> None:
        super().__init__(
            dirpath,
            filename="last",
            monitor=None,
            save_top_k=1,
            save_on_train_epoch_end=True,
            enable_version_counter=False,
        )

    @property
    def state_key(self) -> str:
        return self._generate_state_key(role="last")


def class_weights(targets: np.ndarray, num_classes: int) -> torch.Tensor:
    """'balanced' weights: n / (k * count per class)."""
    counts = np.bincount(targets, minlength=num_classes).astype(np.float64)
    return torch.as_tensor(
        len(targets) / (num_classes * np.maximum(counts, 1)), dtype=torch.float32
    )


def positive_index(classes: list[str]) -> int:
    """The class whose sensitivity matters: malignant, IDC or abnormal; else the last class."""
    for name in ("malignant", "idc", "abnormal", "cancer"):
        if name in classes:
            return classes.index(name)
    return len(classes) - 1


def precision_text(precision: str, device: torch.device) -> str:
    """How the training steps computed, for the record."""
    if precision != "bf16-mixed":
        return "float32"
    text = "bfloat16 mixed precision (autocast; weights, optimiser and loss in float32)"
    if device.type == "cpu" and not bf16_kernels_on_cpu():
        text += "; oneDNN has no bfloat16 kernels for this CPU, so it is emulated (slower)"
    return text


def bf16_kernels_on_cpu() -> bool:
    """Whether oneDNN has bfloat16 convolution kernels for this CPU (AVX-512 or newer; the
    speed-up is largest with AVX-512 BF16 or AMX instructions)."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check()) if check is not None else False


def fit_image(
    net: ImageNetwork,
    dm: ImageDataModule,
    settings: ImageFitSettings,
    run_dir: Path,
    groups: np.ndarray | None = None,
) -> tuple[list[dict[str, float]], dict[str, Any]]:
    """Train `net` in place on `dm`; return the per-epoch history and what happened (best
    epoch, epochs run, stage switch, checkpoints). A `closed_form` recipe (the linear probe)
    is fitted without epochs instead (`breastcad.training.probe_fit`; `groups`, one per
    manifest row, cut its cross-validation folds)."""
    L.seed_everything(settings.seed, verbose=False)
    if net.recipe.closed_form:
        from breastcad.training.probe_fit import fit_cell_probe, fit_probe

        if net.recipe.lesion_masks:
            return fit_cell_probe(net, dm, settings)
        return fit_probe(net, dm, settings, groups)
    _check_precision(settings)
    dm.setup()
    weights = None
    if settings.class_weight == "balanced":
        weights = class_weights(dm.datasets["train"].targets, net.num_classes)
    module = ImageClassifier(
        net,
        Optim(settings.lr, **settings.optim),
        positive=positive_index(dm.classes),
        class_weights=weights,
        augment=BatchAugment(settings.augment, settings.seed),
    )
    ckpt_dir = Path(run_dir) / "checkpoints"
    if not settings.resume and ckpt_dir.is_dir() and any(ckpt_dir.iterdir()):
        raise ConfigError(
            f"{ckpt_dir}: checkpoints of an earlier run; continue it with --resume or write "
            "to another --out (nothing was overwritten)"
        )
    _quiet_lightning()
    best, callbacks = _callbacks(ckpt_dir, "val" in dm.datasets, settings)
    trainer = make_trainer(settings.epochs, settings, callbacks, checkpointing=True)
    last_file = ckpt_dir / "last.ckpt"
    resume_from = str(last_file) if settings.resume and last_file.is_file() else None
    _fit_or_say_where_it_stopped(trainer, module, dm, resume_from, last_file)
    if best.best_model_path:
        state = torch.load(best.best_model_path, map_location="cpu", weights_only=False)
        module.load_state_dict(state["state_dict"])
    net.cpu().eval()
    info = {
        "device": device_name(trainer.strategy.root_device),
        "precision": precision_text(settings.precision, trainer.strategy.root_device),
        "deterministic": settings.deterministic,
        "epochs_run": trainer.current_epoch,
        "best_checkpoint": best.best_model_path or None,
        "best_val_loss": float(best.best_model_score)
        if best.best_model_score is not None
        else None,
        "resumed_from": resume_from,
        "stage_switch_epoch": next(
            (c.switch_at for c in callbacks if isinstance(c, StagedFinetuning)), None
        ),
    }
    return module.history, info


def _check_precision(settings: ImageFitSettings) -> None:
    """bfloat16 asked for on a GPU that has no bfloat16 arithmetic: refused before training."""
    on = chosen_device(settings.accelerator)
    if (
        settings.precision == "bf16-mixed"
        and on.type == "cuda"
        and not torch.cuda.is_bf16_supported()
    ):
        raise ConfigError(
            f"--precision bf16-mixed: {device_name(on)} has no bfloat16 arithmetic; train "
            "with --precision 32"
        )


def _quiet_lightning() -> None:
    """Lightning's warnings that say nothing about this run."""
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")  # frozen body
    warnings.filterwarnings("ignore", message=r"Total length of .* across ranks is zero")
    # batches are slices of the memory-mapped decode cache and are augmented on the training
    # device, so loader processes have nothing to do (Lightning suggests them on many-core
    # machines, e.g. beside a GPU)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")


def _callbacks(
    ckpt_dir: Path, has_val: bool, settings: ImageFitSettings
) -> tuple[ModelCheckpoint, list[Callback]]:
    """The checkpoint of the best epoch (`best.ckpt`, lowest validation loss) and the run's
    callbacks: it, `last.ckpt` (every epoch), progress, fine-tuning stages, early stopping."""
    best = ModelCheckpoint(
        ckpt_dir,
        filename="best",
        monitor="val_loss" if has_val else None,
        mode="min",
        save_top_k=1,
        save_on_train_epoch_end=True,  # after the epoch's history row is written
    )
    last = LastCheckpoint(ckpt_dir)  # after `best`: it holds best's state of the same epoch
    callbacks: list[Callback] = [best, last]
    if settings.progress:
        callbacks.append(TQDMProgressBar(leave=True))
    for stage in settings.stages or []:
        callbacks.append(StagedFinetuning(**stage))
    if has_val and settings.patience and not settings.stages:
        callbacks.append(EarlyStopping("val_loss", patience=settings.patience, mode="min"))
    return best, callbacks


def _fit_or_say_where_it_stopped(
    trainer: L.Trainer, module: L.LightningModule, dm, resume_from: str | None, last_file: Path
) -> None:
    """`trainer.fit`; a Ctrl-C becomes `Interrupted`, saying what is kept and how to go on."""
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=resume_from)
    except SystemExit:  # Lightning turns Ctrl-C into a graceful stop and exit(1)
        if not trainer.interrupted:
            raise
        kept = f"its last checkpoint, {last_file}," if last_file.is_file() else "no epoch, and"
        raise Interrupted(
            f"training stopped by the user after {trainer.current_epoch} epochs; {kept} is "
            "kept: the same command with --resume continues from there"
        ) from None
