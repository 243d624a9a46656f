"""The request limits and response bodies of the HTTP API (serve/api.py), as its OpenAPI document shows
them."""

from __future__ import annotations

from pathlib import Path

from fastapi import UploadFile
from pydantic import BaseModel, Field

from distilshot.errors import DistilshotError
from distilshot.serve.images import MAX_BYTES
from distilshot.serve.store import ClassInfo

MAX_FILES = 256  # images in one request


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


def class_out(info: ClassInfo) -> ClassOut:
    return ClassOut(name=info.name, shots=info.shots, created=info.created)


def read_uploads(files: list[UploadFile]) -> tuple[list[bytes], list[str]]:
    """The bytes and names of uploaded images. Starlette has spooled each to memory or disk already,
    within the request limit; reading stops one byte past the per-image limit, which load_image reports."""
    if len(files) > MAX_FILES:
        raise DistilshotError(f"{len(files)} images in one request; the limit is {MAX_FILES}")
    datas, names = [], []
    for index, upload in enumerate(files):
        names.append(Path(upload.filename).name if upload.filename else f"image {index + 1}")
        datas.append(upload.file.read(MAX_BYTES + 1))
    return datas, names
