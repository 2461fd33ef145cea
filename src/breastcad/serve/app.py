"""The FastAPI app: the upload page, the REST API and the health check, all predicting through
the one `Predictor`. Built by `create_app(settings)`, never at import time.

Example:
    >>> app = create_app(ServiceSettings(models=["runs/idc/bundle"]))  # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import secrets
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import FileResponse
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool

from breastcad import __version__
from breastcad.bundle import load_bundle
from breastcad.config import ServiceSettings
from breastcad.data.imaging import IMAGE_SUFFIXES, has_dicom_preamble
from breastcad.data.pairs import breast_of, mismatch
from breastcad.errors import ConfigError, DataError
from breastcad.predict import ImagePrediction, Predictor
from breastcad.runinfo import private_folder, write_private
from breastcad.serve.errors import ApiError, BodyLimit, install_error_handlers
from breastcad.serve.schemas import (
    NOTICE,
    ErrorOut,
    Explanation,
    Health,
    ImagePredictionOut,
    ModelInfo,
    ModelRef,
    PairImageOut,
    PairPredictionOut,
    TabularPredictionOut,
    TabularRequest,
)
from breastcad.serve.uploads import read_pair, read_upload
from breastcad.serve.worker import InferenceWorker

STATIC = Path(__file__).parent / "static"
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 404, 413, 415, 422)
}


def _loaded(path: Path, runtime: str, device: str) -> Predictor:
    """A bundle's predictor with its memory need per image worked out (a second or two for
    the larger backbones), so that no request waits for it. `device` is for image networks; a
    tabular model runs on the CPU."""
    bundle = load_bundle(path)
    predictor = Predictor(bundle, runtime, device if bundle.kind == "image" else "cpu")
    if predictor.kind == "image":
        _ = predictor.bytes_per_image
    return predictor


class ServedModels:
    """The predictors a server holds, by model id, and the one inference thread that loads
    and runs them all (`InferenceWorker`; concurrent requests are batched per model)."""

    def __init__(self, predictors: list[Predictor], worker: InferenceWorker | None = None) -> None:
        self.predictors: dict[str, Predictor] = {}
        for p in predictors:  # one id, one model: a second would silently replace the first
            twin = self.predictors.setdefault(p.bundle.model_id, p)
            if twin is not p:
                raise ConfigError(
                    f"{twin.bundle.path} and {p.bundle.path} hold the same model files (id "
                    f"{p.bundle.model_id}), so requests could not tell them apart; serve one"
                )
        self.worker = worker or InferenceWorker()

    @classmethod
    def load(cls, paths: list[Path], runtime: str, device: str = "auto") -> ServedModels:
        """Load bundles on the inference thread (see `serve.worker` for why)."""
        worker = InferenceWorker()
        try:
            loaded = [worker.run(lambda p=p: _loaded(p, runtime, device)) for p in paths]
            return cls(loaded, worker)
        except Exception:
            worker.close()  # no thread left behind by a refused start
            raise

    def close(self) -> None:
        self.worker.close()

    def get(self, ref: str | None, kind: str) -> tuple[str, Predictor]:
        """A model by id or name; with no `ref`, the only model of this kind."""
        candidates = {k: p for k, p in self.predictors.items() if p.kind == kind}
        if ref is None:
            if len(candidates) == 1:
                return next(iter(candidates.items()))
            if not candidates:
                raise ApiError(422, "no_model", f"no {kind} model is served here")
            raise ApiError(
                422,
                "choose_model",
                f"several {kind} models are served; choose one with model=: "
                + ", ".join(candidates),
            )
        for key, predictor in self.predictors.items():
            if ref in (key, predictor.bundle.manifest["model"]["name"]):
                if predictor.kind != kind:
                    raise ApiError(
                        422, "wrong_kind", f"model {key} is a {predictor.kind} model, not {kind}"
                    )
                return key, predictor
        raise ApiError(
            404, "unknown_model", f"no model '{ref}'; served: {', '.join(self.predictors)}"
        )


def get_models(request: Request) -> ServedModels:
    """The served models (a dependency: tests replace it with `app.dependency_overrides`)."""
    return request.app.state.models


def get_settings(request: Request) -> ServiceSettings:
    return request.app.state.settings


ModelsDep = Annotated[ServedModels, Depends(get_models)]
SettingsDep = Annotated[ServiceSettings, Depends(get_settings)]
_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="When configured.")


def require_key(settings: SettingsDep, key: Annotated[str | None, Depends(_key_header)]) -> None:
    """Off unless `api_key` is set; then every /api route needs the header X-API-Key."""
    if settings.api_key is None:
        return
    if key is None or not hmac.compare_digest(key.encode(), settings.api_key.encode()):
        raise ApiError(401, "unauthorized", "missing or wrong X-API-Key header")


def _ref(key: str, predictor: Predictor) -> ModelRef:
    manifest = predictor.bundle.manifest
    return ModelRef(
        id=key,
        name=manifest["model"]["name"],
        version=manifest["files_digest"][:12],
        runtime=predictor.runtime,
    )


def _policy(predictor: Predictor) -> str | None:
    return predictor.bundle.manifest.get("threshold", {}).get("policy")


def _info(key: str, predictor: Predictor) -> ModelInfo:
    m = predictor.bundle.manifest
    image = predictor.kind == "image"
    metrics, evaluation = _metrics(m.get("metrics", {}))
    return ModelInfo(
        id=key,
        name=m["model"]["name"],
        kind=predictor.kind,
        modality=m.get("modality", None if image else "tabular"),
        classes=predictor.classes,
        positive_class=predictor.classes[predictor.positive] if image else "malignant",
        threshold=predictor.threshold,
        operating_point=_policy(predictor),
        input=m["preprocessing"] if image else {"features": predictor.bundle.feature_names},
        init=m["model"].get("init"),
        test_time_augmentation=predictor.tta if image else None,
        bilateral=_bilateral(predictor) if image else None,
        trained_on=m.get("trained_on") or m.get("training_data"),
        metrics=metrics,
        evaluation=evaluation,
        runtime=predictor.runtime,
        intended_use=m.get("intended_use", NOTICE),
    )


def _explanation_asked(query: bool, fields: dict[str, str], settings: ServiceSettings) -> bool:
    """Grad-CAM asked for, by the query or the form's `explain` field; 422 where the server
    has explanations turned off."""
    asked = query or fields.get("explain", "").lower() in ("1", "true", "on")
    if asked and not settings.explain:
        raise ApiError(422, "explain_off", "explanations are turned off on this server")
    return asked


def _bilateral(predictor: Predictor) -> dict[str, Any] | None:
    fit = predictor.bilateral
    if fit is None:
        return None
    return {
        "threshold": float(fit["threshold"]),
        "chosen_on": fit.get("chosen_on", "the validation part"),
        "probability": fit.get("probability", "logistic regression"),
    }


def _metrics(raw: dict[str, Any]) -> tuple[dict[str, Any], str]:
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


def _prepare(predictor: Predictor, data: bytes, name: str, limit: int) -> tuple[Any, Any]:
    from breastcad.data.imaging import decode_image

    image = decode_image(data, name, limit)
    return image, predictor.prepare(image)


def _image_answer(
    predictor: Predictor, image: np.ndarray, data: bytes, result: ImagePrediction
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "probabilities": result.probabilities,
        "prediction": result.prediction,
        "image": {
            "height": int(image.shape[0]),
            "width": int(image.shape[1]),
            "model_input": list(result.pixels.shape),
        },
        "dicom": _dicom_header(data),
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


def _upload_body(files: list[str], raw: bool) -> dict[str, Any]:
    """The OpenAPI request body of an upload endpoint: a multipart form with these file
    fields and an optional `model`, and with `raw`, the image itself as the body."""
    binary = {"type": "string", "format": "binary"}
    form = {
        "type": "object",
        "required": files,
        "properties": {**{f: binary for f in files}, "model": {"type": "string"}},
    }
    content: dict[str, Any] = {"multipart/form-data": {"schema": form}}
    if raw:
        content |= {"image/*": {"schema": binary}, "application/dicom": {"schema": binary}}
    return {"requestBody": {"required": True, "content": content}}


def api_router() -> APIRouter:
    router = APIRouter(prefix="/api/v1", dependencies=[Depends(require_key)], responses=ERRORS)

    @router.get("/models", response_model=list[ModelInfo])
    def list_models(models: ModelsDep) -> list[ModelInfo]:
        """Every served model with its classes, operating point, metrics and model card."""
        return [_info(k, p) for k, p in models.predictors.items()]

    @router.post(
        "/predict",
        response_model=ImagePredictionOut,
        openapi_extra=_upload_body(["file"], raw=True),
    )
    async def predict_image(
        request: Request,
        models: ModelsDep,
        settings: SettingsDep,
        model: Annotated[str | None, Query(description="Model id or name.")] = None,
        explain: Annotated[bool, Query(description="Add a Grad-CAM overlay.")] = False,
    ) -> ImagePredictionOut:
        """Classify one image (PNG, JPEG, PGM, TIFF, BMP or DICOM): multipart field `file`, or
        the raw body. Held in memory only; stored only when the server is configured to."""
        upload = await read_upload(request, settings.max_upload_bytes)
        key, predictor = models.get(model or upload.fields.get("model") or None, "image")
        explain = _explanation_asked(explain, upload.fields, settings)
        if settings.store_uploads is not None:
            _store(settings.store_uploads, upload.data, upload.filename)
        image, pixels = await run_in_threadpool(
            _prepare, predictor, upload.data, upload.filename, settings.max_pixels
        )
        prediction = await models.worker.predict(predictor, pixels, explain)
        result = await run_in_threadpool(_image_answer, predictor, image, upload.data, prediction)
        return ImagePredictionOut(
            model=_ref(key, predictor),
            classes=predictor.classes,
            positive_class=predictor.classes[predictor.positive],
            threshold=predictor.threshold,
            operating_point=_policy(predictor),
            **result,
        )

    @router.post(
        "/predict/pair",
        response_model=PairPredictionOut,
        openapi_extra=_upload_body(["file", "other"], raw=False),
    )
    async def predict_pair(
        request: Request,
        models: ModelsDep,
        settings: SettingsDep,
        model: Annotated[str | None, Query(description="Model id or name.")] = None,
        explain: Annotated[bool, Query(description="Add each image's Grad-CAM overlay.")] = False,
    ) -> PairPredictionOut:
        """One woman's two breasts (multipart fields `file` and `other`): each image alone,
        and each against the other with the bilateral fit of the model's training run (models
        trained on data that pairs the breasts, such as mini-MIAS). Held in memory only."""
        first, second = await read_pair(request, settings.max_upload_bytes)
        key, predictor = models.get(model or first.fields.get("model") or None, "image")
        explain = _explanation_asked(explain, first.fields, settings)
        fit = predictor.bilateral
        if fit is None:
            raise ApiError(
                422,
                "no_bilateral_fit",
                f"model '{key}' has no bilateral fit (its training run had no validation "
                "images with the other breast of the same woman); use /api/v1/predict",
            )
        not_a_pair = await run_in_threadpool(
            lambda: mismatch(*(breast_of(Path(u.filename), u.data) for u in (first, second)))
        )
        if not_a_pair:
            raise ApiError(422, "not_a_pair", f"not one woman's two breasts: {not_a_pair}")
        if settings.store_uploads is not None:
            for part in (first, second):
                _store(settings.store_uploads, part.data, part.filename)
        prepared = [
            await run_in_threadpool(
                _prepare, predictor, part.data, part.filename, settings.max_pixels
            )
            for part in (first, second)
        ]  # both decoded (and checked) before either is run; then one batch for the two
        results = await asyncio.gather(
            *(models.worker.predict(predictor, pixels, explain) for _, pixels in prepared)
        )
        answers = [
            await run_in_threadpool(_image_answer, predictor, image, part.data, result)
            for part, (image, _), result in zip((first, second), prepared, results, strict=True)
        ]  # each image alone, as /predict answers it
        how = _bilateral(predictor)
        probs = [np.array([[a["probabilities"][c] for c in predictor.classes]]) for a in answers]
        both = [predictor.pair_probability(probs[0], probs[1])[0]]
        both.append(predictor.pair_probability(probs[1], probs[0])[0])
        out = [
            PairImageOut(
                filename=part.filename,
                **{k: answer[k] for k in ("probabilities", "prediction", "dicom", "explanation")},
                p_bilateral=float(p),
                prediction_bilateral=predictor.bilateral_decision(p),
            )
            for part, answer, p in zip((first, second), answers, both, strict=True)
        ]
        return PairPredictionOut(
            model=_ref(key, predictor),
            classes=predictor.classes,
            positive_class=predictor.classes[predictor.positive],
            threshold_bilateral=float(fit["threshold"]),
            bilateral_fit=f"{how['probability']}, fitted on {how['chosen_on']} of the training run",
            image=out[0],
            other=out[1],
        )

    @router.post("/predict/tabular", response_model=TabularPredictionOut)
    async def predict_tabular(body: TabularRequest, models: ModelsDep) -> TabularPredictionOut:
        """Classify one WDBC sample from its 30 named features (JSON)."""
        key, predictor = models.get(body.model, "tabular")
        frame = pd.DataFrame([body.features])
        names = set(predictor.bundle.feature_names)
        unknown = sorted(c for c in frame.columns if _canonical(c) not in names)
        if unknown:
            raise ApiError(422, "unknown_features", "unknown features: " + ", ".join(unknown[:8]))
        try:
            X = predictor.features_from_frame(frame, "request")
        except DataError as exc:
            raise ApiError(422, "wrong_features", exc.problem) from exc
        p = float((await models.worker.call(lambda: predictor.predict_proba(X)))[0])
        threshold = predictor.threshold
        return TabularPredictionOut(
            model=_ref(key, predictor),
            p_malignant=p,
            prediction="malignant" if p >= threshold else "benign",
            threshold=threshold,
            operating_point=_policy(predictor),
        )

    return router


def _canonical(name: str) -> str:
    from breastcad.data.tabular import canonical_feature_name

    return canonical_feature_name(str(name))


def _store(folder: Path, data: bytes, filename: str) -> None:
    """Keep an upload under a random name (the client's file name can identify a patient)."""
    private_folder(folder)
    suffix = Path(filename).suffix.lower()
    suffix = suffix if suffix in IMAGE_SUFFIXES else ""
    write_private(folder / f"{secrets.token_hex(16)}{suffix}", data)


def _writable(folder: Path) -> None:
    """`--store-uploads` checked at start: a folder that cannot be written would answer every
    upload with a 500."""
    try:
        private_folder(folder)
        probe = folder / f".breastcad-write-check-{secrets.token_hex(4)}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"--store-uploads {folder}: cannot be written ({exc.strerror or exc})"
        ) from None


def create_app(settings: ServiceSettings, predictors: list[Predictor] | None = None) -> FastAPI:
    """The app for `settings`; `predictors` replaces loading `settings.models` (tests)."""
    if settings.store_uploads is not None:
        _writable(settings.store_uploads)
    if predictors is None:
        models = ServedModels.load(settings.models, settings.runtime, settings.device)
    else:
        models = ServedModels(predictors)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        models.close()

    # /docs (Swagger UI) from files shipped in the fastapi-offline package, not a CDN: it
    # works on a network without internet and asks nothing of a third party. No /redoc: its
    # bundle still fetches a logo from cdn.redoc.ly.
    app = FastAPIOffline(
        redoc_url=None,
        lifespan=lifespan,
        title="breastcad",
        version=__version__,
        description="Computer-aided diagnosis of breast cancer. " + NOTICE,
    )
    app.state.settings = settings
    app.state.models = models
    install_error_handlers(app)
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes + 64 * 1024)  # + form overhead
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["X-API-Key", "Content-Type"],
        )
    app.include_router(api_router())

    @app.get("/healthz", response_model=Health)
    def healthz(models: ModelsDep) -> Health:
        """Liveness: the server is up and holds its verified models."""
        return Health(status="ok", models=len(models.predictors))

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
