"""What the demo's events do (demo/app.py wires them to its components), over one FewShotClassifier.

Each handler returns the new values of its event's outputs. A DistilshotError becomes the status line
(without server paths) and stores nothing; `gr.skip()` leaves an output as it was. A refused register or
add clears the images it was given, so they are never stored later under a name typed afterwards.
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
from distilshot.serve.classifier import FewShotClassifier, Prediction
from distilshot.serve.http_errors import redact_paths
from distilshot.serve.store import DuplicateClassError, UnknownClassError

TOP_K = 5
GALLERY_LIMIT = 200  # classes shown in the gallery; the API lists all of them
NEAREST = "Nearest support images"
NEAREST_UNKNOWN = "Nearest support images (none is near enough: unknown)"
PLURALS = {"class": "classes", "example class": "example classes"}


def count(n: int, noun: str) -> str:
    """`n` and `noun`, in the singular for one: "1 class", "2 classes", "1 image", "3 images"."""
    return f"{n} {noun if n == 1 else PLURALS.get(noun, noun + 's')}"


def percent(probability: float) -> str:
    return f"{100 * probability:.0f}%"


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


def previews(drawings: list[bytes]) -> list[tuple[Image.Image, str]]:
    """The drawings taken so far, captioned with the names they are stored under."""
    return [(_image(png), f"drawing {i + 1}") for i, png in enumerate(drawings)]


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
            items.append((_image(png), f"{info.name} ({count(info.shots, 'shot')})"))
        return items

    def class_names(self) -> gr.Dropdown:
        return gr.Dropdown(choices=[c.name for c in self.classifier.classes()], value=None)

    def class_count(self) -> str:
        registered = len(self.classifier.classes())
        if registered == 0 and self.examples is not None:
            return "No classes yet: load the example set, or register your own below"
        return f"{count(registered, 'class')} registered"

    def refresh(self) -> tuple[list, gr.Dropdown, str]:
        """Outputs: gallery, remove choice, class count."""
        return self.gallery(), self.class_names(), self.class_count()

    def register(
        self, name: str, files: list[str] | None, drawings: list[bytes], request: gr.Request
    ) -> tuple:
        """Adds a new class. Outputs: files, drawings, class name, gallery, remove choice, class count,
        status (+ drawing previews)."""
        return self._store_images(name, files, drawings, request, add=False)

    def add_shots(
        self, name: str, files: list[str] | None, drawings: list[bytes], request: gr.Request
    ) -> tuple:
        """Adds the images to an existing class; the outputs of `register`."""
        return self._store_images(name, files, drawings, request, add=True)

    def _store_images(
        self, name: str, files: list[str] | None, drawings: list[bytes], request: gr.Request, *, add: bool
    ) -> tuple:
        names = [Path(f).name for f in files or []] + [f"drawing {i + 1}" for i in range(len(drawings))]
        try:
            self.need_admin(request)
            sources: list[Any] = [self.own_file(f) for f in files or []] + [bytes(d) for d in drawings]
            if not sources:
                raise DistilshotError("upload or draw at least one support image")
            if add:
                info = self.classifier.add_shots(name, sources, names=names)
                added = count(len(sources), "image")
                status = f"added {added} to **{info.name}**, now {count(info.shots, 'image')}"
            else:
                info = self.classifier.register(name, sources, names=names)
                status = f"registered **{info.name}** with {count(info.shots, 'image')}"
            kept_name: Any = ""
        except DistilshotError as error:
            status = self.refusal(name, error, cleared=bool(names))
            kept_name = gr.skip()
        return (None, [], kept_name, *self.refresh(), status, *(([],) if self.sketch else ()))

    def refusal(self, name: str, error: DistilshotError, *, cleared: bool) -> str:
        """The status for a refused register or add: why, that the images are gone, and the other button
        where it fits."""
        reason, hint = self.failed(error), ""
        if isinstance(error, DuplicateClassError):
            reason = f"**{name}** is already registered"
            hint = ": to add images to it, upload them again and press Add images to this class"
        elif isinstance(error, UnknownClassError):
            reason = f"there is no class **{name}** yet"
            hint = ": to create it, upload its images again and press Register class"
        return reason + ("; nothing was stored and the images are cleared" if cleared else "") + hint

    def add_drawing(self, value: Any, drawings: list[bytes]) -> tuple:
        """Outputs: drawings, their previews, status."""
        image = drawing(value)
        if image is None:
            return drawings, previews(drawings), "draw something first"
        drawings = [*drawings, _png(image)]
        return drawings, previews(drawings), f"{count(len(drawings), 'drawing')} ready to store"

    def remove(self, name: str | None, request: gr.Request) -> tuple:
        """Outputs: gallery, remove choice, class count, removal status."""
        try:
            self.need_admin(request)
            if not name:
                raise DistilshotError("choose a class to remove")
            self.classifier.remove(name)
            status = f"removed **{name}**"
        except DistilshotError as error:
            status = self.failed(error)
        return (*self.refresh(), status)

    def load_examples(self, request: gr.Request) -> tuple:
        """Outputs: gallery, remove choice, class count. Wired only where there is an example set."""
        assert self.examples is not None
        present = {c.name for c in self.classifier.classes()}
        missing = {name: files for name, files in self.examples.support.items() if name not in present}
        status = "the example classes are registered already"
        try:
            self.need_admin(request)
            if missing:
                self.classifier.register_many(missing)
                status = f"loaded {count(len(missing), 'example class')}; {self.class_count()}"
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
        nearest = gr.Gallery(
            self.nearest_images(prediction),
            label=NEAREST_UNKNOWN if prediction.unknown else NEAREST,
        )
        if prediction.unknown:  # never shown as a label with its probability: the top-k are only candidates
            return self.unknown_answer(prediction), "unknown", nearest
        return f"Answer: {prediction.label}", dict(prediction.top_k), nearest

    def unknown_answer(self, prediction: Prediction) -> str:
        """ "unknown", then the best guess in small print."""
        best, probability = prediction.top_k[0]
        return (
            f"Answer: unknown\n\n<small>closest class {best}, {percent(probability)} among the registered "
            f"classes, but its logit {prediction.logits[0]:.3g} is below the threshold "
            f"{prediction.threshold:.3g}</small>"
        )

    def nearest_images(self, prediction: Prediction) -> list[tuple[Image.Image, str]]:
        """Each top class's support image nearest to the query, captioned with its probability."""
        images = []
        for (label, score), shot in zip(prediction.top_k, prediction.nearest, strict=True):
            if shot is None:
                continue
            try:
                png = self.classifier.thumbnail(label, shot)
            except DistilshotError:  # removed meanwhile by another client
                continue
            images.append((_image(png), f"{label}: {percent(score)}"))
        return images
