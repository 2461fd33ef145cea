"""How an image run trained, in the words of its report: epochs and device, a linear or
lesion-cell probe's fit, an ensemble's members alone (`image_report` places them).
"""

from __future__ import annotations

from typing import Any

from breastcad.evaluation.report import Block, fmt


def _probe_text(probe: dict[str, Any]) -> str:
    """How a linear probe (`breastcad.training.probe_fit`) was fitted."""
    cv = probe["cross_validation"]
    if isinstance(cv, dict):
        scores = ", ".join(f"{c}: {fmt(v)}" for c, v in cv["by_C"].items())
        how = (
            f"chosen by {cv['folds']}-fold cross-validation within the training part, folds "
            f"cut by {cv['cut_by']}, held-out images scored "
            f"{cv.get('held_out_scored', 'as given')} ({cv['metric']} by C: {scores})"
        )
    else:
        how = f"({cv})"
    return (
        f"linear probe, no epochs: a logistic regression on {probe['features']} frozen "
        f"features of {probe['training_images']} training images ({probe['samples']}), "
        f"C = {probe['C']} {how}"
    )


def _cell_probe_text(fit: dict[str, Any]) -> str:
    """How a lesion-cell probe (`probe_fit.fit_cell_probe`) was fitted."""
    cells, images = fit["cells"], fit["images"]
    return (
        f"lesion-cell probe, no epochs: a logistic regression (C = {fit['C']}) on "
        f"{fit['features']} frozen features per cell of a {fit['grid'][0]} x {fit['grid'][1]} "
        f"grid, {cells['lesion']} lesion cells of {images['lesion']} images"
        f"{_lesion_views_text(fit.get('lesion_views', 'none'), cells.get('lesion_moved', 0))}"
        " against "
        f"{cells['background']} cells ({fit['background_fraction']:g} of them) of "
        f"{images['background']} images without lesions; {images['left out']} training "
        "images left out (lesion not annotated or off the grid); image logit = its most "
        f"lesion-like cell, scaled per class on the training images ({_scale_text(fit)})"
    )


def _lesion_views_text(mode: str, moved: int) -> str:
    if mode == "none":
        return ""
    shown = "mirrored" if mode == "flip" else "mirrored, rotated +-10 degrees and shifted +-5%"
    return f" and {moved} of their moved views ({shown}, the annotation moved with each)"


def _scale_text(fit: dict[str, Any]) -> str:
    scales = fit.get("image_scale", {})
    return ", ".join(f"{c}: x {v['scale']:g} {v['offset']:+g}" for c, v in scales.items())


def training_line(training: dict[str, Any] | None) -> list[str]:
    """Where and how long it trained (runs only; an evaluation of a bundle has no training)."""
    if not training or "epochs_run" not in training:
        return []
    device = training.get("device", "not recorded")
    members = training.get("members")
    if not members and "probe" in training:
        return [f"Training: {_probe_text(training['probe'])}, on {device}"]
    if not members and "cell_probe" in training:
        return [f"Training: {_cell_probe_text(training['cell_probe'])}, on {device}"]
    arithmetic = training.get("precision", "float32")
    if training.get("deterministic"):
        arithmetic += ", deterministic algorithms"
    if not members:
        return [f"Training: {training['epochs_run']} epochs on {device}, {arithmetic}"]
    each = ", ".join(str(m["epochs_run"]) for m in members)
    return [
        f"Training: {training['epochs_run']} epochs in all ({each}) on {device}, {arithmetic}",
        f"Deep ensemble: {training['ensemble']}",
    ]


def members_blocks(training: dict[str, Any] | None) -> list[Block]:
    """An ensemble's members alone on the same test images: what averaging them adds."""
    members = (training or {}).get("members")
    if not members:
        return []
    rows = [
        [
            str(m["member"]),
            str(m["seed"]),
            str(m["epochs_run"]),
            fmt(m.get("best_val_loss")),
            fmt(m.get("test_alone", {}).get("accuracy")),
            fmt(m.get("test_alone", {}).get("macro_auc")),
        ]
        for m in members
    ]
    return [
        Block("h3", "Ensemble members alone (same test images, argmax, no temperature)"),
        Block(
            "table",
            (["member", "seed", "epochs", "best val loss", "accuracy", "macro AUC"], rows),
        ),
    ]
