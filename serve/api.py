"""The HTTP API (version 1): FastAPI over one shared FewShotClassifier.

Every route is a plain function run in the server's thread pool, so concurrent requests share the one
engine through the classifier's Batcher. The routes come in groups (routes_service.py, routes_classes.py,
routes_classify.py, routes_store.py); api_access.py says who may call each, api_schemas.py what they
answer. Request bodies are limited before they are read (`BodyLimits`: the Content-Length is checked up
front, a streamed body is cut off at the limit, and the whole body must arrive in time); each image is
further checked by `load_image` (bytes, pixels, format, size). Keys, scopes, the Host allow-list, the
cross-site check and the write rate limit are in `security.py`. Errors come back as
`{"detail": message, "error": kind}` with the status the kind calls for, name no server path, and
change nothing.

The docs page `/v1/docs` is Swagger UI served from the swagger-ui-bundle package, so it works offline;
every request is logged by access_log.py.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from distilshot import __version__
from distilshot.errors import DistilshotError, ImageError
from distilshot.serve.access_log import AccessLog
from distilshot.serve.api_access import Access
from distilshot.serve.api_schemas import MAX_FILES
from distilshot.serve.classifier import FewShotClassifier
from distilshot.serve.http_errors import error_response, error_responses, install_error_handlers, redact_paths
from distilshot.serve.routes_classes import add_class_routes
from distilshot.serve.routes_classify import add_classify_route
from distilshot.serve.routes_service import add_service_routes
from distilshot.serve.routes_store import IMPORT_PATH, add_store_routes
from distilshot.serve.security import BodyLimits, Security, SiteGuard
from distilshot.serve.store import DuplicateClassError, ModelMismatchError, StoreBusyError, UnknownClassError

API_PREFIX = "/v1"
MAX_REQUEST_BYTES = 64 * 1024 * 1024  # one request: several images of up to MAX_BYTES each
MAX_IMPORT_BYTES = 1024 * 1024 * 1024  # an exported store file

# error kind -> HTTP status; any other DistilshotError is a 400
STATUS = {
    UnknownClassError: 404,
    DuplicateClassError: 409,
    ModelMismatchError: 409,
    StoreBusyError: 503,
    ImageError: 422,
}


def create_app(
    classifier: FewShotClassifier,
    *,
    home: str = f"{API_PREFIX}/docs",
    max_request_bytes: int = MAX_REQUEST_BYTES,
    max_import_bytes: int = MAX_IMPORT_BYTES,
    security: Security | None = None,
) -> FastAPI:
    """The API app around `classifier` (which the caller keeps and closes); `/` redirects to `home`.
    `security` defaults to a loopback server without keys (open) that still refuses other Host names
    and cross-site writes."""
    security = security or Security()
    app = FastAPI(
        title="distilshot",
        version=__version__,
        summary="Few-shot image classification: register classes from a few images, classify queries.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,  # add_docs serves the page without a CDN
        redoc_url=None,
        form_limits={"max_files": MAX_FILES, "max_fields": 16},
        responses=error_responses(400, 422, 503),
    )
    import_path = f"{API_PREFIX}{IMPORT_PATH}"
    install_guards(app, security, lambda path: max_import_bytes if path == import_path else max_request_bytes)
    install_error_handlers(app)
    install_distilshot_errors(app, classifier)
    access = Access.of(security)
    for add_routes in (add_service_routes, add_class_routes, add_classify_route, add_store_routes):
        add_routes(app, API_PREFIX, classifier, access)
    add_docs(app, API_PREFIX)
    app.add_middleware(AccessLog)  # outermost: refusals by the guards are logged too

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(home)

    return app


def add_docs(app: FastAPI, prefix: str) -> None:
    """Swagger UI at `prefix`/docs, its script, style and icon from swagger-ui-bundle's files (the http
    extra) under `prefix`/docs/assets."""
    from swagger_ui_bundle import swagger_ui_path

    assets = f"{prefix}/docs/assets"
    app.mount(assets, StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get(f"{prefix}/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=f"{prefix}/openapi.json",
            title="distilshot API",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from validator.swagger.io
        )


def install_guards(app: FastAPI, security: Security, limit_for: Callable[[str], int]) -> None:
    """The security middleware, innermost first: the site checks run before a byte of the body is read."""
    app.add_middleware(BodyLimits, limit_for=limit_for, timeout_s=security.body_timeout_s)
    # always installed, so that the mounted demo does not add Gradio's own CORS headers
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(security.cors_origins),
        allow_methods=["GET", "POST", "DELETE"],
        allow_headers=["Authorization", "Content-Type"],
    )
    app.add_middleware(SiteGuard, security=security)


def install_distilshot_errors(app: FastAPI, classifier: FewShotClassifier) -> None:
    """The project's errors with the status their kind calls for, the classifier's paths redacted."""
    known_paths = [p for p in (classifier.store.path, classifier.bundle_dir) if p is not None]

    @app.exception_handler(DistilshotError)
    def _error(request: Request, error: DistilshotError) -> JSONResponse:
        status = next((s for kind, s in STATUS.items() if isinstance(error, kind)), 400)
        return error_response(status, redact_paths(str(error), known_paths), type(error).__name__)
