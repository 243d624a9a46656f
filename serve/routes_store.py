"""The store routes of the HTTP API: a portable copy of the whole store, and importing one."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, UploadFile
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from distilshot.serve.api_access import BODY, Access
from distilshot.serve.api_schemas import ClassOut, class_out
from distilshot.serve.classifier import FewShotClassifier

IMPORT_PATH = "/store/import"  # below the API prefix; its body limit is the one for store files


def add_store_routes(app: FastAPI, prefix: str, classifier: FewShotClassifier, access: Access) -> None:
    @app.get(
        f"{prefix}/store/export",
        tags=["store"],
        response_class=FileResponse,
        **access.administering(content="application/vnd.sqlite3"),
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

    @app.post(f"{prefix}{IMPORT_PATH}", status_code=201, tags=["store"], **access.writing(409, *BODY))
    def import_store(
        store: Annotated[UploadFile, File(description="a file from GET /v1/store/export")],
    ) -> list[ClassOut]:
        """Adds every class of an exported store (re-embedded if it comes from another model): all or,
        if a name is taken or anything is invalid, none."""
        with tempfile.TemporaryDirectory(prefix="distilshot-import-") as folder:
            path = Path(folder) / "import.db"
            with open(path, "wb") as f:
                shutil.copyfileobj(store.file, f)
            return [class_out(c) for c in classifier.import_store(path)]
