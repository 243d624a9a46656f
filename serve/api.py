"""The HTTP API (version 1): FastAPI over one shared FewShotClassifier.

Every route is a plain function run in the server's thread pool, so concurrent requests share the one
engine through the classifier's Batcher. Request bodies are limited before they are read (`BodyLimits`:
the Content-Length is checked up front, a streamed body is cut off at the limit, and the whole body must
arrive in time); each image is further checked by `load_image` (bytes, pixels, format, size). Keys,
scopes, the Host allow-list, the cross-site check and the write rate limit are in `security.py`. Errors
come back as `{"detail": message, "error": kind}` with the status the kind calls for, name no server
path, and change nothing.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from distilshot import __version__
from distilshot.errors import DistilshotError, ImageError
from distilshot.serve.classifier import FewShotClassifier
from distilshot.serve.http_errors import error_response, error_responses, install_error_handlers, redact_paths
from distilshot.serve.images import MAX_BYTES
from distilshot.serve.security import BodyLimits, Security, SiteGuard, access_dependencies
from distilshot.serve.store import (
    ClassInfo,
    DuplicateClassError,
    ModelMismatchError,
    StoreBusyError,
    UnknownClassError,
)

API_PREFIX = "/v1"
MAX_REQUEST_BYTES = 64 * 1024 * 1024  # one request: several images of up to MAX_BYTES each
MAX_IMPORT_BYTES = 1024 * 1024 * 1024  # an exported store file
MAX_FILES = 256  # images in one request
ShotId = Annotated[int, PathParam(ge=1, le=2**63 - 1, description="a shot id (SQLite rowid)")]

# error kind -> HTTP status; any other DistilshotError is a 400
STATUS = {
    UnknownClassError: 404,
    DuplicateClassError: 409,
    ModelMismatchError: 409,
    StoreBusyError: 503,
    ImageError: 422,
}


class ClassOut(BaseModel):
    name: str
    shots: int = Field(description="number of support images")
    created: str


class ShotOut(BaseModel):
    id: int
    source: str = Field(description="file name the image was uploaded with")
    created: str


class ClassDetail(ClassOut):
    shot_list: list[ShotOut]


class Ranked(BaseModel):
    label: str
    score: float = Field(description="softmax probability over the registered classes")
    logit: float = Field(description="the head's logit; compared with the rejection threshold")
    shot: int | None = Field(None, description="id of this class's support shot nearest to the query")


class PredictionOut(BaseModel):
    image: str
    label: str | None = Field(description='the best class, or null for "unknown"')
    unknown: bool = Field(description="the best logit is below the rejection threshold")
    threshold: float | None = Field(description="the threshold applied (null: the bundle has none)")
    top_k: list[Ranked]


class ClassifyOut(BaseModel):
    predictions: list[PredictionOut]


class HealthOut(BaseModel):
    status: str
    version: str
    classes: int
    fingerprint: str


class Removed(BaseModel):
    removed: str


def _class_out(info: ClassInfo) -> ClassOut:
    return ClassOut(name=info.name, shots=info.shots, created=info.created)


def _read_uploads(files: list[UploadFile]) -> tuple[list[bytes], list[str]]:
    """The bytes and names of uploaded images. Starlette has spooled each to memory or disk already,
    within the request limit; reading stops one byte past the per-image limit, which load_image reports."""
    if len(files) > MAX_FILES:
        raise DistilshotError(f"{len(files)} images in one request; the limit is {MAX_FILES}")
    datas, names = [], []
    for index, upload in enumerate(files):
        names.append(Path(upload.filename).name if upload.filename else f"image {index + 1}")
        datas.append(upload.file.read(MAX_BYTES + 1))
    return datas, names


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
    import_path = f"{API_PREFIX}/store/import"
    app = FastAPI(
        title="distilshot",
        version=__version__,
        summary="Few-shot image classification: register classes from a few images, classify queries.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
        form_limits={"max_files": MAX_FILES, "max_fields": 16},
        responses=error_responses(400, 422, 503),
    )
    # innermost first: the site checks run before a byte of the body is read
    app.add_middleware(
        BodyLimits,
        limit_for=lambda path: max_import_bytes if path == import_path else max_request_bytes,
        timeout_s=security.body_timeout_s,
    )
    # always installed, so that the mounted demo does not add Gradio's own CORS headers
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(security.cors_origins),
        allow_methods=["GET", "POST", "DELETE"],
        allow_headers=["Authorization", "Content-Type"],
    )
    app.add_middleware(SiteGuard, security=security)
    install_error_handlers(app)
    known_paths = [p for p in (classifier.store.path, classifier.bundle_dir) if p is not None]

    @app.exception_handler(DistilshotError)
    def _error(request: Request, error: DistilshotError) -> JSONResponse:
        status = next((s for kind, s in STATUS.items() if isinstance(error, kind)), 400)
        return error_response(status, redact_paths(str(error), known_paths), type(error).__name__)

    read, admin, write = access_dependencies(security)
    # error statuses for the OpenAPI document: a cross-site write is a 403 with or without keys
    auth = (401, 403) if security.keys is not None else ()
    writes = (*auth, 403, 429) if security.writes_per_minute is not None else (*auth, 403)
    body = (408, 413)
    reading, writing = [Depends(read)], [Depends(write)]
    v1 = f"{API_PREFIX}"

    @app.get(f"{v1}/health", tags=["service"])
    def health() -> HealthOut:
        """Liveness: the model is loaded and the store answers."""
        return HealthOut(
            status="ok",
            version=__version__,
            classes=len(classifier.classes()),
            fingerprint=classifier.store.fingerprint,
        )

    @app.get(f"{v1}/model", tags=["service"], dependencies=reading, responses=error_responses(*auth))
    def model() -> dict[str, Any]:
        """The model card: method, backbone, dataset, accuracy with its protocol, fingerprint, engine,
        preprocessing and the calibrated rejection threshold. Bundle and store by name, not path."""
        info = classifier.info()
        info["bundle"] = classifier.bundle_dir.name
        info["store"] = None if classifier.store.path is None else classifier.store.path.name
        return info

    @app.get(f"{v1}/classes", tags=["classes"], dependencies=reading, responses=error_responses(*auth))
    def list_classes() -> list[ClassOut]:
        """Registered classes sorted by name."""
        return [_class_out(c) for c in classifier.classes()]

    @app.post(
        f"{v1}/classes",
        status_code=201,
        tags=["classes"],
        dependencies=writing,
        responses=error_responses(*writes, 409, *body),
    )
    def register(
        name: Annotated[str, Form(min_length=1, description="name of the new class")],
        images: Annotated[list[UploadFile], File(min_length=1, description="its support images")],
    ) -> ClassOut:
        """Registers a new class from uploaded support images (multipart). A bad image or name stores
        nothing."""
        datas, names = _read_uploads(images)
        return _class_out(classifier.register(name, datas, names=names))

    @app.get(
        f"{v1}/classes/{{name}}",
        tags=["classes"],
        dependencies=reading,
        responses=error_responses(*auth, 404),
    )
    def get_class(name: str) -> ClassDetail:
        """A class with its support shots."""
        shots = classifier.shots(name)  # a class is created with its first shots, and keeps at least one
        shot_list = [ShotOut(id=s.id, source=s.source, created=s.created) for s in shots]
        return ClassDetail(name=name, shots=len(shots), created=shots[0].created, shot_list=shot_list)

    @app.delete(
        f"{v1}/classes/{{name}}",
        tags=["classes"],
        dependencies=writing,
        responses=error_responses(*writes, 404),
    )
    def remove(name: str) -> Removed:
        """Removes a class and its support images."""
        classifier.remove(name)
        return Removed(removed=name)

    @app.post(
        f"{v1}/classes/{{name}}/shots",
        tags=["classes"],
        dependencies=writing,
        responses=error_responses(*writes, 404, *body),
    )
    def add_shots(
        name: str, images: Annotated[list[UploadFile], File(min_length=1, description="more support images")]
    ) -> ClassOut:
        """Adds support images to a class."""
        datas, names = _read_uploads(images)
        return _class_out(classifier.add_shots(name, datas, names=names))

    @app.delete(
        f"{v1}/classes/{{name}}/shots/{{shot_id}}",
        tags=["classes"],
        dependencies=writing,
        responses=error_responses(*writes, 404),
    )
    def remove_shot(name: str, shot_id: ShotId) -> ClassOut:
        """Removes one support image (not a class's last: remove the class instead)."""
        return _class_out(classifier.remove_shot(name, shot_id))

    @app.get(
        f"{v1}/classes/{{name}}/shots/{{shot_id}}/image",
        tags=["classes"],
        response_class=Response,
        dependencies=reading,
        responses={200: {"content": {"image/png": {}}}, **error_responses(*auth, 404)},
    )
    def shot_image(name: str, shot_id: ShotId) -> Response:
        """The stored copy of a support image (PNG, upright, at most 256 px)."""
        return Response(classifier.thumbnail(name, shot_id), media_type="image/png")

    @app.post(
        f"{v1}/classify",
        tags=["classify"],
        dependencies=reading,
        responses=error_responses(*auth, 403, 409, *body),
    )
    def classify(
        images: Annotated[list[UploadFile], File(min_length=1, description="one or more query images")],
        top_k: Annotated[int, Query(ge=1, le=1000, description="classes to return per image")] = 5,
        threshold: Annotated[
            float | None, Query(description="rejection threshold on the logit; default: the bundle's")
        ] = None,
        nearest: Annotated[
            bool, Query(description="name each class's support shot nearest to the query")
        ] = False,
        augment: Annotated[
            bool, Query(description="complete each class with the bundle's generated features")
        ] = False,
    ) -> ClassifyOut:
        """Classifies a batch of query images against the registered classes: top-k labels with scores,
        and "unknown" (label null) when the best logit is below the rejection threshold."""
        datas, names = _read_uploads(images)
        predictions = classifier.classify(
            datas, top_k, names=names, threshold=threshold, nearest=nearest, augment=augment
        )
        return ClassifyOut(predictions=[PredictionOut(**p.to_dict()) for p in predictions])

    @app.get(
        f"{v1}/store/export",
        tags=["store"],
        response_class=FileResponse,
        dependencies=[Depends(admin)],
        responses={200: {"content": {"application/vnd.sqlite3": {}}}, **error_responses(*auth)},
    )
    def export_store() -> FileResponse:
        """A portable copy of the whole store (one SQLite file) for `POST /v1/store/import` elsewhere."""
        folder = Path(tempfile.mkdtemp(prefix="distilshot-export-"))
        path = classifier.export_store(folder / "classes.db")
        return FileResponse(
            path,
            media_type="application/vnd.sqlite3",
            filename="classes.db",
            background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True),
        )

    @app.post(
        import_path,
        status_code=201,
        tags=["store"],
        dependencies=writing,
        responses=error_responses(*writes, 409, *body),
    )
    def import_store(
        store: Annotated[UploadFile, File(description="a file from GET /v1/store/export")],
    ) -> list[ClassOut]:
        """Adds every class of an exported store (re-embedded if it comes from another model): all or,
        if a name is taken or anything is invalid, none."""
        with tempfile.TemporaryDirectory(prefix="distilshot-import-") as folder:
            path = Path(folder) / "import.db"
            with open(path, "wb") as f:
                shutil.copyfileobj(store.file, f)
            return [_class_out(c) for c in classifier.import_store(path)]

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(home)

    return app
