"""What the demo's events do (demo/app.py wires them to its components), over one FewShotClassifier.

Each handler returns the new values of its event's outputs. A DistilshotError becomes the status line
(without server paths) and changes nothing; `gr.skip()` leaves an output as it was.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from distilshot.demo.examples import ExampleSet
from distilshot.errors import DistilshotError
from distilshot.serve.classifier import FewShotClassifier
from distilshot.serve.http_errors import redact_paths

TOP_K = 5
GALLERY_LIMIT = 200  # classes shown in the gallery; the API lists all of them


def drawing(value: Any) -> Image.Image | None:
    """The sketchpad's composite as a greyscale image, or None if nothing is drawn."""
    if value is None:
        return None
    composite = value.get("composite") if isinstance(value, dict) else value
    if composite is None:
        return None
    image = composite if isinstance(composite, Image.Image) else Image.fromarray(np.asarray(composite))
    image = image.convert("L")
    return None if np.asarray(image).min() == 255 else image


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _image(png: bytes) -> Image.Image:
    return Image.open(io.BytesIO(png))


class DemoActions:
    """The handlers of one demo page. `scoped`: users log in with a scope as user name, and only admin
    may change classes; `sketch`: the page has sketchpads, whose drawings the register event previews."""

    def __init__(
        self,
        classifier: FewShotClassifier,
        blocks: gr.Blocks,
        *,
        scoped: bool,
        sketch: bool,
        examples: ExampleSet | None,
    ) -> None:
        self.classifier = classifier
        self.blocks = blocks
        self.scoped = scoped
        self.sketch = sketch
        self.examples = examples
        self.known_paths = [p for p in (classifier.store.path, classifier.bundle_dir) if p is not None]
        self.example_files: frozenset[str] = frozenset()  # the example queries as Gradio cached them

    def failed(self, error: DistilshotError) -> str:
        return f"**error:** {redact_paths(str(error), self.known_paths)}"

    def need_admin(self, request: gr.Request | None) -> None:
        if self.scoped and (request is None or request.username != "admin"):
            raise DistilshotError("changing the classes needs an admin key: log in as admin")

    def own_file(self, path: str) -> Path:
        """`path` if it is a file this demo received: uploaded to it, or an example query."""
        if path not in self.blocks.upload_file_set and path not in self.example_files:
            raise DistilshotError(f"{Path(path).name}: not a file uploaded to this demo")
        return Path(path)

    def gallery(self) -> list[tuple[Image.Image, str]]:
        items = []
        for info in self.classifier.classes()[:GALLERY_LIMIT]:
            try:
                first = self.classifier.shots(info.name)[0]
                png = self.classifier.thumbnail(info.name, first.id)
            except DistilshotError:  # removed meanwhile by another client
                continue
            items.append((_image(png), f"{info.name} ({info.shots} shots)"))
        return items

    def class_names(self) -> gr.Dropdown:
        return gr.Dropdown(choices=[c.name for c in self.classifier.classes()], value=None)

    def refresh(self) -> tuple[list, gr.Dropdown, str]:
        count = len(self.classifier.classes())
        return self.gallery(), self.class_names(), f"{count} classes registered"

    def register(
        self, name: str, files: list[str] | None, drawings: list[bytes], request: gr.Request
    ) -> tuple:
        """Outputs: files, drawings, class name, gallery, remove choice, status (+ drawing previews)."""
        names = [Path(f).name for f in files or []] + [f"drawing {i + 1}" for i in range(len(drawings))]
        try:
            self.need_admin(request)
            sources: list[Any] = [self.own_file(f) for f in files or []] + [bytes(d) for d in drawings]
            if not sources:
                raise DistilshotError("upload or draw at least one support image")
            info = self.classifier.register(name, sources, names=names)
            status = f"registered **{info.name}** with {info.shots} images"
            cleared: tuple = (None, [], "")
            previews: tuple = ([],)
        except DistilshotError as error:
            status = self.failed(error)
            cleared = (gr.skip(), gr.skip(), gr.skip())
            previews = (gr.skip(),)
        return (*cleared, *self.refresh()[:2], status, *(previews if self.sketch else ()))

    def add_drawing(self, value: Any, drawings: list[bytes]) -> tuple:
        """Outputs: drawings, their previews, status."""
        image = drawing(value)
        if image is None:
            return drawings, [_image(d) for d in drawings], "draw something first"
        drawings = [*drawings, _png(image)]
        return drawings, [_image(d) for d in drawings], f"{len(drawings)} drawings ready to register"

    def remove(self, name: str | None, request: gr.Request) -> tuple:
        """Outputs: gallery, remove choice, status."""
        try:
            self.need_admin(request)
            if not name:
                raise DistilshotError("choose a class to remove")
            self.classifier.remove(name)
            status = f"removed **{name}**"
        except DistilshotError as error:
            status = self.failed(error)
        return (*self.refresh()[:2], status)

    def load_examples(self, request: gr.Request) -> tuple:
        """Outputs: gallery, remove choice, status. Wired only where there is an example set."""
        assert self.examples is not None
        present = {c.name for c in self.classifier.classes()}
        missing = {name: files for name, files in self.examples.support.items() if name not in present}
        try:
            self.need_admin(request)
            if missing:
                self.classifier.register_many(missing)
            status = f"registered {len(missing)} example classes ({len(self.examples.support)} in the set)"
        except DistilshotError as error:
            status = self.failed(error)
        return (*self.refresh()[:2], status)

    def classify(self, upload: str | None, drawn: Any, augment: bool = False) -> tuple:
        """Outputs: answer, top classes, nearest support images."""
        drawn_image = drawing(drawn) if self.sketch else None
        try:
            if upload is None and drawn_image is None:
                raise DistilshotError("upload, paste or draw a query image first")
            source: Any = self.own_file(upload) if upload is not None else drawn_image
            name = Path(upload).name if upload is not None else "drawing"
            (prediction,) = self.classifier.classify(
                [source], TOP_K, names=[name], nearest=True, augment=augment
            )
        except DistilshotError as error:
            return self.failed(error), None, []
        answer, detail = prediction.label, ""
        if prediction.unknown:  # never shown as a label with its probability: the top-k are only candidates
            best, probability = prediction.top_k[0]
            answer = "unknown"
            detail = (
                f" (closest class {best}, {100 * probability:.0f}% among the registered classes, but its "
                f"logit {prediction.logits[0]:.3g} is below the threshold {prediction.threshold:.3g})"
            )
        nearest = []
        for (label, score), shot in zip(prediction.top_k, prediction.nearest, strict=True):
            if shot is not None:
                try:
                    png = self.classifier.thumbnail(label, shot)
                except DistilshotError:
                    continue
                nearest.append((_image(png), f"{label}: {score:.2f}"))
        ranked = "unknown" if prediction.unknown else dict(prediction.top_k)
        return f"Answer: {answer}{detail}", ranked, nearest
