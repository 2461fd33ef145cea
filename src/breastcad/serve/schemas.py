"""Request and response schemas of the REST API (they are its OpenAPI documentation)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat

NOTICE = "Research use only; not a medical device. Not for diagnosis or treatment decisions."


class ModelRef(BaseModel):
    id: str = Field(description="name@digest: the bundle's model files, as verified on load.")
    name: str
    version: str = Field(description="First 12 hex digits of the bundle's files digest.")
    runtime: str = Field(description="torch or onnx.")


class Explanation(BaseModel):
    method: str = "grad-cam"
    target: str = Field(description="The class explained (the predicted one).")
    input_png: str = Field(description="Base64 PNG of the model's input (resized, padded).")
    overlay_png: str = Field(
        description="Base64 PNG: Grad-CAM over the uploaded image at its own geometry (longer "
        "side at most 1024 px); `input_png` is what the model saw."
    )
    degenerate: bool = Field(
        description="True when the map is zero everywhere (no positive evidence): not shown."
    )


class ImagePredictionOut(BaseModel):
    model: ModelRef
    classes: list[str]
    probabilities: dict[str, float] = Field(
        description="Calibrated class probabilities (the training run's prior shift, which "
        "undoes class re-weighting, then its temperature)."
    )
    prediction: str = Field(description="The class decided at the model's operating point.")
    positive_class: str
    threshold: float | None = Field(
        description="P(positive) at or above which the positive class is decided."
    )
    operating_point: str | None = Field(description="How the threshold was chosen.")
    image: dict[str, Any] = Field(description="Decoded size, and the size the model saw.")
    dicom: dict[str, Any] | None = Field(
        description="Acquisition facts from a de-identified copy of the DICOM header."
    )
    warning: str | None = Field(
        None,
        description="Set when the DICOM header names another modality than the model was "
        "trained on (an ultrasound model sent a mammogram): the answer does not apply.",
    )
    explanation: Explanation | None = None
    notice: str = NOTICE


class PairImageOut(BaseModel):
    filename: str
    probabilities: dict[str, float] = Field(description="Calibrated, this image alone.")
    prediction: str = Field(description="This image alone, at the model's operating point.")
    p_bilateral: float = Field(
        description="P(positive) of this image against the other: the training run's "
        "bilateral fit applied to its log-odds minus the other image's."
    )
    prediction_bilateral: str = Field(description="Decided at the bilateral threshold.")
    dicom: dict[str, Any] | None = Field(
        description="Acquisition facts from a de-identified copy of the DICOM header."
    )
    warning: str | None = Field(
        None,
        description="Set when the DICOM header names another modality than the model was "
        "trained on (an ultrasound model sent a mammogram): the answer does not apply.",
    )
    explanation: Explanation | None = Field(
        None, description="With `explain=true`: this image's Grad-CAM, as `/predict` gives it."
    )


class PairPredictionOut(BaseModel):
    model: ModelRef
    classes: list[str]
    positive_class: str
    threshold_bilateral: float = Field(
        description="p_bilateral at or above which the positive class is decided."
    )
    bilateral_fit: str = Field(description="How the bilateral probability was fitted.")
    image: PairImageOut = Field(description="The image sent as `file`.")
    other: PairImageOut = Field(description="The image sent as `other`, against `file`.")
    notice: str = NOTICE


class TabularRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="Model id or name (optional with one model).")
    features: dict[str, FiniteFloat] = Field(
        description="The 30 WDBC features by name (UCI/Kaggle or scikit-learn names); finite "
        "numbers (a missing value is refused, not imputed)."
    )


class TabularPredictionOut(BaseModel):
    model: ModelRef
    p_malignant: float
    prediction: str
    threshold: float | None
    operating_point: str | None
    notice: str = NOTICE


class ModelInfo(BaseModel):
    id: str
    name: str
    kind: str = Field(description="image or tabular.")
    modality: str | None
    classes: list[str]
    positive_class: str
    threshold: float | None
    operating_point: str | None
    input: dict[str, Any] = Field(description="Preprocessing (image) or feature names (tabular).")
    init: str | None = Field(description="Where the weights started from (e.g. ImageNet).")
    test_time_augmentation: str | None = Field(
        None,
        description="Image models: none, flip (each image's probabilities averaged with its "
        "mirror image's) or affine (averaged over ten views: the image and its mirror image, "
        "as given, rotated by +-10 degrees and shifted by +-5%).",
    )
    bilateral: dict[str, Any] | None = Field(
        None,
        description="Image models whose training run fitted each breast against the woman's "
        "other breast: the threshold and how it was chosen (`/predict/pair` takes them); "
        "null otherwise.",
    )
    trained_on: dict[str, Any] | None
    metrics: dict[str, Any] = Field(
        description="Metric -> value, ci_low, ci_high (95%), as recorded in the bundle."
    )
    evaluation: str = Field(description="How the metrics were obtained.")
    runtime: str
    intended_use: str


class Health(BaseModel):
    status: str
    models: int


class ErrorOut(BaseModel):
    detail: str
    code: str
