"""What the service answers, built from a `Predictor` and its bundle: model references and
model cards, the metrics a bundle carries, and each image's answer (probabilities, decision,
the de-identified DICOM header, Grad-CAM pictures), alone or against the other breast.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from breastcad.data.imaging import has_dicom_preamble
from breastcad.data.modality import modality_warning
from breastcad.predict import ImagePrediction, Predictor
from breastcad.serve.schemas import NOTICE, Explanation, ModelInfo, ModelRef, PairImageOut


def model_ref(key: str, predictor: Predictor) -> ModelRef:
    manifest = predictor.bundle.manifest
    return ModelRef(
        id=key,
        name=manifest["model"]["name"],
        version=manifest["files_digest"][:12],
        runtime=predictor.runtime,
    )


def policy_of(predictor: Predictor) -> str | None:
    return predictor.bundle.manifest.get("threshold", {}).get("policy")


def model_info(key: str, predictor: Predictor) -> ModelInfo:
    m = predictor.bundle.manifest
    image = predictor.kind == "image"
    metrics, evaluation = metrics_table(m.get("metrics", {}))
    return ModelInfo(
        id=key,
        name=m["model"]["name"],
        kind=predictor.kind,
        modality=m.get("modality", None if image else "tabular"),
        classes=predictor.classes,
        positive_class=predictor.classes[predictor.positive] if image else "malignant",
        threshold=predictor.threshold,
        operating_point=policy_of(predictor),
        input=m["preprocessing"] if image else {"features": predictor.bundle.feature_names},
        init=m["model"].get("init"),
        test_time_augmentation=predictor.tta if image else None,
        bilateral=bilateral_summary(predictor) if image else None,
        trained_on=m.get("trained_on") or m.get("training_data"),
        metrics=metrics,
        evaluation=evaluation,
        runtime=predictor.runtime,
        intended_use=m.get("intended_use", NOTICE),
    )


def bilateral_summary(predictor: Predictor) -> dict[str, Any] | None:
    fit = predictor.bilateral
    if fit is None:
        return None
    return {
        "threshold": float(fit["threshold"]),
        "chosen_on": fit.get("chosen_on", "the validation part"),
        "probability": fit.get("probability", "logistic regression"),
    }


def metrics_table(raw: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Metric -> {value, ci_low, ci_high} from an image bundle (test set, group bootstrap) or a
    tabular one (mean over the CV folds, corrected interval), and how they were obtained."""
    if "summary" in raw:  # tabular: the cross-validation estimate of the training procedure
        table = {
            k: {"value": v["mean"], "ci_low": v.get("ci_low"), "ci_high": v.get("ci_high")}
            for k, v in raw["summary"].items()
            if isinstance(v, dict) and v.get("mean") is not None
        }
        return table, f"{raw.get('protocol', 'cross-validation')}: {raw.get('note', '')}".strip()
    table = {k: v for k, v in raw.items() if isinstance(v, dict) and v.get("value") is not None}
    return table, "held-out test set; 95% bootstrap intervals resampling groups"


def _b64png(image: np.ndarray) -> str:
    from breastcad.explain.gradcam import png_bytes

    return base64.b64encode(png_bytes(image)).decode()


def _dicom_header(data: bytes) -> dict[str, Any] | None:
    import io

    import pydicom

    from breastcad.data.deid import safe_header

    if not has_dicom_preamble(data[:132]):
        return None
    try:
        return safe_header(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True))
    except Exception:  # the pixels were readable; a header we cannot summarise is left out
        return None


def prepare_upload(predictor: Predictor, data: bytes, name: str, limit: int) -> tuple[Any, Any]:
    from breastcad.data.imaging import decode_image

    image = decode_image(data, name, limit)
    return image, predictor.prepare(image)


def image_answer(
    predictor: Predictor, image: np.ndarray, data: bytes, result: ImagePrediction
) -> dict[str, Any]:
    header = _dicom_header(data)
    out: dict[str, Any] = {
        "probabilities": result.probabilities,
        "prediction": result.prediction,
        "image": {
            "height": int(image.shape[0]),
            "width": int(image.shape[1]),
            "model_input": list(result.pixels.shape),
        },
        "dicom": header,
        "warning": modality_warning(predictor.modality, (header or {}).get("Modality")) or None,
        "explanation": None,
    }
    if result.cam is not None:
        out["explanation"] = Explanation(
            target=result.prediction,
            input_png=_b64png(result.pixels),
            overlay_png=_b64png(predictor.explanation_picture(image, result.cam)),
            degenerate=bool(np.all(np.isnan(result.cam))),
        )
    return out


def pair_images(
    predictor: Predictor, parts: list, answers: list[dict[str, Any]]
) -> list[PairImageOut]:
    """Each of a woman's two images (`parts`: the uploads, `answers`: each alone, as
    `image_answer` gives it) scored against the other with the bundle's bilateral fit."""
    probs = [np.array([[a["probabilities"][c] for c in predictor.classes]]) for a in answers]
    both = [
        predictor.pair_probability(probs[0], probs[1])[0],
        predictor.pair_probability(probs[1], probs[0])[0],
    ]
    return [
        PairImageOut(
            filename=part.filename,
            **{
                k: answer[k]
                for k in ("probabilities", "prediction", "dicom", "warning", "explanation")
            },
            p_bilateral=float(p),
            prediction_bilateral=predictor.bilateral_decision(p),
        )
        for part, answer, p in zip(parts, answers, both, strict=True)
    ]
