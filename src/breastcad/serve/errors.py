"""Every error the service answers is JSON `{"detail": ..., "code": ...}` with a 4xx status for
bad input; an unexpected failure is a 500 that names no file, patient or traceback."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from breastcad.errors import BreastcadError, BundleError, ConfigError, DataError

log = logging.getLogger("breastcad.serve")

DATA_STATUS = {"invalid": 400, "unsupported": 415, "too_large": 413, "too_small": 422}


class ApiError(Exception):
    """An answer to bad input: HTTP status, a stable code, and a message naming the problem."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


def _json(status: int, code: str, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "code": code}, status_code=status, headers=headers)


class BodyLimit:
    """ASGI middleware: no request body (JSON included) larger than `limit` bytes is read into
    memory; a declared length over it is answered 413 at once, a chunked body when it passes."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await _json(413, "too_large", self.message)(scope, receive, send)
            return
        received = 0

        async def limited():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise StarletteHTTPException(413, self.message)
            return message

        await self.app(scope, limited, send)

    @property
    def message(self) -> str:
        return f"request body larger than the limit of {self.limit / 2**20:g} MB"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _json(exc.status, exc.code, exc.detail)

    @app.exception_handler(DataError)
    async def data_error(request: Request, exc: DataError) -> JSONResponse:
        status = DATA_STATUS.get(exc.kind, 400)
        return _json(status, exc.kind, str(exc))

    @app.exception_handler(BreastcadError)
    async def breastcad_error(request: Request, exc: BreastcadError) -> JSONResponse:
        status = 422 if isinstance(exc, ConfigError | BundleError) else 400
        return _json(status, "invalid", str(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return _json(422, "invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}
        return _json(
            exc.status_code,
            code.get(exc.status_code, "http_error"),
            str(exc.detail),
            getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error(
            "internal error on %s %s: %s", request.method, request.url.path, type(exc).__name__
        )
        return _json(500, "internal_error", "internal error; the server log has its type")
