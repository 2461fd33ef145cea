"""A trained model as one folder: model files, preprocessing, config, metrics and checksums.

`bundle.json` describes the model and lists the sha256 of every other file; `bundle.json.sha256`
holds the sha256 of `bundle.json`. Loading verifies all of them before any model file is read
(scikit-learn models are pickles: a changed file is refused, never unpickled). The checksums guard
against corruption and accidental edits; they are not a signature.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from breastcad.errors import BundleError
from breastcad.models import get_spec
from breastcad.runinfo import sha256_file, to_jsonable

if TYPE_CHECKING:  # scikit-learn (1.5 s to import) only where a tabular bundle is loaded
    from breastcad.models.estimators import TabularEstimator

MANIFEST = "bundle.json"
MANIFEST_SUM = "bundle.json.sha256"
FORMAT = "breastcad-bundle"
FORMAT_VERSION = 1


class ImageModel:
    """A trained `ImageNetwork` as bundle files: `weights.pt` (a state dict, loaded with
    `weights_only=True`) rebuilt from the architecture recorded in the manifest."""

    def __init__(self, net: Any) -> None:
        self.net = net

    def save(self, folder: Path) -> list[str]:
        import torch

        torch.save(self.net.state_dict(), Path(folder) / "weights.pt")
        return ["weights.pt"]

    @classmethod
    def load(cls, folder: Path, name: str, arch: dict[str, Any], **_: Any) -> ImageModel:
        import torch

        net = rebuild_network(arch)
        net.load_state_dict(torch.load(Path(folder) / "weights.pt", weights_only=True))
        return cls(net.eval())


def rebuild_network(arch: dict[str, Any]) -> Any:
    """The network an `arch` record describes (an ensemble: each member's), before its trained
    weights are loaded: the bundle's weights replace any recorded initialisation."""
    from breastcad.models import create_model
    from breastcad.models.ensemble import NAME as ENSEMBLE
    from breastcad.models.ensemble import EnsembleNetwork

    if arch["name"] == ENSEMBLE:
        return EnsembleNetwork([rebuild_network(member) for member in arch["members"]])
    params = {k: v for k, v in arch.items() if k != "name"}
    if "weights" in params:
        params["weights"] = "random"
    return create_model(arch["name"], **params)


@dataclass
class Bundle:
    """A verified bundle: its manifest and the loaded estimator."""

    path: Path
    manifest: dict[str, Any]
    estimator: TabularEstimator | ImageModel

    @property
    def kind(self) -> str:
        return self.manifest.get("kind", "tabular")

    @property
    def feature_names(self) -> list[str]:
        return list(self.manifest["feature_names"])

    @property
    def threshold(self) -> float:
        return float(self.manifest["threshold"]["value"])

    def training_hashes(self) -> tuple[dict[str, Any], int | None] | None:
        """The hashes of the images the bundle learnt from (`data.fingerprints`) and the
        near-duplicate distance to match them at, or None where the bundle has none (trained
        without them, or before bundles kept them)."""
        from breastcad.data import fingerprints

        record = self.manifest.get("training_hashes")
        if not record:
            return None
        return fingerprints.load(self.path), record.get("near_duplicate_distance")

    @property
    def model_id(self) -> str:
        return f"{self.manifest['model']['name']}@{self.manifest['files_digest'][:12]}"


def save_bundle(
    folder: Path,
    estimator: TabularEstimator | ImageModel,
    manifest: dict[str, Any],
    training_hashes: tuple[dict[str, Any], dict[str, Any]] | None = None,
) -> Path:
    """Write `estimator` and `manifest` (without files/checksums, which are added here);
    `training_hashes`: the hashes of the training images and their record
    (`data.fingerprints.training_record`), kept beside the model files, checked like them,
    but not part of the model's digest (its id)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = estimator.save(folder)
    sums = {name: sha256_file(folder / name) for name in sorted(files)}
    full = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **manifest,
        "files": sums,
        "files_digest": _digest(sums),
    }
    if training_hashes is not None:
        from breastcad.data import fingerprints

        hashes, record = training_hashes
        saved = fingerprints.save(folder, hashes)
        full["training_hashes"] = {**record, "sha256": sha256_file(saved)}
    _write_manifest(folder, full)
    return folder


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """The manifest as strict JSON, and its checksum file."""
    (folder / MANIFEST).write_text(json.dumps(to_jsonable(manifest), indent=2))
    (folder / MANIFEST_SUM).write_text(sha256_file(folder / MANIFEST) + "  " + MANIFEST + "\n")


def image_manifest(
    net: Any, classes: list[str], positive: int, input: dict[str, Any], **entries: Any
) -> dict[str, Any]:
    """What an image bundle's manifest says about its network: architecture (to rebuild it),
    initialisation, classes, the positive class, and preprocessing (`input`: size, resize,
    channels of the decoded image, plus the network's own normalisation); `entries` add the
    rest (temperature, threshold, metrics, data, ...)."""
    return {
        "kind": "image",
        "model": {"name": net.arch["name"], "arch": net.arch, "init": net.init},
        "classes": list(classes),
        "positive": positive,
        "preprocessing": {**input, "normalisation": net.preprocessing},
        **entries,
    }


def untrained_image_bundle(
    folder: Path,
    model: str,
    classes: list[str],
    size: int,
    channels: int,
    seed: int = 0,
    modality: str = "image",
    positive: int | None = None,
    **overrides: Any,
) -> Path:
    """A bundle of a freshly built network (backbone weights as its `init` says, seeded head),
    for latency benchmarks, export checks and tests; never for predictions. Its manifest says
    so; `positive` is the positive class's index (default: the last class); `overrides`
    replace manifest entries (e.g. a threshold to test against)."""
    import torch

    from breastcad.models import create_model

    torch.manual_seed(seed)
    net = create_model(model, num_classes=len(classes), size=size).eval()
    manifest = image_manifest(
        net,
        classes,
        len(classes) - 1 if positive is None else positive,
        {"size": size, "resize": "pad", "channels": channels},
        **{
            "temperature": 1.0,
            "threshold": {"value": 0.5, "policy": "untrained: fixed at 0.5"},
            "metrics": {},
            "modality": modality,
            "intended_use": "Untrained network: for benchmarks and tests only.",
            **overrides,
        },
    )
    return save_bundle(folder, ImageModel(net), manifest)


def read_manifest(folder: Path) -> dict[str, Any]:
    """The verified manifest of a bundle: every checksum must match, else `BundleError`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BundleError(f"{folder}: not a bundle folder (it does not exist)")
    manifest_path, sum_path = folder / MANIFEST, folder / MANIFEST_SUM
    for path in (manifest_path, sum_path):
        if not path.is_file():
            found = [*folder.glob(f"bundle/{MANIFEST}"), *folder.glob(f"bundles/*/{MANIFEST}")]
            inside = sorted(m.parent for m in found)[:5]
            hint = (  # a run folder given for its bundle
                f" (a run folder? its bundles: {', '.join(map(str, inside))})" if inside else ""
            )
            raise BundleError(f"{path}: missing; {folder} is not a complete breastcad bundle{hint}")
    expected = sum_path.read_text().split()[0] if sum_path.read_text().strip() else ""
    if sha256_file(manifest_path) != expected:
        raise BundleError(f"{manifest_path}: checksum mismatch; the bundle was modified")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{manifest_path}: not valid JSON ({exc})") from exc
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{manifest_path}: not a breastcad bundle of format {FORMAT_VERSION}")
    exports = {name: e["sha256"] for name, e in manifest.get("exports", {}).items()}
    hashes = manifest.get("training_hashes")
    if hashes:
        exports[hashes["file"]] = hashes["sha256"]
    for name, digest in {**manifest["files"], **exports}.items():
        path = folder / name
        if not path.is_file():
            raise BundleError(f"{path}: missing from the bundle")
        if sha256_file(path) != digest:
            raise BundleError(f"{path}: checksum mismatch; the bundle was modified")
    return manifest


def add_export(folder: Path, name: str, source: Path, record: dict[str, Any]) -> None:
    """Add an exported form of the model (e.g. `model.onnx`) to a verified bundle, with its
    checksum under `exports`; the model files, their digest and the model id stay as they are."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    shutil.copyfile(source, folder / name)
    manifest.setdefault("exports", {})[name] = {**record, "sha256": sha256_file(folder / name)}
    _write_manifest(folder, manifest)


def copy_without_training_hashes(source: Path, target: Path) -> dict[str, Any] | None:
    """A copy of a verified bundle, for use outside the institution, without the hashes of
    the images or rows it learnt from (`data.fingerprints`): the model files, exports and
    manifest otherwise as they are, so the model's id is the same. Returns the record of the
    hashes left out (None where the bundle kept none). `target` must not exist yet."""
    manifest = read_manifest(source)
    target = Path(target)
    if target.exists():
        raise BundleError(f"{target}: already exists; give a new folder for the copy")
    record = manifest.pop("training_hashes", None)
    target.mkdir(parents=True)
    for name in [*manifest["files"], *manifest.get("exports", {})]:
        shutil.copyfile(Path(source) / name, target / name)
    _write_manifest(target, manifest)
    read_manifest(target)  # the copy checks out as a bundle
    return record


def load_bundle(folder: Path) -> Bundle:
    """Verify and load a bundle."""
    manifest = read_manifest(folder)
    model = manifest["model"]
    if manifest.get("kind") == "image":
        estimator = ImageModel.load(Path(folder), model["name"], model["arch"])
        return Bundle(Path(folder), manifest, estimator)
    from breastcad.models.estimators import SklearnTabular, TorchTabular

    cls = {"sklearn": SklearnTabular, "torch": TorchTabular}[get_spec(model["name"]).family]
    estimator = cls.load(Path(folder), name=model["name"], **model.get("params", {}))
    return Bundle(Path(folder), manifest, estimator)


def _digest(sums: dict[str, str]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(sums, sort_keys=True).encode()).hexdigest()
