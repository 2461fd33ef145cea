"""Uploads read into memory: never spooled to disk (Starlette's own form parser writes files
over 1 MB to a temporary file). How much is read at all is bounded by the app's `BodyLimit`
middleware (413 as soon as the limit is passed, with or without a Content-Length); here the
file itself is held to the limit."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request
from python_multipart.multipart import create_form_parser

from breastcad.serve.errors import ApiError


@dataclass
class Upload:
    """One uploaded file and the form fields sent with it."""

    data: bytes
    filename: str
    fields: dict[str, str] = field(default_factory=dict)


RAW_TYPES = ("image/", "application/dicom", "application/octet-stream")


async def read_upload(request: Request, limit: int) -> Upload:
    """The `file` part of a multipart form, or a raw image body (Content-Type image/* or
    application/dicom), with at most `limit` bytes."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        return await _multipart(request, content_type, limit)
    if content_type.startswith(RAW_TYPES):
        body = await request.body()  # bounded by the app's BodyLimit middleware
        if len(body) > limit:
            raise _too_large(limit)
        name = request.query_params.get("filename", "upload")
        return Upload(body, name)
    raise ApiError(
        415,
        "unsupported_media_type",
        "send the image as multipart/form-data (field 'file') or as the raw body with "
        f"Content-Type image/* or application/dicom, not '{content_type or 'none'}'",
    )


async def read_pair(request: Request, limit: int) -> tuple[Upload, Upload]:
    """The `file` and `other` parts of a multipart form (one woman's two breasts), each with
    at most `limit` bytes."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise ApiError(
            415,
            "unsupported_media_type",
            "send the two images as multipart/form-data (fields 'file' and 'other'), not "
            f"'{content_type or 'none'}'",
        )
    files, fields = await _parts(request, content_type, limit)
    return _one(files, fields, "file", limit), _one(files, fields, "other", limit)


async def _multipart(request: Request, content_type: str, limit: int) -> Upload:
    files, fields = await _parts(request, content_type, limit)
    return _one(files, fields, "file", limit)


def _one(files: list[tuple[str, str, bytes]], fields: dict[str, str], name: str, limit: int):
    uploads = [f for f in files if f[0] == name]
    if not uploads:
        raise ApiError(422, "missing_file", f"the form has no file field named '{name}'")
    if len(uploads) > 1:  # answering for the first alone would look like an answer for all
        raise ApiError(
            422,
            "too_many_files",
            f"the form has {len(uploads)} files named '{name}': one image a request "
            "(a woman's two breasts: /api/v1/predict/pair, fields 'file' and 'other')",
        )
    _, filename, data = uploads[0]
    if len(data) > limit:
        raise _too_large(limit)
    return Upload(data, filename, fields)


async def _parts(
    request: Request, content_type: str, limit: int
) -> tuple[list[tuple[str, str, bytes]], dict[str, str]]:
    """Every file part (field name, file name, bytes) and form field, held in memory."""
    files: list[tuple[str, str, bytes]] = []
    fields: dict[str, str] = {}

    def on_field(f) -> None:
        name = (f.field_name or b"").decode(errors="replace")
        fields[name] = (f.value or b"").decode(errors="replace")

    def on_file(f) -> None:
        f.file_object.seek(0)
        name = (f.field_name or b"").decode(errors="replace")
        filename = (f.file_name or b"upload").decode(errors="replace")
        files.append((name, filename, f.file_object.read()))

    config = {"MAX_MEMORY_FILE_SIZE": limit + 1}  # never spooled to disk
    parser = create_form_parser({"Content-Type": content_type.encode()}, on_field, on_file, config)
    async for chunk in request.stream():  # bounded by the app's BodyLimit middleware
        _parse(parser.write, chunk)
    _parse(parser.finalize)
    return files, fields


def _parse(step, *args) -> None:
    try:
        step(*args)
    except Exception as exc:  # the parser's own errors: a malformed form is the client's
        raise ApiError(400, "bad_form", f"malformed multipart form ({exc})") from exc


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "too_large", f"upload larger than the limit of {limit / 2**20:g} MB")
