"""The service routes of the HTTP API: liveness and the model card."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from distilshot import __version__
from distilshot.serve.api_access import Access
from distilshot.serve.api_schemas import HealthOut
from distilshot.serve.classifier import FewShotClassifier


def add_service_routes(app: FastAPI, prefix: str, classifier: FewShotClassifier, access: Access) -> None:
    @app.get(f"{prefix}/health", tags=["service"])
    def health() -> HealthOut:
        """Liveness: the model is loaded and the store answers."""
        return HealthOut(
            status="ok",
            version=__version__,
            classes=len(classifier.classes()),
            fingerprint=classifier.store.fingerprint,
        )

    @app.get(f"{prefix}/model", tags=["service"], **access.reading())
    def model() -> dict[str, Any]:
        """The model card: method, backbone, dataset, accuracy with its protocol, fingerprint, engine,
        preprocessing and the calibrated rejection threshold. Bundle and store by name, not path."""
        info = classifier.info()
        info["bundle"] = classifier.bundle_dir.name
        info["store"] = None if classifier.store.path is None else classifier.store.path.name
        if classifier.store.path is None and classifier.store.location is not None:
            info["store"] = "postgresql"  # a database, by kind: its URL names a server
        return info
