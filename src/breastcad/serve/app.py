"""The FastAPI app: the upload page, the REST API and the health check, all predicting through
the one `Predictor`. Built by `create_app(settings)`, never at import time.

Example:
    >>> app = create_app(ServiceSettings(models=["runs/idc/bundle"]))  # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import FileResponse
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool

from breastcad import __version__
from breastcad.config import ServiceSettings
from breastcad.data.imaging import IMAGE_SUFFIXES
from breastcad.data.pairs import breast_of, mismatch
from breastcad.errors import ConfigError, DataError
from breastcad.predict import Predictor
from breastcad.runinfo import private_folder, write_private
from breastcad.serve.answers import (
    bilateral_summary,
    image_answer,
    model_info,
    model_ref,
    pair_images,
    policy_of,
    prepare_upload,
)
from breastcad.serve.errors import ApiError, BodyLimit, install_error_handlers
from breastcad.serve.models import ServedModels
from breastcad.serve.schemas import (
    NOTICE,
    ErrorOut,
    Health,
    ImagePredictionOut,
    ModelInfo,
    PairPredictionOut,
    TabularPredictionOut,
    TabularRequest,
)
from breastcad.serve.uploads import read_pair, read_upload

STATIC = Path(__file__).parent / "static"
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 404, 413, 415, 422)
}


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


def _explanation_asked(query: bool, fields: dict[str, str], settings: ServiceSettings) -> bool:
    """Grad-CAM asked for, by the query or the form's `explain` field; 422 where the server
    has explanations turned off."""
    asked = query or fields.get("explain", "").lower() in ("1", "true", "on")
    if asked and not settings.explain:
        raise ApiError(422, "explain_off", "explanations are turned off on this server")
    return asked


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


router = APIRouter(prefix="/api/v1", dependencies=[Depends(require_key)], responses=ERRORS)


@router.get("/models", response_model=list[ModelInfo])
def list_models(models: ModelsDep) -> list[ModelInfo]:
    """Every served model with its classes, operating point, metrics and model card."""
    return [model_info(k, p) for k, p in models.predictors.items()]


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
        prepare_upload, predictor, upload.data, upload.filename, settings.max_pixels
    )
    prediction = await models.worker.predict(predictor, pixels, explain)
    result = await run_in_threadpool(image_answer, predictor, image, upload.data, prediction)
    return ImagePredictionOut(
        model=model_ref(key, predictor),
        classes=predictor.classes,
        positive_class=predictor.classes[predictor.positive],
        threshold=predictor.threshold,
        operating_point=policy_of(predictor),
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
    fit = await _bilateral_fit_for(key, predictor, first, second)
    if settings.store_uploads is not None:
        for part in (first, second):
            _store(settings.store_uploads, part.data, part.filename)
    prepared = [
        await run_in_threadpool(
            prepare_upload, predictor, part.data, part.filename, settings.max_pixels
        )
        for part in (first, second)
    ]  # both decoded (and checked) before either is run; then one batch for the two
    results = await asyncio.gather(
        *(models.worker.predict(predictor, pixels, explain) for _, pixels in prepared)
    )
    answers = [
        await run_in_threadpool(image_answer, predictor, image, part.data, result)
        for part, (image, _), result in zip((first, second), prepared, results, strict=True)
    ]  # each image alone, as /predict answers it
    how = bilateral_summary(predictor)
    out = pair_images(predictor, [first, second], answers)
    return PairPredictionOut(
        model=model_ref(key, predictor),
        classes=predictor.classes,
        positive_class=predictor.classes[predictor.positive],
        threshold_bilateral=float(fit["threshold"]),
        bilateral_fit=f"{how['probability']}, fitted on {how['chosen_on']} of the training run",
        image=out[0],
        other=out[1],
    )


async def _bilateral_fit_for(key: str, predictor: Predictor, first, second) -> dict[str, Any]:
    """The model's bilateral fit, where it has one and the two uploads are one woman's two
    breasts (as far as they say: DICOM headers, mini-MIAS names); a 422 saying why if not."""
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
    return fit


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
        model=model_ref(key, predictor),
        p_malignant=p,
        prediction="malignant" if p >= threshold else "benign",
        threshold=threshold,
        operating_point=policy_of(predictor),
    )


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
    app.include_router(router)

    @app.get("/healthz", response_model=Health)
    def healthz(models: ModelsDep) -> Health:
        """Liveness: the server is up and holds its verified models."""
        return Health(status="ok", models=len(models.predictors))

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
