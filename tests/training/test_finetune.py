import numpy as np
import pytest
import torch

from breastcad.config import PreprocessConfig
from breastcad.data.datamodule import ImageDataModule
from breastcad.data.sources import scan
from breastcad.models import create_model
from breastcad.training.image_fit import ImageFitSettings, fit_image
from tests.data.conftest import blob_image, save

pytestmark = pytest.mark.slow


def _tiny_busi_like(tmp_path, swap_val_labels=False, batch_size=8):
    """24 images, benign dark and malignant bright; every fourth of each class is validation.
    `swap_val_labels`: validation images carry the other class's look."""
    root = tmp_path / "data"
    for i in range(12):
        dark = blob_image(i, (32, 32), rgb=True) // 2
        swap = swap_val_labels and i % 4 == 0
        save(root / "benign" / f"b{i}.png", 255 - dark if swap else dark)
        save(root / "malignant" / f"m{i}.png", dark if swap else 255 - dark)
    manifest = scan("folder", root)
    number = manifest.frame["path"].map(lambda p: int(p.rsplit("/", 1)[1][1:-4]))
    return ImageDataModule(
        manifest,
        np.where(number % 4 == 0, "val", "train"),
        PreprocessConfig(size=32),
        batch_size=batch_size,
        cache_dir=tmp_path / "cache",
        progress=False,
    )


def test_staged_finetuning_unfreezes_the_backbone_after_the_head_stage(tmp_path):
    dm = _tiny_busi_like(tmp_path)
    torch.manual_seed(0)
    net = create_model("finetune", num_classes=2, size=32)
    conv = net.body.model.conv_stem.weight.detach().clone()
    bn = net.body.model.bn1.running_mean.clone()
    stage = {"after_epochs": 1, "head_patience": 10, "epochs": 1, "lr_factor": 0.1}
    settings = ImageFitSettings(epochs=5, lr=1e-3, progress=False, stages=[stage])
    history, info = fit_image(net, dm, settings, tmp_path / "run")
    assert info["stage_switch_epoch"] == 1 and len(history) == 2  # 1 head epoch + 1 fine-tune
    assert not torch.equal(net.body.model.conv_stem.weight, conv)  # the backbone was trained
    assert torch.equal(net.body.model.bn1.running_mean, bn)  # its batch norm stayed frozen


def test_full_finetune_trains_body_and_batch_norm_with_a_decaying_rate(tmp_path):
    dm = _tiny_busi_like(tmp_path)
    torch.manual_seed(0)
    net = create_model("full_finetune", num_classes=2, size=32, weights="random")
    r = net.recipe
    assert (r.optimizer, r.schedule, r.body_lr_factor) == ("adamw", "cosine", 0.1)
    assert all(p.requires_grad for p in net.parameters())
    conv = net.body.model.conv_stem.weight.detach().clone()
    bn = net.body.model.bn1.running_mean.clone()
    settings = ImageFitSettings(epochs=3, lr=1e-3, progress=False, optim=r.optim_settings())
    history, info = fit_image(net, dm, settings, tmp_path / "run")
    assert len(history) == 3 and info["stage_switch_epoch"] is None
    assert not torch.equal(net.body.model.conv_stem.weight, conv)  # the body trained
    assert not torch.equal(net.body.model.bn1.running_mean, bn)  # and its batch norm too
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    groups = ckpt["optimizer_states"][0]["param_groups"]
    # head and body, each as weights (decayed) and 1-D norm scales, shifts and biases (not)
    assert [(g["name"], g["weight_decay"]) for g in groups] == [
        ("head", 0.01),
        ("head", 0.0),
        ("body", 0.01),
        ("body", 0.0),
    ]
    head_lr, body_lr = groups[0]["lr"], groups[2]["lr"]
    assert groups[1]["lr"] == head_lr and groups[3]["lr"] == body_lr
    assert body_lr == pytest.approx(head_lr * 0.1)
    assert head_lr < 1e-3 * 0.1  # cosine decay: near 0 after the last of 3 epochs
    steps = 3 * len(dm.train_dataloader())  # stepped every batch
    assert ckpt["lr_schedulers"][0]["last_epoch"] == steps


def test_last_checkpoint_is_the_last_epoch_when_validation_gets_worse(tmp_path):
    """Validation images carry the opposite labels of their look-alikes in training, so the
    better the network fits, the worse its validation loss: best.ckpt stays at epoch 1 and
    last.ckpt (what --resume continues from) must still be the last epoch."""
    dm = _tiny_busi_like(tmp_path, swap_val_labels=True, batch_size=6)
    torch.manual_seed(0)
    net = create_model("full_finetune", num_classes=2, size=32, weights="random")
    settings = ImageFitSettings(
        epochs=3, lr=1e-3, progress=False, optim=net.recipe.optim_settings()
    )
    history, info = fit_image(net, dm, settings, tmp_path / "run")
    losses = [row["val_loss"] for row in history]
    assert losses.index(min(losses)) < 2  # validation did not improve in the last epoch
    ckpts = tmp_path / "run" / "checkpoints"
    best = torch.load(ckpts / "best.ckpt", weights_only=False)
    last = torch.load(ckpts / "last.ckpt", weights_only=False)
    assert best["epoch"] == losses.index(min(losses))
    assert last["epoch"] == 2 and [row["epoch"] for row in last["history"]] == [1, 2, 3]
    assert last["global_step"] == 3 * len(dm.train_dataloader())
    assert info["best_checkpoint"].endswith("best.ckpt")


def test_deterministic_switch_repeats_a_run_exactly_on_any_device(tmp_path):
    """Same seed, `deterministic=True`, augmentation on: two runs give identical histories and
    weights, on the GPU too where one is present (accelerator "auto")."""
    runs = []
    for name in ("a", "b"):
        dm = _tiny_busi_like(tmp_path / name)
        torch.manual_seed(0)
        net = create_model("full_finetune", num_classes=2, size=32, weights="random")
        w0 = net.state_dict()["head.3.weight"].clone()
        settings = ImageFitSettings(
            epochs=2,
            lr=1e-3,
            seed=3,
            augment="ultrasound",
            accelerator="auto",
            deterministic=True,
            progress=False,
            optim=net.recipe.optim_settings(),
        )
        history, info = fit_image(net, dm, settings, tmp_path / name / "run")
        runs.append((history, info["device"], net.state_dict()))
    (h1, device, w1), (h2, _, w2) = runs
    assert device.startswith("cuda") == torch.cuda.is_available()
    assert h1 == h2
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert not torch.equal(w1["head.3.weight"], w0)  # and they did train)


def test_weight_decay_spares_norm_parameters_and_biases():
    """Every trainable parameter is in exactly one group; weight matrices and kernels decay,
    1-D parameters (batch-norm scales and shifts, biases) do not."""
    from breastcad.training.image_module import ImageClassifier, Optim

    torch.manual_seed(0)
    net = create_model("full_finetune", num_classes=3, size=32, weights="random")
    module = ImageClassifier(net, Optim(lr=1e-3, optimizer="adamw", weight_decay=0.05))
    optimizer = module.configure_optimizers()
    grouped = [(p, g) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(id(p) for p, _ in grouped) == sorted(id(p) for p in net.parameters())
    assert all((p.ndim > 1) == (g["weight_decay"] == 0.05) for p, g in grouped)
    assert any(p.ndim == 1 for p, _ in grouped)  # there were norm parameters to spare


def test_bf16_mixed_runs_the_network_in_bfloat16_and_keeps_float32_weights(tmp_path):
    """`precision="bf16-mixed"`: the training steps' convolutions compute in bfloat16, while
    the augmented pixels, the weights, the checkpoint and the logged losses stay float32, and
    the network still learns the tiny task (dark benign, bright malignant), on the GPU too
    where one is present. It starts from the ImageNet weights: from a random initialisation 18
    images and 12 steps teach nothing reliably in either precision (an earlier version of this
    test passed or failed with the CPU's arithmetic)."""
    dm = _tiny_busi_like(tmp_path)
    torch.manual_seed(0)
    net = create_model("full_finetune", num_classes=2, size=32)
    w0 = net.body.model.conv_stem.weight.detach().clone()
    seen: dict[str, set] = {"input": set(), "output": set()}

    def record(module, inputs, output):
        if module.training:
            seen["input"].add(inputs[0].dtype)
            seen["output"].add(output.dtype)

    net.body.model.conv_stem.register_forward_hook(record)
    settings = ImageFitSettings(
        epochs=4,
        lr=3e-3,
        progress=False,
        augment="ultrasound",
        accelerator="auto",
        precision="bf16-mixed",
        optim=net.recipe.optim_settings(),
    )
    history, info = fit_image(net, dm, settings, tmp_path / "run")
    assert info["device"].startswith("cuda") == torch.cuda.is_available()
    assert seen["output"] == {torch.bfloat16}  # the convolution ran under autocast
    assert torch.float32 in seen["input"]  # it was handed float32 pixels (augmented outside)
    assert info["precision"].startswith("bfloat16 mixed precision")
    assert all(p.dtype == torch.float32 for p in net.parameters())
    assert not torch.equal(net.body.model.conv_stem.weight, w0)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert all(v.dtype != torch.bfloat16 for v in ckpt["state_dict"].values())
    assert all(np.isfinite(row["train_loss"]) and np.isfinite(row["val_loss"]) for row in history)
    # learnt: the last epoch's loss below the first's, and most training images right at the
    # end (seeds 0-3 on this CPU, either precision: 0.69-0.86 against 0.5 for a coin)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert np.mean([row["train_acc"] for row in history[-2:]]) > 0.6
