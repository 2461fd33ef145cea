"""`breastcad train-image`: train and evaluate one image model on one dataset layout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from breastcad.cli import (
    OptionOpt,
    _parse_options,
    app,
    clear_errors,
    parse_correlation,
    parse_size,
)


@app.command("train-image")
@clear_errors
def train_image(
    dataset: Annotated[str, typer.Option(help="Dataset layout (see `breastcad data sources`).")],
    root: Annotated[Path, typer.Option(help="The dataset folder (or .npz file).")],
    model: Annotated[
        str,
        typer.Option(
            help="idc_cnn, mammo_cnn, transfer, finetune, full_finetune, lesion_map, probe or "
            "cell_probe."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Run folder to write.")] = Path("runs/image"),
    config: Annotated[
        Path | None, typer.Option(help="A saved config.yaml; the options below override it.")
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(help="Model parameter KEY=VALUE, e.g. backbone=resnet50, weights=random."),
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Default: the model's recipe.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Default: the model's recipe.")] = None,
    lr: Annotated[float | None, typer.Option(help="Default: the model's recipe.")] = None,
    size: Annotated[
        str | None, typer.Option(help="Input size: 224 or HEIGHTxWIDTH (default: the model's).")
    ] = None,
    sampling: Annotated[str | None, typer.Option(help="none, oversample, undersample.")] = None,
    class_weight: Annotated[str | None, typer.Option(help="balanced (default) or none.")] = None,
    sensitivity: Annotated[
        float | None, typer.Option(help="Operating point: sensitivity target (default 0.95).")
    ] = None,
    calibration: Annotated[
        str | None,
        typer.Option(
            help="temperature (default) or prior-shift: add the training part's log class "
            "frequencies to the logits of a re-weighted network before the temperature."
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default 0).")] = None,
    accelerator: Annotated[
        str | None, typer.Option(help="auto (default: a GPU when present), cpu or gpu.")
    ] = None,
    members: Annotated[
        int | None,
        typer.Option(
            help="Train this many networks on the one split (seeds seed, seed+1, ...) and "
            "average their probabilities: a deep ensemble in one bundle (default 1)."
        ),
    ] = None,
    cross_fit: Annotated[
        bool,
        typer.Option(
            help="With --members K: cut the training and validation images into K folds by "
            "group, train member i on the other folds with fold i for early stopping, and fit "
            "calibration and operating point on the out-of-fold predictions of all of them."
        ),
    ] = False,
    tta: Annotated[
        str | None,
        typer.Option(
            help="Test-time augmentation: none (default), flip (average each image with its "
            "mirror image) or affine (ten views: the image and its mirror image, as given, "
            "rotated by +-10 degrees and shifted by +-5%; a probe also learns from them); "
            "calibration and operating point fitted on the average, recorded in the bundle."
        ),
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(
            help="Training arithmetic: 32 (default, float32) or bf16-mixed (bfloat16 autocast "
            "in the training steps; weights and every score after training stay float32)."
        ),
    ] = None,
    deterministic: Annotated[
        bool,
        typer.Option(
            help="Deterministic algorithms only: a seeded run repeats exactly on the same "
            "machine and software, on a GPU too (slower there; a seed still gives another "
            "network on another device)."
        ),
    ] = False,
    split_file: Annotated[
        Path | None,
        typer.Option(
            help="Reuse a saved split (an earlier run's splits/split.json), checked against "
            "the data; test and val size are then the file's."
        ),
    ] = None,
    init_from: Annotated[
        Path | None,
        typer.Option(
            help="Start from this image bundle's trained network (retraining on new data; same "
            "model and classes, the bundle's input size and preprocessing)."
        ),
    ] = None,
    training_hashes: Annotated[
        bool,
        typer.Option(
            help="Keep a hash of the pixels and a perceptual hash of every training and "
            "validation image in the bundle, so that evaluate recognises them in any data. "
            "Whoever holds an image can then tell whether the bundle learnt from it: "
            "--no-training-hashes for a bundle that leaves the institution."
        ),
    ] = True,
    resume: Annotated[bool, typer.Option(help="Continue from the run's last checkpoint.")] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Replace the run already in --out (refused without it).")
    ] = False,
    duplicates: Annotated[
        bool,
        typer.Option(
            help="Audit near duplicates and keep each cluster in one partition (default); "
            "--no-duplicates splits image by image where the data has no patients, as the "
            "published figures did (the run then says how many test images it learnt from)."
        ),
    ] = True,
    distance: Annotated[
        int | None, typer.Option(help="Near-duplicate pHash distance in bits (default 4).")
    ] = None,
    correlation: Annotated[
        str | None,
        typer.Option(
            help="Thumbnail correlation from which images of data without patient ids are "
            "near duplicates too (frames of one lesion; default 0.93); 'none': pHashes only."
        ),
    ] = None,
    test_size: Annotated[float | None, typer.Option(help="Test fraction (default 0.2).")] = None,
    val_size: Annotated[float | None, typer.Option(help="Validation fraction (0.1).")] = None,
    option: OptionOpt = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Split by patient / duplicate cluster, train with checkpoints, calibrate and pick the
    operating point on validation, report test metrics with group-bootstrap CIs, save a bundle."""
    from breastcad.config import ImageRunConfig
    from breastcad.image_experiment import run_image_experiment
    from breastcad.runinfo import refuse_earlier_run

    base = ImageRunConfig.from_yaml(config).model_dump() if config else {"data": {}}
    base["data"].update(dataset=dataset, root=root)
    if option:
        base["data"]["options"] = _parse_options(option)
    for key, value in {
        "test_size": test_size,
        "val_size": val_size,
        "split_file": split_file,
        "duplicate_distance": distance,
    }.items():
        if value is not None:
            base["data"][key] = value
    if correlation is not None:
        base["data"]["duplicate_correlation"] = parse_correlation(correlation)
    if not duplicates:
        base["data"]["duplicate_distance"] = None
    base["model"] = model
    if param:
        base["model_params"] = _parse_options(param)
    if size is not None:
        base["model_params"] = {**base.get("model_params", {}), "size": parse_size(size)}
    train = base.setdefault("train", {})
    for key, value in {
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "sampling": sampling,
        "class_weight": class_weight,
        "accelerator": accelerator,
        "members": members,
        "tta": tta,
        "precision": precision,
        "init_from": init_from,
    }.items():
        if value is not None:
            train[key] = value
    train.update(resume=resume, progress=not quiet)
    if cross_fit:
        train["cross_fit"] = True
    if deterministic:
        train["deterministic"] = True
    if not training_hashes:
        train["training_hashes"] = False
    if sensitivity is not None:
        base["operating_point"] = {"policy": "min_sensitivity", "value": sensitivity}
    if seed is not None:
        base["seed"] = seed
    if calibration is not None:
        base["calibration"] = calibration
    cfg = ImageRunConfig.model_validate(base)
    refuse_earlier_run(out, overwrite, resume)
    results = run_image_experiment(cfg, out)
    print_image_summary(results, out)
    typer.echo(f"\nreport: {out / 'report.html'}\nbundle: {out / 'bundle'}")


def print_image_summary(results: dict[str, Any], run: Path | None = None) -> None:
    """The test figures of an image run or evaluation, with intervals, on the terminal."""
    from breastcad.evaluation.overlap import leak_warning

    test = results["test"]
    seen = results["data"].get("seen_in_training")
    if seen:
        typer.echo(f"warning: evaluated on {seen}", err=True)
    if "modality_warning" in results["data"]:
        typer.echo(f"warning: {results['data']['modality_warning']}", err=True)
    leak = leak_warning(results, run) if run is not None else None
    if leak:
        typer.echo(f"warning: the test part is not independent of training: {leak}", err=True)
    typer.echo(
        f"{test['n']} test images; positive class: {results['data']['positive']}; "
        f"threshold {_figure(results['operating_point']['threshold'])}"
    )
    for key, entry in test["ci"].items():
        if key != "n_groups":
            typer.echo(
                f"{key:<18} {entry['value']:.3f} ({entry['ci_low']:.3f}-{entry['ci_high']:.3f})"
            )
    both = test.get("bilateral")
    if both:  # a woman's two breasts, each against the other
        ci = both.get("auc_bilateral_ci")
        interval = f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci else ""
        typer.echo(
            f"against the other breast, {both['images']} images with their partner: AUC "
            f"{both['auc_bilateral']:.3f}{interval} (alone {both['auc_single']:.3f})"
        )
        decided = both.get("at_operating_point")
        if decided:
            typer.echo(
                f"  at its threshold {decided['threshold']:.3f}: {decided['detected']} of "
                f"{decided['positives']} positives flagged, specificity "
                f"{_figure(decided.get('specificity'))}"
            )


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
