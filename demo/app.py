"""The Gradio demo over a FewShotClassifier: register classes from uploaded (or drawn) images, see and
remove them, classify uploaded, pasted or drawn queries, and read the model card.

It is a thin layer: every image goes through the classifier, which validates it like any other entry
point; errors are shown in a status line (without server paths) and change nothing. Components that tests
drive carry elem_ids.

Event data comes from the network, so a file path in it is never trusted: Gradio's own check (only
files in its upload folder) is turned on for the mounted app, and the handlers read only files this
process received through Gradio's upload route or cached for the example set. Behind API keys the page
asks for a login (user name: the scope, read or admin; password: a key of that scope), and changing the
classes needs admin.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from fastapi import FastAPI
from PIL import Image

from distilshot.demo.examples import example_set
from distilshot.errors import DistilshotError
from distilshot.serve.classifier import FewShotClassifier
from distilshot.serve.http_errors import redact_paths
from distilshot.serve.images import MAX_BYTES
from distilshot.serve.security import SCOPES, ApiKeys, grants

TOP_K = 5
GALLERY_LIMIT = 200  # classes shown in the gallery; the API lists all of them
CANVAS = (280, 280)


def draws_characters(classifier: FewShotClassifier) -> bool:
    """Character models (Omniglot) get a sketchpad for support and query images."""
    return classifier.manifest.dataset.startswith("omniglot")


def model_card(classifier: FewShotClassifier) -> str:
    info = classifier.info()
    lines = [
        f"**Model** `{info['name']}` — method **{info['method']}**, backbone **{info['backbone']}**, "
        f"trained on **{info['dataset']}**; engine {info['engine']}; bundle fingerprint "
        f"`{info['fingerprint'][:12]}`",
    ]
    metrics = info["metrics"]
    if any(isinstance(v, dict) and "mean" in v for v in metrics.values()):
        shown = []
        for key, value in metrics.items():
            if isinstance(value, dict) and "mean" in value:  # percent, as export writes it
                ci = value.get("ci95")
                shown.append(f"{key}: {float(value['mean']):.2f}%" + (f" ± {float(ci):.2f}" if ci else ""))
        split = next((v.get("split") for v in metrics.values() if isinstance(v, dict) and v.get("split")), "")
        lines.append(f"**Accuracy** on held-out classes ({split}) — " + "; ".join(shown))
    rejection = info["rejection"]
    if rejection:
        lines.append(
            f"**Unknown** below logit {rejection['threshold']:.3g}: accepts "
            f"{100 * rejection['known_accepted']:.1f}% of queries of registered classes and rejects "
            f"{100 * rejection['unknown_rejected']:.1f}% of others ({rejection['protocol']})"
        )
    else:
        lines.append("**Unknown**: this bundle has no calibrated threshold, so every query gets a class")
    calibration = classifier.manifest.calibration
    if calibration is not None:
        lines.append(
            f"**Probabilities** calibrated (temperature {calibration.temperature:.3g}, fitted on "
            f"{calibration.fit_split}): expected calibration error {calibration.ece:.3f} "
            f"(uncalibrated {calibration.ece_uncalibrated:.3f}) on {calibration.eval_split}, "
            f"{calibration.protocol}"
        )
    else:
        lines.append("**Probabilities**: this bundle's temperature is not calibrated")
    return "\n\n".join(lines)


def _drawing(value: Any) -> Image.Image | None:
    """The sketchpad's composite as a greyscale image, or None if nothing is drawn."""
    if value is None:
        return None
    composite = value.get("composite") if isinstance(value, dict) else value
    if composite is None:
        return None
    image = composite if isinstance(composite, Image.Image) else Image.fromarray(np.asarray(composite))
    image = image.convert("L")
    return None if np.asarray(image).min() == 255 else image


# Clears the support sketchpad in the browser after a drawing is taken (setting its value from Python
# would replace the canvas and need the brush picked again).
CLEAR_SUPPORT_PAD = (
    """() => { document.querySelector('#support-pad button[aria-label="Clear canvas"]')?.click(); }"""
)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def build_demo(classifier: FewShotClassifier, *, scoped: bool = False) -> gr.Blocks:
    """The demo; `scoped`: users log in with a scope as user name, and only admin may change classes."""
    sketch = draws_characters(classifier)
    examples = example_set(classifier.manifest.dataset)
    known_paths = [p for p in (classifier.store.path, classifier.bundle_dir) if p is not None]
    example_files: frozenset[str] = frozenset()  # the example queries as Gradio cached them

    def failed(error: DistilshotError) -> str:
        return f"**error:** {redact_paths(str(error), known_paths)}"

    def need_admin(request: gr.Request | None) -> None:
        if scoped and (request is None or request.username != "admin"):
            raise DistilshotError("changing the classes needs an admin key: log in as admin")

    def own_file(path: str) -> Path:
        """`path` if it is a file this demo received: uploaded to it, or an example query."""
        if path not in blocks.upload_file_set and path not in example_files:
            raise DistilshotError(f"{Path(path).name}: not a file uploaded to this demo")
        return Path(path)

    def gallery() -> list[tuple[Image.Image, str]]:
        items = []
        for info in classifier.classes()[:GALLERY_LIMIT]:
            try:
                first = classifier.shots(info.name)[0]
                png = classifier.thumbnail(info.name, first.id)
            except DistilshotError:  # removed meanwhile by another client
                continue
            items.append((Image.open(io.BytesIO(png)), f"{info.name} ({info.shots} shots)"))
        return items

    def class_names() -> gr.Dropdown:
        return gr.Dropdown(choices=[c.name for c in classifier.classes()], value=None)

    def refresh() -> tuple[list, gr.Dropdown, str]:
        count = len(classifier.classes())
        return gallery(), class_names(), f"{count} classes registered"

    def register(name: str, files: list[str] | None, drawings: list[bytes], request: gr.Request) -> tuple:
        """Outputs: files, drawings, class name, gallery, remove choice, status (+ drawing previews)."""
        names = [Path(f).name for f in files or []] + [f"drawing {i + 1}" for i in range(len(drawings))]
        try:
            need_admin(request)
            sources: list[Any] = [own_file(f) for f in files or []] + [bytes(d) for d in drawings]
            if not sources:
                raise DistilshotError("upload or draw at least one support image")
            info = classifier.register(name, sources, names=names)
            status = f"registered **{info.name}** with {info.shots} images"
            cleared: tuple = (None, [], "")
            previews: tuple = ([],)
        except DistilshotError as error:
            status = failed(error)
            cleared = (gr.skip(), gr.skip(), gr.skip())
            previews = (gr.skip(),)
        return (*cleared, *refresh()[:2], status, *(previews if sketch else ()))

    def add_drawing(value: Any, drawings: list[bytes]) -> tuple:
        image = _drawing(value)
        if image is None:
            return drawings, [Image.open(io.BytesIO(d)) for d in drawings], "draw something first"
        drawings = [*drawings, _png(image)]
        previews = [Image.open(io.BytesIO(d)) for d in drawings]
        return drawings, previews, f"{len(drawings)} drawings ready to register"

    def remove(name: str | None, request: gr.Request) -> tuple:
        try:
            need_admin(request)
            if not name:
                raise DistilshotError("choose a class to remove")
            classifier.remove(name)
            status = f"removed **{name}**"
        except DistilshotError as error:
            status = failed(error)
        return (*refresh()[:2], status)

    def load_examples(request: gr.Request) -> tuple:
        assert examples is not None
        present = {c.name for c in classifier.classes()}
        missing = {name: files for name, files in examples.support.items() if name not in present}
        try:
            need_admin(request)
            if missing:
                classifier.register_many(missing)
            status = f"registered {len(missing)} example classes ({len(examples.support)} in the set)"
        except DistilshotError as error:
            status = failed(error)
        return (*refresh()[:2], status)

    def classify(upload: str | None, drawn: Any, augment: bool = False) -> tuple:
        drawing = _drawing(drawn) if sketch else None
        try:
            if upload is None and drawing is None:
                raise DistilshotError("upload, paste or draw a query image first")
            source: Any = own_file(upload) if upload is not None else drawing
            name = Path(upload).name if upload is not None else "drawing"
            (prediction,) = classifier.classify([source], TOP_K, names=[name], nearest=True, augment=augment)
        except DistilshotError as error:
            return failed(error), None, []
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
                    png = classifier.thumbnail(label, shot)
                except DistilshotError:
                    continue
                nearest.append((Image.open(io.BytesIO(png)), f"{label}: {score:.2f}"))
        ranked = "unknown" if prediction.unknown else dict(prediction.top_k)
        return f"Answer: {answer}{detail}", ranked, nearest

    with gr.Blocks(title="distilshot demo") as blocks:
        gr.Markdown("# distilshot — few-shot image classification")
        gr.Markdown(model_card(classifier), elem_id="model-card")
        status = gr.Markdown("", elem_id="status")
        drawings = gr.State([])
        with gr.Tab("Register classes"):
            with gr.Row():
                with gr.Column():
                    class_name = gr.Textbox(label="Class name", elem_id="class-name")
                    files = gr.File(
                        label="Support images",
                        file_count="multiple",
                        file_types=["image"],
                        type="filepath",
                        elem_id="support-files",
                    )
                    register_button = gr.Button("Register class", variant="primary", elem_id="register")
                if sketch:
                    with gr.Column():
                        support_pad = gr.Sketchpad(
                            label="…or draw: pick the brush, draw, Add drawing; three make a good start",
                            elem_id="support-pad",
                            type="pil",
                            image_mode="L",
                            canvas_size=CANVAS,
                            fixed_canvas=True,
                            brush=gr.Brush(colors=["#000000"], default_size=8, color_mode="fixed"),
                            layers=False,
                            transforms=(),
                        )
                        add_button = gr.Button("Add drawing")
                        drawn = gr.Gallery(label="Drawings to register", columns=6, height=120)
            with gr.Row():
                classes = gr.Gallery(label="Registered classes", columns=8, height=260, elem_id="classes")
            with gr.Row():
                remove_choice = gr.Dropdown(label="Class to remove", choices=[], elem_id="remove-choice")
                remove_button = gr.Button("Remove class", elem_id="remove")
                if examples is not None:
                    example_button = gr.Button(f"Load the example set ({examples.description})")
        with gr.Tab("Classify"):
            with gr.Row():
                query = gr.Image(
                    label="Query image (upload or paste)",
                    type="filepath",
                    sources=["upload", "clipboard"],
                    elem_id="query",
                )
                if sketch:
                    query_pad = gr.Sketchpad(
                        label="…or draw a query (pick the brush first)",
                        elem_id="query-pad",
                        type="pil",
                        image_mode="L",
                        canvas_size=CANVAS,
                        fixed_canvas=True,
                        brush=gr.Brush(colors=["#000000"], default_size=8, color_mode="fixed"),
                        layers=False,
                        transforms=(),
                    )
            augment_box = (
                gr.Checkbox(False, label="Complete each class with generated features (helps at 1-2 shots)")
                if classifier.generators is not None
                else None
            )
            classify_button = gr.Button("Classify", variant="primary", elem_id="classify")
            answer = gr.Markdown("", elem_id="answer")
            with gr.Row():
                confidences = gr.Label(label="Top classes", num_top_classes=TOP_K)
                nearest = gr.Gallery(label="Nearest support images", columns=TOP_K, height=160)
            if examples is not None and examples.queries:
                gr.Examples([[str(q)] for q in examples.queries], inputs=[query], label="Example queries")
                example_files = frozenset(query.temp_files)

        previews = [drawn] if sketch else []
        register_button.click(
            register,
            inputs=[class_name, files, drawings],
            outputs=[files, drawings, class_name, classes, remove_choice, status, *previews],
        )
        if sketch:
            add_button.click(
                add_drawing, inputs=[support_pad, drawings], outputs=[drawings, drawn, status]
            ).then(None, js=CLEAR_SUPPORT_PAD)
        remove_button.click(remove, inputs=[remove_choice], outputs=[classes, remove_choice, status])
        if examples is not None:
            example_button.click(load_examples, outputs=[classes, remove_choice, status])
        augment_inputs = [augment_box] if augment_box is not None else []
        classify_button.click(
            lambda upload, *rest: classify(
                upload, rest[0] if sketch else None, bool(rest[-1]) if augment_inputs else False
            ),
            inputs=[query, *([query_pad] if sketch else []), *augment_inputs],
            outputs=[answer, confidences, nearest],
            api_name="classify",
        )
        blocks.load(refresh, outputs=[classes, remove_choice, status])
    return blocks


def mount_demo(
    app: FastAPI, classifier: FewShotClassifier, path: str = "/demo", keys: ApiKeys | None = None
) -> FastAPI:
    """Mounts the demo on an API app (one process, one classifier); with `keys`, behind a login."""
    blocks = build_demo(classifier, scoped=keys is not None)

    def login(username: str, password: str) -> bool:
        found = None if keys is None else keys.check(password)
        return found is not None and username in SCOPES and grants(found[0], username)

    mounted = gr.mount_gradio_app(
        app,
        blocks,
        path=path,
        max_file_size=MAX_BYTES,
        auth=login if keys is not None else None,
        auth_message="User name: read (classify) or admin (also change classes); password: an API key",
    )
    # Gradio checks that a file named in an event's data is in its upload folder only once the app "has
    # launched", which mount_gradio_app never sets; without the check any server path would be read.
    blocks.has_launched = True
    return mounted
