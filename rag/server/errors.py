"""One error shape for every HTTP route: `{"error": {"code", "message", "field"}}` with the right status.

Exception handlers are registered once on the app (see `install_error_handlers`), so routes just
raise: ApiError (explicit status), RequestValidationError (422 naming the field), AccessDenied (403),
ConfigError / RagError (400), anything else (500, no traceback or internals in the body).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rag.access import AccessDenied
from rag.errors import RagError

log = logging.getLogger("rag.server")


class ApiError(Exception):
    """An error with an HTTP status, a stable code, a message and the request field it concerns."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message, self.field)


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field}}


def error_response(status: int, code: str, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message, field), status_code=status, headers=headers)


def exception_to_error(exc: BaseException) -> ApiError:
    """The ApiError an exception maps to (also used inside streams, where handlers do not run)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, AccessDenied):
        return ApiError(403, "forbidden", str(exc))
    if isinstance(exc, RagError):
        text = str(exc)
        field = "question" if "max_question_chars" in text or text.startswith("question ") else None
        if field is None and text.startswith("mode "):
            field = "mode"
        return ApiError(400, "bad_request", text, field=field)
    log.error("internal error: %s: %s", type(exc).__name__, exc, exc_info=exc)
    return ApiError(500, "internal_error", "internal server error; details are in the server log")


def _field_of(loc: tuple | list) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "form")]
    return ".".join(parts) or ("body" if loc and loc[0] == "body" else None)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every failure into the one error shape."""

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.field, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        if first.get("type") == "json_invalid":
            return error_response(422, "invalid_json", f"the request body is not valid JSON: {first.get('msg', '')}",
                                  "body")
        field = _field_of(first.get("loc", ()))
        message = first.get("msg", "invalid request")
        if field:
            message = f"{field}: {message}"
        # Echoing a 10 MB input back would defeat the size limit: only the message, never the value.
        return error_response(422, "invalid_request", message[:500], field)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(exc.status_code, "http_error")
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        return error_response(exc.status_code, code, detail, None, getattr(exc, "headers", None))

    @app.exception_handler(AccessDenied)
    async def _denied(_request: Request, exc: AccessDenied) -> JSONResponse:
        err = exception_to_error(exc)
        return error_response(err.status, err.code, err.message, err.field)

    @app.exception_handler(RagError)
    async def _rag(_request: Request, exc: RagError) -> JSONResponse:
        err = exception_to_error(exc)
        return error_response(err.status, err.code, err.message, err.field)

    @app.exception_handler(Exception)
    async def _internal(_request: Request, exc: Exception) -> JSONResponse:
        err = exception_to_error(exc)
        return error_response(err.status, err.code, err.message, err.field)
