"""Helpers for the web-app tests (tests/test_web_app.py): the npm check, a bundle without the app graphs
(as exported before they existed), and the Python runtime's answers to compare with."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np

from distilshot.core.manifest import load_manifest
from distilshot.core.preprocess import normalise, to_model_pixels
from distilshot.serve.classifier import FewShotClassifier, Prediction
from distilshot.serve.images import decoded

REPO = Path(__file__).resolve().parents[1]
WEB_APP = REPO / "examples" / "web_app"
NODE_CLIENT = WEB_APP / "node_client.mjs"
NPM_PACKAGES = ("onnxruntime-node", "onnxruntime-web", "pngjs")


def require_npm_packages() -> None:
    """Fails, saying how to install them, when the web app's npm packages are missing."""
    missing = [p for p in NPM_PACKAGES if not (WEB_APP / "node_modules" / p / "package.json").is_file()]
    assert not missing, (
        f"the web app's npm packages {missing} are missing from {WEB_APP / 'node_modules'}: "
        "run `make install`, "
        "which runs `npm ci` in examples/web_app (or run `npm ci --prefix examples/web_app` yourself)"
    )
    assert shutil.which("node"), "Node.js is missing: the web app's tests need `node` (Node 20 or later)"


def without_app_graphs(bundle: Path, destination: Path) -> Path:
    """A copy of `bundle` whose manifest has no preprocess_graph or head_graph: an older bundle."""
    shutil.copytree(bundle, destination)
    replace(load_manifest(destination), preprocess_graph=None, head_graph=None).save(destination)
    return destination


def node_client(*args: object, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Runs examples/web_app/node_client.mjs with `args`."""
    return subprocess.run(
        ["node", str(NODE_CLIENT), *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def python_embeddings(bundle: Path, images: list[Path]) -> dict[str, np.ndarray]:
    """The Python runtime's embeddings of `images` (serve's decoding and preprocessing, its engine)."""
    with FewShotClassifier(bundle, None, backend="onnxruntime") as classifier:
        prep = classifier.manifest.preprocessing
        pixels = []
        for path in images:
            with decoded(path, name=path.name) as image:
                pixels.append(to_model_pixels(image, prep))
        embedded = classifier.engine.embed(normalise(np.stack(pixels), prep))
        return {o.name: np.asarray(embedded[o.name]) for o in classifier.manifest.embedder.outputs}


def python_predictions(bundle: Path, support: dict[str, list[Path]], queries: list[Path]) -> list[Prediction]:
    """The Python runtime's predictions for `queries` with `support` registered (in memory)."""
    with FewShotClassifier(bundle, None, backend="onnxruntime") as classifier:
        for label, images in support.items():
            classifier.register(label, images)
        return classifier.classify(queries, top_k=5)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity, in float64."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
