"""A deep ensemble in one run: `train.members` networks on one split, or cross-fitted (each
member early-stopped on its own fold of the development images), each kept in
`members/<k>/` so that `--resume` trains only the unfinished ones.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from breastcad.config import ImageRunConfig
from breastcad.data.datamodule import ImageDataModule
from breastcad.models import create_model
from breastcad.models.ensemble import EnsembleNetwork
from breastcad.models.image import ImageNetwork
from breastcad.runinfo import to_jsonable
from breastcad.training.image_fit import ImageFitSettings, fit_image


def fit_ensemble(
    cfg: ImageRunConfig,
    first: ImageNetwork,
    params: dict[str, Any],
    dm: ImageDataModule,
    settings: ImageFitSettings,
    out: Path,
    member_data: list[ImageDataModule] | None = None,
    groups: np.ndarray | None = None,
) -> tuple[EnsembleNetwork, list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
    """`cfg.train.members` networks on the one split, member k seeded `seed + k - 1` (its
    initialisation, batches and augmentation), each in `members/<k>/` with its own checkpoints
    and learning curves; with `member_data` (cross-fitting) member k learns from and stops
    early on its own partition of the images. A finished member is kept (`member.pt`,
    `member.json`) and not trained again by `--resume`. Returns the ensemble, the history of
    all members (a `member` column), what happened and a record per member."""
    nets, history, records = [], [], []
    for k in range(1, cfg.train.members + 1):
        seed = cfg.seed + k - 1
        folder = out / "members" / str(k)
        folder.mkdir(parents=True, exist_ok=True)
        if k == 1:
            net = first
        else:
            torch.manual_seed(seed)
            net = create_model(cfg.model, num_classes=first.num_classes, **params)
        data = dm if member_data is None else member_data[k - 1]
        fold = {} if member_data is None else {"validation_fold": k, "counts": data.counts()}
        record = _fit_member(net, (k, seed, fold), data, settings, folder, groups, cfg.train.resume)
        nets.append(net.cpu().eval())
        history += [{"member": k, **row} for row in record["history"]]
        records.append(record)
    dm.seed = cfg.seed
    return EnsembleNetwork(nets), history, _ensemble_info(records, cfg.seed, member_data), records


def _fit_member(
    net: ImageNetwork,
    member: tuple[int, int, dict[str, Any]],
    data: ImageDataModule,
    settings: ImageFitSettings,
    folder: Path,
    groups: np.ndarray | None,
    resume: bool,
) -> dict[str, Any]:
    """Member (number, seed, its fold where cross-fitted) trained in `folder` (or, on
    `resume`, the one finished there before, loaded into `net`), and its record."""
    k, seed, fold = member
    done = folder / "member.json"
    if resume and done.is_file() and (folder / "member.pt").is_file():
        net.load_state_dict(torch.load(folder / "member.pt", weights_only=True))
        record = json.loads(done.read_text())
        record["resumed"] = "finished before; not trained again"
        return record
    data.seed = seed  # the member's own batch order
    member_history, info = fit_image(
        net, data, dataclasses.replace(settings, seed=seed), folder, groups
    )
    pd.DataFrame(member_history).to_csv(folder / "history.csv", index=False)
    record = {"member": k, "seed": seed, **info, "history": member_history}
    if fold:
        record["fold"] = fold
    torch.save(net.state_dict(), folder / "member.pt")
    done.write_text(json.dumps(to_jsonable(record), indent=1))
    return record


def _ensemble_info(
    records: list[dict[str, Any]], seed: int, member_data: list | None
) -> dict[str, Any]:
    """What training the ensemble did, in the form a single network's fit reports it."""
    how = (
        "one split"
        if member_data is None
        else f"cross-fitted: the training and validation parts pooled and cut into "
        f"{len(records)} folds by group, member k early-stopped on fold k and trained on the rest"
    )
    return {
        "device": records[-1]["device"],
        "precision": records[-1].get("precision", "float32"),
        "deterministic": records[-1].get("deterministic", False),
        "epochs_run": sum(r["epochs_run"] for r in records),
        "best_checkpoint": None,
        "best_val_loss": None,
        "resumed_from": [r.get("resumed_from") or r.get("resumed") for r in records],
        "stage_switch_epoch": None,
        "ensemble": f"{len(records)} members, seeds {seed}-{seed + len(records) - 1}, {how}"
        "; class probabilities averaged",
    }
