"""Before an image run trains: the network it starts from (the registry's, or a bundle's with
`--init-from`), its input, and what it refuses with a clear message before any data is
prepared: a resumed run with other settings, data with fewer than two classes, an input too
small for the network, a run that cannot fit in memory, batch norm on single images; the
training settings (the recipe's, overridden by the run's) and lesion annotations it needs.
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from breastcad.bundle import Bundle, load_bundle
from breastcad.config import ImageRunConfig, PreprocessConfig
from breastcad.data.imaging import as_hw
from breastcad.data.lesions import annotated, lesion_masks
from breastcad.data.manifest import Manifest
from breastcad.data.sources import GRAY_MODALITIES
from breastcad.devices import chosen_device
from breastcad.errors import ConfigError, DataError
from breastcad.models import create_model
from breastcad.models.image import ImageNetwork
from breastcad.models.lesion_recipes import lesion_background
from breastcad.models.registry import get_spec
from breastcad.training.augment import MODALITY_AUGMENT
from breastcad.training.image_fit import ImageFitSettings, positive_index


def build_network(
    cfg: ImageRunConfig, classes: list[str], modality: str, n_train: int
) -> tuple[ImageNetwork, PreprocessConfig, dict[str, Any]]:
    """The run's network, seeded (or the `--init-from` bundle's, with its trained weights),
    the input it takes and the parameters it was made with (more members are made alike),
    after every check that needs no data."""
    positive = positive_index(classes)
    start = starting_bundle(cfg, classes)
    params = model_params(cfg, classes, positive) if start is None else bundle_params(start)
    check_memory(cfg, len(classes), params, n_train)
    torch.manual_seed(cfg.seed)
    net = create_model(cfg.model, num_classes=len(classes), **params)
    if start is not None and net.recipe.closed_form:
        raise ConfigError(
            f"--init-from: `{cfg.model}` is fitted in closed form on frozen features, so "
            "there is nothing to start from; fit it on the new data (with the old, if allowed)"
        )
    if start is not None:  # retraining: the bundle's trained weights, batch-norm statistics too
        net.load_state_dict(start.estimator.net.state_dict())
        trained_on = start.manifest.get("trained_on", {}).get("dataset", "unknown data")
        net.init = (
            f"bundle {start.model_id} ({cfg.train.init_from}; trained on {trained_on}, "
            f"initialised then from {start.manifest['model']['init']})"
        )
    if net.recipe.closed_form and cfg.train.members > 1 and not cfg.train.cross_fit:
        raise ConfigError(
            f"--members {cfg.train.members}: `{cfg.model}` is fitted in closed form on fixed "
            "features, so every member on the one split would be the same model; add "
            "--cross-fit (each member fitted on its own folds) or leave --members out "
            "(nothing was trained)"
        )
    preprocess = cfg.preprocess or PreprocessConfig(
        size=net.recipe.size,
        resize=net.recipe.resize,
        channels=1 if modality in GRAY_MODALITIES else "auto",
    )
    if start is not None and cfg.preprocess is None:  # the input the network learnt on
        pre = start.manifest["preprocessing"]
        preprocess = PreprocessConfig(
            size=pre["size"], resize=pre["resize"], channels=pre["channels"]
        )
    check_input_size(net, preprocess, cfg.model)
    check_batch_size(net, cfg.train.batch_size or net.recipe.batch_size, cfg.model)
    return net, preprocess, params


def model_params(cfg: ImageRunConfig, classes: list[str], positive: int) -> dict[str, Any]:
    """The run's model parameters; a lesion-supervised model also learns which class has no
    lesions (`background`), unless the run names it."""
    params = dict(cfg.model_params)
    factory = get_spec(cfg.model).factory
    if "background" in inspect.signature(factory).parameters and "background" not in params:
        params["background"] = lesion_background(classes, positive)
    return params


def starting_bundle(cfg: ImageRunConfig, classes: list[str]) -> Bundle | None:
    """The verified bundle `--init-from` names, checked against the run: one image network of
    the run's model that answers the data's classes, whose architecture the run leaves as it
    is (`--param` / `--size` may only repeat the bundle's values)."""
    from breastcad.models.ensemble import NAME as ENSEMBLE

    if cfg.train.init_from is None:
        return None
    bundle = load_bundle(cfg.train.init_from)
    where = cfg.train.init_from
    if bundle.kind != "image":
        raise ConfigError(f"{where}: --init-from needs an image bundle, this is {bundle.kind}")
    arch = bundle.manifest["model"]["arch"]
    if arch["name"] == ENSEMBLE:
        raise ConfigError(
            f"{where}: an ensemble bundle; --init-from starts from one network (a member's "
            "run folder has its own bundle)"
        )
    if arch["name"] != cfg.model:
        raise ConfigError(
            f"{where}: the bundle is a `{arch['name']}` network, the run asks for "
            f"`{cfg.model}`; give --model {arch['name']}"
        )
    if list(bundle.manifest["classes"]) != list(classes):
        raise ConfigError(
            f"{where}: the bundle answers {', '.join(bundle.manifest['classes'])}, the data has "
            f"{', '.join(classes)}; a network can only start from one with the same classes"
        )
    if cfg.train.members > 1:
        raise ConfigError("--init-from trains one network; leave --members out")
    other = sorted(k for k, v in cfg.model_params.items() if k not in arch or arch[k] != v)
    if other:
        raise ConfigError(
            f"--init-from keeps the bundle's architecture; these settings differ from it or "
            f"are not part of it: {', '.join(other)}"
        )
    return bundle


def bundle_params(bundle: Bundle) -> dict[str, Any]:
    """`create_model` parameters that rebuild the bundle's network (its weights replace the
    recorded initialisation, as `bundle.rebuild_network` does)."""
    arch = bundle.manifest["model"]["arch"]
    params = {k: v for k, v in arch.items() if k not in ("name", "num_classes")}
    return {**params, "weights": "random"} if "weights" in params else params


# settings a resumed run may change: how long it trains, how it shows progress, where and
# with how many processes it keeps its decode cache, the device
RESUME_MAY_CHANGE = {"resume", "epochs", "progress", "cache_dir", "jobs", "accelerator"}


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_resume(cfg: ImageRunConfig, out: Path) -> None:
    """`--resume` continues the run in `out` with its own settings: refuse (naming what
    differs) rather than load its checkpoint into another model, data or split."""
    saved = out / "config.yaml"
    if not cfg.train.resume or not saved.is_file():
        return
    before = _flat(ImageRunConfig.from_yaml(saved).model_dump(mode="json"))
    now = _flat(cfg.model_dump(mode="json"))
    changed = [
        f"{key}: {before.get(key)!r} -> {now.get(key)!r}"
        for key in sorted(set(before) | set(now))
        if key.rsplit(".", 1)[-1] not in RESUME_MAY_CHANGE and before.get(key) != now.get(key)
    ]
    if changed:
        raise ConfigError(
            f"{saved}: --resume continues the run made with these settings, and this one "
            f"differs ({'; '.join(changed)}); use the same options, or another --out "
            "(nothing was changed)"
        )


def check_classes(manifest: Manifest) -> None:
    """Training needs images of every class the layout names, and at least two classes."""
    counts = manifest.class_counts()
    empty = [c for c, n in counts.items() if n == 0]
    if len(counts) < 2 or empty:
        why = f"no images of {empty}" if empty else f"one class only, {list(counts)}"
        raise DataError(
            f"a classifier needs images of at least two classes; this data has {why} "
            f"(images per class: {counts})",
            manifest.root,
        )


def check_input_size(net: ImageNetwork, preprocess: PreprocessConfig, model: str) -> None:
    """One forward pass on a blank image of the run's input size, so that an input too
    small for the network's poolings is a clear error before any data is prepared."""
    height, width = as_hw(preprocess.size)
    blank = torch.zeros(1, net.in_chans, height, width)
    modes = {m: m.training for m in net.modules()}  # Lightning keeps the modes it is given
    try:
        with torch.inference_mode():
            net.eval()(blank)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ConfigError(
            f"`{model}` cannot take {height} x {width} px input ({first}); give a larger --size"
        ) from None
    finally:
        for module, training in modes.items():
            module.train(training)


def check_memory(cfg: ImageRunConfig, num_classes: int, params: dict, n_train: int) -> None:
    """Refuse a run that cannot fit in memory before anything is allocated (`training.memory`:
    a lower bound from the network built on the meta device)."""
    from breastcad.training.memory import GB, available_bytes, training_need

    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # weights copied into meta: no-ops
        shadow = create_model(cfg.model, num_classes=num_classes, **params)
    if shadow.recipe.closed_form:
        return  # features in inference mode, one batch at a time: nothing kept for backward
    height, width = as_hw(cfg.preprocess.size if cfg.preprocess else shadow.recipe.size)
    batch = max(1, min(cfg.train.batch_size or shadow.recipe.batch_size, n_train))
    device = chosen_device(cfg.train.accelerator)
    free = available_bytes(device)
    if free is None:
        return
    try:
        shape = (1, shadow.in_chans, height, width)
        need = training_need(lambda: shadow, shape, batch, unfrozen=bool(shadow.recipe.stages))
    except RuntimeError:
        return  # a size the network cannot take: `check_input_size` says so
    if need.total > free:
        raise ConfigError(
            f"`{cfg.model}` at {height} x {width} px in batches of {batch} needs at least "
            f"{need.total / GB:.1f} GB to train ({need.parameter_bytes / GB:.1f} GB of weights, "
            f"gradients and Adam's moments, {need.activation_bytes / GB:.1f} GB of layer outputs "
            f"kept for the backward pass), and {free / GB:.1f} GB is available on the "
            f"{'GPU' if device.type == 'cuda' else 'machine'}; give a smaller --size or "
            "--batch-size"
        )


def check_batch_size(net: ImageNetwork, batch_size: int, model: str) -> None:
    """Batch norm that learns (not the frozen bodies', which stay in inference mode) cannot
    train on one image at a time."""
    learning = [
        m
        for m in net.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
        and m.training
        and any(p.requires_grad for p in m.parameters())
    ]
    if batch_size < 2 and learning and not net.recipe.closed_form:
        raise ConfigError(
            f"--batch-size {batch_size}: `{model}` trains {len(learning)} batch-norm layer(s), "
            "which need at least 2 images per batch"
        )


def fit_settings(cfg: ImageRunConfig, net: ImageNetwork, modality: str) -> ImageFitSettings:
    """The recipe, overridden by the run's settings. Class weights apply only without
    re-sampling (both would correct the imbalance twice); a closed-form fit (the linear
    probe), which sees every training image once, takes re-sampling to equal classes as the
    balanced class weights it equals in expectation. With fewer epochs than the recipe, the
    head stage of fine-tuning gets what the fine-tuning stage leaves."""
    t, r = cfg.train, net.recipe
    if r.closed_form and t.precision != "32":
        raise ConfigError(
            f"{cfg.model}: a closed-form recipe has no training steps to run in "
            f"{t.precision}; --precision applies to the recipes trained in epochs"
        )
    class_weight = t.class_weight if t.sampling == "none" else "none"
    if r.closed_form and t.sampling != "none":
        class_weight = "balanced"
    augment = MODALITY_AUGMENT.get(modality, "none") if t.augment == "auto" else t.augment
    epochs = t.epochs or r.epochs
    stages = [
        {**s, "after_epochs": min(s["after_epochs"], max(1, epochs - s["epochs"]))}
        for s in r.stages
    ]
    return ImageFitSettings(
        epochs=epochs,
        lr=t.lr or r.lr,
        patience=t.patience or r.patience,
        seed=cfg.seed,
        class_weight=class_weight,
        augment=augment,
        accelerator=t.accelerator,
        deterministic=t.deterministic,
        precision=t.precision,
        progress=t.progress,
        resume=t.resume,
        stages=stages or None,
        optim=r.optim_settings(),
        tta=t.tta,
    )


def lesion_annotations(
    net: ImageNetwork, manifest: Manifest, preprocess: PreprocessConfig, progress: bool
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Lesion masks for a lesion-supervised network (else None) and what they hold."""
    if not net.recipe.lesion_masks:
        return None, {}
    background = manifest.classes[net.arch["background"]]
    masks, problems = lesion_masks(manifest, preprocess, background, progress)
    with_lesion = (manifest.frame["label"] != background).to_numpy()
    unknown = ~annotated(masks)
    return masks, {
        "source": "mini-MIAS Info.txt centres and radii"
        if "lesions" in manifest.frame.columns
        else "mask images",
        "background_class": background,
        "annotated": int((with_lesion & ~unknown).sum()),
        "not_annotated": int(unknown.sum()),
        "used_in": "training loss and the test localisation check; never at prediction",
        "problems": problems,
    }
