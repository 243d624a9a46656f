"""One error shape for every HTTP error: `{"detail": message, "error": kind}`.

The framework's own errors (validation, 404/405/413, malformed forms, too many files) get it from the
handlers installed here, as do the errors the security middleware answers with. Messages never carry
absolute server paths: `redact_paths` reduces each to its last component.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route


class ErrorOut(BaseModel):
    detail: str
    error: str


# status -> kind, for errors that do not come from a DistilshotError
KINDS = {
    400: "BadRequest",
    401: "NotAuthenticated",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    408: "RequestTimeout",
    413: "RequestTooLarge",
    422: "ValidationError",
    429: "TooManyRequests",
    500: "InternalError",
}

DESCRIPTIONS = {
    400: "bad request (also: a Host that is not allowed, a malformed form, too many files)",
    401: "no API key, or not a valid one",
    403: "the key lacks the scope, or a state-changing request from another site",
    404: "no such class or shot",
    405: "method not allowed (the Allow header lists the allowed ones)",
    408: "the request body did not arrive in time",
    409: "name taken, or a store of another model",
    413: "request body larger than the limit",
    422: "an image that cannot be used, or invalid fields",
    429: "too many writes; retry after Retry-After seconds",
    503: "the store is busy; retry",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries declaring the error shape for `statuses`."""
    return {s: {"model": ErrorOut, "description": DESCRIPTIONS[s]} for s in statuses}


def error_response(
    status: int, detail: str, kind: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"detail": detail, "error": kind or KINDS.get(status, "HTTPError")},
        status_code=status,
        headers=headers,
    )


# an absolute POSIX path at the start, after a space or "(": no spaces or quotes, and not ending in the
# punctuation of the sentence around it
_ABSOLUTE = re.compile(r"(?:(?<=\s)|(?<=\()|^)/[^\s'\"]*[^\s'\".,;:)]")


def redact_paths(message: str, known: Iterable[Path] = ()) -> str:
    """`message` with every absolute path replaced by its last component. `known` paths are replaced
    first and whole, so that ones with spaces do not leave their head behind."""
    for path in sorted((str(p) for p in known), key=len, reverse=True):
        if path.startswith("/"):
            message = message.replace(path, Path(path).name)
    return _ABSOLUTE.sub(lambda m: Path(m.group(0)).name, message)


def _validation_message(error: RequestValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item.get("loc", ()) if p != "body") or "request"
        parts.append(f"{where}: {item.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _allowed_methods(request: Request) -> set[str]:
    """Every method some route of this app accepts at the request's path (Starlette's 405 names only the
    first route that matched the path)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.methods and route.matches(request.scope)[0] != Match.NONE:
            methods |= route.methods
    return methods


def install_error_handlers(app: FastAPI) -> None:
    """Framework errors in the uniform shape: validation errors, HTTP exceptions, and anything
    unexpected (a 500 that says nothing about the server)."""

    @app.exception_handler(RequestValidationError)
    def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(422, redact_paths(_validation_message(error)))

    @app.exception_handler(StarletteHTTPException)
    def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        headers = dict(error.headers or {})
        if error.status_code == 405:
            headers["Allow"] = ", ".join(sorted(_allowed_methods(request)))
        detail = error.detail if isinstance(error.detail, str) else KINDS.get(error.status_code, "error")
        return error_response(error.status_code, redact_paths(detail), headers=headers)

    @app.exception_handler(Exception)
    def _unexpected(request: Request, error: Exception) -> JSONResponse:
        return error_response(500, "internal server error")
