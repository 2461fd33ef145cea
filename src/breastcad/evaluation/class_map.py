"""How a bundle's classes are read in data that names them otherwise (`breastcad evaluate
--class-map`): a model class under the data's name (`idc=malignant`), two of the model's
classes read as one of the data's (`normal+benign=normal_or_benign`, probabilities summed),
or data classes joined into one the model does not split (`normal+benign` as a data name).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from breastcad.data.manifest import Manifest
from breastcad.errors import ConfigError, DataError


def model_classes(manifest, predictor, root: Path, class_map: dict[str, str] | None = None):
    """`manifest` with the model's classes in the model's order, named as the data names them
    (`class_map`: model name -> data name, for those that differ; `normal+benign` -> a data
    class reads two of the model's classes as one), the matrix that sums the model's class
    probabilities into those classes (None where none is joined) and the positive class's
    place among them; an error where the two sets differ that says how the model's training
    data was read."""
    named, merge = named_classes(predictor, class_map or {})
    positive = named.index(data_name(predictor.classes[predictor.positive], class_map or {}))
    manifest = merge_classes(manifest, named, root)
    if sorted(named) == sorted(manifest.classes):
        manifest.classes = named  # the model's order: its logits' columns
        return manifest, merge, positive
    trained = predictor.bundle.manifest.get("trained_on") or {}
    used = " ".join(f"--option {k}={v}" for k, v in (trained.get("options") or {}).items())
    hint = f"; it was trained on {trained.get('dataset', 'other data')}" + (
        f" read with {used}" if used else ""
    )
    raise DataError(
        f"the data's classes {manifest.classes} differ from the model's "
        f"{named}{hint} (name folders after the model's classes, read the data with the "
        "options the model was trained with, or map a model class to the data's with "
        "--class-map MODEL=DATA, two of them to one of the data's with --class-map A+B=DATA)",
        root,
    )


def data_name(model_class: str, class_map: dict[str, str]) -> str:
    """What the data calls one of the model's classes, alone or joined with others."""
    for key, name in class_map.items():
        if model_class in (k.strip() for k in key.split("+")):
            return name
    return model_class


def named_classes(predictor, class_map: dict[str, str]) -> tuple[list[str], np.ndarray | None]:
    """The data's names of the model's classes, in the model's order, joined ones once (where
    the first of them is), and the model x data matrix that sums their probabilities (None
    when none is joined). Refused: a name that is no class of the model, a class in two
    keys, two keys with one name, and joining the positive class (the operating point is
    a threshold on its probability alone)."""
    model = predictor.classes
    keys = {key: [k.strip() for k in key.split("+")] for key in class_map}
    listed = [c for parts in keys.values() for c in parts]
    unknown = sorted(set(listed) - set(model))
    if unknown:
        raise ConfigError(
            f"--class-map names {', '.join(unknown)}, not a class of the model ({', '.join(model)})"
        )
    if len(set(listed)) < len(listed):
        raise ConfigError(f"--class-map names a model class twice: {', '.join(class_map)}")
    positive = model[predictor.positive]
    if any(len(parts) > 1 and positive in parts for parts in keys.values()):
        raise ConfigError(
            f"--class-map joins {positive}, the positive class, with another: the bundle's "
            f"operating point is a threshold on P({positive}) alone; join the other classes"
        )
    group_of = {c: key for key, parts in keys.items() for c in parts}
    named: list[str] = []
    named_by: dict[str, str] = {}  # each name: the model class or joined key it stands for
    for c in model:
        name, group = data_name(c, class_map), group_of.get(c, c)
        if named_by.setdefault(name, group) != group:
            raise ConfigError(f"--class-map gives two of the model's classes one name: {name}")
        if name not in named:
            named.append(name)
    merge = np.zeros((len(model), len(named)))
    for i, c in enumerate(model):
        merge[i, named.index(data_name(c, class_map))] = 1.0
    joined = any(len(parts) > 1 for parts in keys.values())
    return named, merge if joined else None


def merge_classes(manifest, named: list[str], root: Path):
    """`manifest` with the data classes joined in each name of `named` like `normal+benign`
    read as that one class: what a model that does not tell them apart (BreastMNIST's
    normal_or_benign) answers for either."""
    merged = [n for n in named if "+" in n]
    if not merged:
        return manifest
    parts = [[p.strip() for p in name.split("+")] for name in merged]
    flat = [p for group in parts for p in group] + [n for n in named if "+" not in n]
    unknown = sorted(set(flat) - set(manifest.classes))
    twice = sorted({p for p in flat if flat.count(p) > 1})
    if unknown or twice:
        problem = (
            f"no class {', '.join(unknown)}"
            if unknown
            else f"{', '.join(twice)} read as two of the model's classes"
        )
        raise DataError(
            f"--class-map {', '.join(merged)}: {problem} in the data (its classes: "
            f"{', '.join(manifest.classes)})",
            root,
        )
    joined = {p: name for name, group in zip(merged, parts, strict=True) for p in group}
    frame = manifest.frame.copy()
    frame["label"] = frame["label"].map(lambda label: joined.get(label, label))
    classes = [c for c in manifest.classes if c not in joined] + merged
    return Manifest(frame, manifest.root, classes, manifest.problems, manifest.patient_groups)
