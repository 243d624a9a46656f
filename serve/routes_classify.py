"""The classify route of the HTTP API."""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, File, Query, UploadFile

from distilshot.serve.api_access import BODY, Access
from distilshot.serve.api_schemas import ClassifyOut, PredictionOut, read_uploads
from distilshot.serve.classifier import FewShotClassifier


def add_classify_route(app: FastAPI, prefix: str, classifier: FewShotClassifier, access: Access) -> None:
    # a 403 even without keys: classify is a POST, which the cross-site check covers
    @app.post(f"{prefix}/classify", tags=["classify"], **access.reading(403, 409, *BODY))
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
        datas, names = read_uploads(images)
        predictions = classifier.classify(
            datas, top_k, names=names, threshold=threshold, nearest=nearest, augment=augment
        )
        return ClassifyOut(predictions=[PredictionOut(**p.to_dict()) for p in predictions])
