"""The class routes of the HTTP API: list, register and remove classes, add and remove support shots,
and read a shot's stored image."""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, File, Form, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import Response

from distilshot.serve.api_access import BODY, Access
from distilshot.serve.api_schemas import ClassDetail, ClassOut, Removed, ShotOut, class_out, read_uploads
from distilshot.serve.classifier import FewShotClassifier

ShotId = Annotated[int, PathParam(ge=1, le=2**63 - 1, description="a shot id (SQLite rowid)")]


def add_class_routes(app: FastAPI, prefix: str, classifier: FewShotClassifier, access: Access) -> None:
    classes, one_class, shot = f"{prefix}/classes", f"{prefix}/classes/{{name}}", "shots/{shot_id}"

    @app.get(classes, tags=["classes"], **access.reading())
    def list_classes() -> list[ClassOut]:
        """Registered classes sorted by name."""
        return [class_out(c) for c in classifier.classes()]

    @app.post(classes, status_code=201, tags=["classes"], **access.writing(409, *BODY))
    def register(
        name: Annotated[str, Form(min_length=1, description="name of the new class")],
        images: Annotated[list[UploadFile], File(min_length=1, description="its support images")],
    ) -> ClassOut:
        """Registers a new class from uploaded support images (multipart). A bad image or name stores
        nothing."""
        datas, names = read_uploads(images)
        return class_out(classifier.register(name, datas, names=names))

    @app.get(one_class, tags=["classes"], **access.reading(404))
    def get_class(name: str) -> ClassDetail:
        """A class with its support shots."""
        shots = classifier.shots(name)  # a class is created with its first shots, and keeps at least one
        shot_list = [ShotOut(id=s.id, source=s.source, created=s.created) for s in shots]
        return ClassDetail(name=name, shots=len(shots), created=shots[0].created, shot_list=shot_list)

    @app.delete(one_class, tags=["classes"], **access.writing(404))
    def remove(name: str) -> Removed:
        """Removes a class and its support images."""
        classifier.remove(name)
        return Removed(removed=name)

    @app.post(f"{one_class}/shots", tags=["classes"], **access.writing(404, *BODY))
    def add_shots(
        name: str, images: Annotated[list[UploadFile], File(min_length=1, description="more support images")]
    ) -> ClassOut:
        """Adds support images to a class."""
        datas, names = read_uploads(images)
        return class_out(classifier.add_shots(name, datas, names=names))

    @app.delete(f"{one_class}/{shot}", tags=["classes"], **access.writing(404))
    def remove_shot(name: str, shot_id: ShotId) -> ClassOut:
        """Removes one support image (not a class's last: remove the class instead)."""
        return class_out(classifier.remove_shot(name, shot_id))

    @app.get(
        f"{one_class}/{shot}/image",
        tags=["classes"],
        response_class=Response,
        **access.reading(404, content="image/png"),
    )
    def shot_image(name: str, shot_id: ShotId) -> Response:
        """The stored copy of a support image (PNG, upright, at most 256 px)."""
        return Response(classifier.thumbnail(name, shot_id), media_type="image/png")
