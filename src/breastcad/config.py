"""Run settings: pydantic models that are the single source of truth for every run.

A run writes its resolved `RunConfig` as `config.yaml` next to its results; `RunConfig.from_yaml`
reads it back, so a run can be repeated exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Saved(_Strict):
    """A run's settings, saved as the run's config.yaml and read back with `--config`."""

    def to_yaml(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False))

    @classmethod
    def from_yaml(cls, path: Path) -> Self:
        """The settings in `path`; a file that is missing, not text or not YAML is a
        `ConfigError` naming it (an invalid setting: pydantic's error, as for options)."""
        from breastcad.errors import ConfigError

        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            mark = getattr(exc, "problem_mark", None)
            why = (
                f"line {mark.line + 1}: {getattr(exc, 'problem', '') or exc}"
                if mark is not None
                else str(exc) or exc.__class__.__name__
            )
            raise ConfigError(f"{path}: not a YAML config file ({why})") from None
        return cls.model_validate(loaded or {})


class TabularDataConfig(_Strict):
    """Where the tabular data comes from and how it is cleaned before any split."""

    source: Literal["wdbc", "csv"] = "wdbc"
    path: Path | None = Field(None, description="CSV file (source='csv').")
    label_column: str | None = Field(None, description="Default: 'diagnosis' when present.")
    positive_label: str | None = Field(
        None,
        description="Label value that means malignant; inferred for M/B, malignant/benign, 1/0.",
    )
    id_column: str | None = Field(None, description="Default: 'id' when present; never a feature.")
    missing: Literal["impute", "drop", "error"] = Field(
        "impute",
        description="impute: median imputation fitted inside each training fold; drop: drop rows.",
    )
    drop_duplicates: bool = Field(True, description="Drop exact duplicate rows before splitting.")

    @model_validator(mode="after")
    def _csv_needs_path(self) -> TabularDataConfig:
        if self.source == "csv" and self.path is None:
            raise ValueError("source 'csv' needs a path")
        return self


class PreprocessConfig(_Strict):
    """How images become network input: decoded once into the uint8 cache at `size` x `size`."""

    size: int | tuple[int, int] = Field(
        224, description="Square side, or (height, width), in pixels; 8 to 4096 each."
    )
    resize: Literal["pad", "crop", "stretch"] = Field(
        "pad",
        description="pad: keep the aspect ratio, pad with black; crop: fill and centre-crop; "
        "stretch: ignore the aspect ratio.",
    )
    channels: Literal["auto", 1, 3] = Field(
        "auto",
        description="Channels stored in the cache: 1 (colour averaged) or 3; auto: 3 when the "
        "data has colour, else 1. Grayscale reaches a 3-channel backbone as a broadcast view.",
    )

    @model_validator(mode="after")
    def _size_in_range(self) -> PreprocessConfig:
        sides = (self.size,) if isinstance(self.size, int) else self.size
        if not all(8 <= s <= 4096 for s in sides):
            raise ValueError(f"image size {self.size} is outside 8 to 4096 pixels")
        return self


class ThresholdConfig(_Strict):
    """How the decision threshold on P(malignant) is chosen, always inside the training data."""

    policy: Literal["fixed", "youden", "min_sensitivity"] = "youden"
    value: float = Field(
        0.5, ge=0.0, le=1.0, description="The threshold (fixed) or the sensitivity target."
    )

    def describe(self) -> str:
        if self.policy == "fixed":
            return f"fixed at {self.value:g}"
        if self.policy == "youden":
            return "maximises Youden's J (sensitivity + specificity - 1) inside the training fold"
        return f"highest threshold with sensitivity >= {self.value:g} inside the training fold"


class TrainConfig(_Strict):
    """Training-loop settings for PyTorch models (scikit-learn models ignore them)."""

    epochs: int | None = Field(None, ge=1, description="Default: the model's published value.")
    batch_size: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0)
    val_fraction: float = Field(
        0.2,
        ge=0.0,
        lt=1.0,
        description="Stratified part of the training data held out for learning curves, early "
        "stopping and threshold choice. 0 trains on all of it.",
    )
    early_stopping_patience: int | None = Field(None, ge=1, description="None: off.")
    class_weight: Literal["none", "balanced"] = "none"
    accelerator: str = "cpu"
    deterministic: bool = False
    progress: bool = True


class ProtocolConfig(_Strict):
    """An evaluation protocol: the published single split or repeated stratified k-fold CV."""

    kind: Literal["published", "cv"]
    test_size: float = Field(0.2, gt=0, lt=1)
    random_state: int = 0
    n_splits: int = Field(10, ge=2)
    n_repeats: int = Field(10, ge=1)

    def describe(self) -> str:
        if self.kind == "published":
            return (
                f"published single split: stratified {1 - self.test_size:.0%}/"
                f"{self.test_size:.0%}, random_state={self.random_state}"
            )
        return (
            f"{self.n_repeats} x repeated stratified {self.n_splits}-fold cross-validation, "
            f"random_state={self.random_state}"
        )


class RunConfig(_Saved):
    """Everything that determines a run's results."""

    data: TabularDataConfig = TabularDataConfig()
    models: list[str] = ["cnn1d", "mlp", "logreg", "svm_rbf", "gboost"]
    model_params: dict[str, dict[str, Any]] = {}
    protocols: list[ProtocolConfig] = [
        ProtocolConfig(kind="published"),
        ProtocolConfig(kind="cv"),
    ]
    threshold: ThresholdConfig = ThresholdConfig()
    published_threshold: ThresholdConfig = Field(
        ThresholdConfig(policy="fixed", value=0.5),
        description="Threshold for the published split, which the published work fixed at 0.5.",
    )
    train: TrainConfig = TrainConfig()
    published_val_fraction: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="The published 1D-CNN trained on the whole 80% split; 0 reproduces that.",
    )
    seed: int = 0
    n_jobs: int = Field(1, ge=1, description="Folds evaluated in parallel processes.")
    bundle_models: list[str] | None = Field(
        None, description="Models to refit on all data and save as bundles. Default: the best."
    )
    training_hashes: bool = Field(
        True,
        description="Keep a 64-bit hash of every row's features in each bundle, so that "
        "evaluate recognises the rows it was refitted on in any table; whoever holds a row can "
        "then tell whether the bundle learnt from it.",
    )


class ImageDataConfig(_Strict):
    """Which image dataset, and how it is split (by patient / duplicate cluster, seeded)."""

    dataset: str
    root: Path
    options: dict[str, Any] = Field({}, description="Adapter options, e.g. task for mini-MIAS.")
    split_file: Path | None = Field(None, description="A saved split to reuse (checked).")
    test_size: float = Field(0.2, gt=0, lt=1)
    val_size: float = Field(0.1, gt=0, lt=1)
    duplicate_distance: int | None = Field(
        4, description="pHash distance for near duplicates kept together; None: no audit."
    )
    duplicate_correlation: float | None = Field(
        0.93,
        gt=0,
        le=1,
        description="Thumbnail correlation from which images of data without patient ids "
        "are kept together too (frames of one lesion); None: the pHashes only.",
    )
    official: bool = Field(True, description="Use official splits where they exist.")


class ImageTrainConfig(_Strict):
    """Training settings; None means the model's published recipe."""

    epochs: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0)
    patience: int | None = Field(None, ge=1)
    class_weight: Literal["none", "balanced"] = "balanced"
    sampling: Literal["none", "oversample", "undersample"] = "none"
    augment: Literal["auto", "none", "histo", "ultrasound", "mammo"] = "auto"
    accelerator: str = Field("auto", description="auto: a GPU when present, else the CPU.")
    deterministic: bool = False
    precision: Literal["32", "bf16-mixed"] = Field(
        "32",
        description="Arithmetic of the training steps. 32: float32 throughout. bf16-mixed: "
        "convolutions and matrix products of the training and validation steps in bfloat16 "
        "(autocast); weights, optimiser, loss, augmentation and every score after training "
        "(calibration, operating point, test, the bundle's predictions) stay float32. On a "
        "CPU with bfloat16 instructions it trains plain convolutional networks and frozen "
        "backbones 1.5-2x faster and fully fine-tuned EfficientNets no faster (see the "
        "README); not for the closed-form recipes (probe, cell_probe), which have no "
        "training steps.",
    )
    members: int = Field(
        1,
        ge=1,
        le=20,
        description="Networks trained on the one split, seeded seed, seed+1, ...; more than "
        "one are averaged into a deep ensemble (one bundle).",
    )
    cross_fit: bool = Field(
        False,
        description="With members = k >= 2: the development images (train and validation "
        "parts) are cut into k folds by group; member i trains on the others and stops early "
        "on fold i, and temperature and operating point are fitted on the out-of-fold "
        "predictions of all development images instead of the validation part alone.",
    )
    tta: Literal["none", "flip", "affine"] = Field(
        "none",
        description="Test-time augmentation: flip averages each image's probabilities with "
        "its mirror image's, affine over ten views (the image and its mirror image, each as "
        "given, rotated by +-10 degrees and shifted by +-5%; a linear probe also learns from "
        "them); calibration and the operating point are fitted on the average.",
    )
    init_from: Path | None = Field(
        None,
        description="Start from this image bundle's trained network (retraining on new data): "
        "same model, classes and input as the bundle; the run's recipe then trains it.",
    )
    training_hashes: bool = Field(
        True,
        description="Keep 64-bit hashes (pixels, pHash, centred square's pHash) of every "
        "training and validation "
        "image in the bundle, so that evaluate recognises those images in any data; whoever "
        "holds an image can then tell whether the bundle learnt from it (see "
        "breastcad.data.fingerprints).",
    )
    progress: bool = True
    resume: bool = False
    jobs: int = Field(2, ge=1, description="Processes decoding images into the cache.")
    cache_dir: Path | None = None

    @model_validator(mode="after")
    def _cross_fit_needs_members(self) -> ImageTrainConfig:
        if self.cross_fit and self.members < 2:
            raise ValueError(
                "cross-fitting needs members >= 2 (the number of folds), e.g. --members 5"
            )
        return self


class ImageRunConfig(_Saved):
    """Everything that determines an image run's results."""

    data: ImageDataConfig
    model: str = "transfer"
    model_params: dict[str, Any] = {}
    preprocess: PreprocessConfig | None = Field(
        None, description="Default: the model's input size; 1 channel for gray modalities."
    )
    train: ImageTrainConfig = ImageTrainConfig()
    operating_point: ThresholdConfig = Field(
        ThresholdConfig(policy="min_sensitivity", value=0.95),
        description="Threshold on P(positive class), chosen on the validation part.",
    )
    calibration: Literal["temperature", "prior-shift"] = Field(
        "temperature",
        description="temperature: temperature scaling on the validation part. prior-shift: "
        "first add log pi_k of the training part to the logits of a network trained towards "
        "equal classes (balanced weights or re-sampling), then the temperature; it assumes "
        "the weighted fit reached the population optimum, and over-corrects where it did not "
        "(see the README).",
    )
    bootstrap: int = Field(1000, ge=0, description="Group bootstrap resamples for the CIs.")
    seed: int = 0


class ServiceSettings(_Strict):
    """Settings of `breastcad serve` (`create_app(settings)`); safe defaults: loopback only,
    no key, no CORS, uploads kept in memory and never stored."""

    models: list[Path] = Field(min_length=1, description="Bundle folders to serve.")
    runtime: Literal["auto", "torch", "onnx"] = Field(
        "auto",
        description="auto: ONNX Runtime for bundles with an exported model.onnx (`breastcad "
        "export`), PyTorch otherwise; torch or onnx to insist.",
    )
    device: Literal["auto", "cpu", "gpu"] = Field(
        "cpu",
        description="Where image networks run on PyTorch: cpu (the same answers on every "
        "machine), auto (the GPU when there is one) or gpu; ONNX Runtime and tabular models "
        "run on the CPU.",
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    max_upload_mb: float = Field(20.0, gt=0, description="Larger uploads get 413.")
    max_pixels: int = Field(
        50_000_000, gt=0, description="Larger images (decompression bombs) get 413."
    )
    api_key: str | None = Field(
        None, description="When set, /api/* needs the header X-API-Key with this value."
    )
    cors_origins: list[str] = Field([], description="Origins allowed by CORS; none by default.")
    store_uploads: Path | None = Field(
        None, description="Folder to keep uploads in (random names); None: never stored."
    )
    explain: bool = Field(True, description="Allow Grad-CAM explanations (explain=true).")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
