"""The Gradio demo over a FewShotClassifier: register classes from uploaded (or drawn) images or load the
example set, add images to a class, see and remove classes, classify uploaded, pasted, drawn or example
queries, and read the model card.

It is a thin layer: every image goes through the classifier, which validates it like any other entry
point; errors are shown in the status line beside the button (without server paths) and store nothing.
Components that tests drive carry elem_ids.

Event data comes from the network, so a file path in it is never trusted: Gradio's own check (only
files in its upload folder) is turned on for the mounted app, and the handlers read only files this
process received through Gradio's upload route or cached for the example set. Behind API keys the page
asks for a login (user name: the scope, read or admin; password: a key of that scope), and changing the
classes needs admin.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
from fastapi import FastAPI

from distilshot.demo.actions import NEAREST, TOP_K, DemoActions
from distilshot.demo.examples import ExampleSet, example_set
from distilshot.demo.model_card import model_card
from distilshot.serve.classifier import FewShotClassifier
from distilshot.serve.images import MAX_BYTES
from distilshot.serve.security import SCOPES, ApiKeys, grants

CANVAS = (280, 280)
THUMBNAIL_PX = 96  # the height of every image in the class and nearest-image galleries
# Gradio's gallery crops square thumbnails and cuts captions to one line over the image; these rules
# give each thumbnail its image, whole, above its full caption.
CSS = f"""
.thumbnails .grid-wrap {{ padding-top: var(--size-8); }}
.thumbnails .thumbnail-item {{ aspect-ratio: auto; height: auto; display: flex; flex-direction: column; }}
.thumbnails .thumbnail-item > img {{ height: {THUMBNAIL_PX}px; }}
.thumbnails .caption-label {{
  position: static; max-width: 100%; white-space: normal; overflow-wrap: anywhere;
  text-align: center; border: none; opacity: 1;
}}
"""

# Picks each sketchpad's brush (Gradio starts them with no tool, and clearing drops the tool), so a
# stroke is never silently lost; the pads render after the page loads, hence the retries.
PICK_BRUSHES = """() => {
  const pick = () => document.querySelectorAll('#support-pad, #query-pad').forEach((pad) => {
    const brush = pad.querySelector('button[aria-label="Brush"]');
    if (brush && !brush.classList.contains('highlight')) brush.click();
  });
  [100, 1000, 3000].forEach((ms) => setTimeout(pick, ms));
}"""
# Clears the support sketchpad in the browser after a drawing is taken (setting its value from Python
# would replace the canvas), then picks its brush again.
CLEAR_SUPPORT_PAD = (
    """() => { document.querySelector('#support-pad button[aria-label="Clear canvas"]')?.click(); }"""
)


def draws_characters(classifier: FewShotClassifier) -> bool:
    """Character models (Omniglot) get a sketchpad for support and query images."""
    return classifier.manifest.dataset.startswith("omniglot")


@dataclass(frozen=True)
class SupportPad:
    pad: gr.Sketchpad
    add: gr.Button
    drawn: gr.Gallery  # the drawings taken so far


@dataclass(frozen=True)
class RegisterPanel:
    name: gr.Textbox
    files: gr.File
    button: gr.Button  # registers a new class
    add: gr.Button  # adds the images to an existing class
    status: gr.Markdown  # what the last of these buttons did
    drawing: SupportPad | None  # for character models


@dataclass(frozen=True)
class GalleryPanel:
    count: gr.Markdown  # how many classes there are, or what loading the example set did
    load_examples: gr.Button | None  # where there is an example set
    classes: gr.Gallery
    remove_choice: gr.Dropdown
    remove: gr.Button
    removed: gr.Markdown  # what the remove button did


@dataclass(frozen=True)
class ClassifyPanel:
    query: gr.Image
    pad: gr.Sketchpad | None  # for character models
    augment: gr.Checkbox | None  # for bundles with feature generators
    button: gr.Button
    answer: gr.Markdown
    confidences: gr.Label
    nearest: gr.Gallery
    example_files: frozenset[str]  # the example queries as Gradio cached them


def _sketchpad(label: str, elem_id: str) -> gr.Sketchpad:
    """A fixed white canvas with one black brush, for drawn characters."""
    return gr.Sketchpad(
        label=label,
        elem_id=elem_id,
        type="pil",
        image_mode="L",
        canvas_size=CANVAS,
        fixed_canvas=True,
        brush=gr.Brush(colors=["#000000"], default_size=8, color_mode="fixed"),
        layers=False,
        transforms=(),
    )


def _thumbnails(label: str, elem_id: str, columns: int, rows: int) -> gr.Gallery:
    """A gallery of fixed-size thumbnails (see CSS), each whole with its caption, however many there are."""
    return gr.Gallery(
        label=label,
        elem_id=elem_id,
        columns=columns,
        fit_columns=False,
        object_fit="contain",
        height=rows * (THUMBNAIL_PX + 60) + 50,
        interactive=False,
        elem_classes=["thumbnails"],
    )


def _register_panel(sketch: bool) -> RegisterPanel:
    with gr.Row():
        with gr.Column():
            name = gr.Textbox(label="Class name", elem_id="class-name")
            files = gr.File(
                label="Support images",
                file_count="multiple",
                file_types=["image"],
                type="filepath",
                elem_id="support-files",
            )
            with gr.Row():
                button = gr.Button("Register class", variant="primary", elem_id="register")
                add = gr.Button("Add images to this class", elem_id="add-shots")
            status = gr.Markdown("", elem_id="status")
        drawing = None
        if sketch:
            with gr.Column():
                pad = _sketchpad("…or draw, then Add drawing; three make a good start", "support-pad")
                add_drawing = gr.Button("Add drawing", elem_id="add-drawing")
                drawn = _thumbnails("Drawings to store", "drawn", columns=5, rows=1)
            drawing = SupportPad(pad, add_drawing, drawn)
    return RegisterPanel(name, files, button, add, status, drawing)


def _start_row(examples: ExampleSet | None) -> tuple[gr.Markdown, gr.Button | None]:
    """The class count, and the example set's button where there is one: what a new user starts from."""
    with gr.Row(equal_height=True):
        load_examples = (
            None
            if examples is None
            else gr.Button(f"Load the example set ({examples.description})", elem_id="load-examples")
        )
        count = gr.Markdown("", elem_id="class-count")
    return count, load_examples


def _gallery_panel(count: gr.Markdown, load_examples: gr.Button | None) -> GalleryPanel:
    classes = _thumbnails("Registered classes", "classes", columns=8, rows=2)
    with gr.Row():
        remove_choice = gr.Dropdown(label="Class to remove", choices=[], elem_id="remove-choice")
        remove = gr.Button("Remove class", elem_id="remove")
        removed = gr.Markdown("", elem_id="removed")
    return GalleryPanel(count, load_examples, classes, remove_choice, remove, removed)


def _classify_panel(sketch: bool, augments: bool, examples: ExampleSet | None) -> ClassifyPanel:
    with gr.Row():
        query = gr.Image(
            label="Query image (upload or paste)",
            type="filepath",
            image_mode=None,  # the file as uploaded: the classifier decodes and validates it
            sources=["upload", "clipboard"],
            height=CANVAS[1] + 60,  # as tall as the query pad, however small the image
            elem_id="query",
        )
        pad = _sketchpad("…or draw a query", "query-pad") if sketch else None
    augment = (
        gr.Checkbox(False, label="Complete each class with generated features (helps at 1-2 shots)")
        if augments
        else None
    )
    button = gr.Button("Classify", variant="primary", elem_id="classify")
    answer = gr.Markdown("", elem_id="answer")
    with gr.Row():
        confidences = gr.Label(label="Top classes", num_top_classes=TOP_K, elem_id="top-classes")
        nearest = _thumbnails(NEAREST, "nearest", columns=TOP_K, rows=1)
    example_files: frozenset[str] = frozenset()
    if examples is not None and examples.queries:
        gr.Examples(
            [[str(q)] for q in examples.queries], inputs=[query], label="Example queries", elem_id="examples"
        )
        example_files = frozenset(query.temp_files)
    return ClassifyPanel(query, pad, augment, button, answer, confidences, nearest, example_files)


def _wire(
    blocks: gr.Blocks,
    actions: DemoActions,
    drawings: gr.State,
    register: RegisterPanel,
    gallery: GalleryPanel,
    classify: ClassifyPanel,
    classify_tab: gr.Tab,
) -> None:
    """The events, in the order the page has always declared them (Gradio numbers them so), then the
    newer ones."""
    listing = [gallery.classes, gallery.remove_choice, gallery.count]
    drawing = register.drawing
    storing = dict(
        inputs=[register.name, register.files, drawings],
        outputs=[
            register.files,
            drawings,
            register.name,
            *listing,
            register.status,
            *([drawing.drawn] if drawing else []),
        ],
    )
    register.button.click(actions.register, **storing)
    if drawing is not None:
        drawing.add.click(
            actions.add_drawing,
            inputs=[drawing.pad, drawings],
            outputs=[drawings, drawing.drawn, register.status],
        ).then(None, js=CLEAR_SUPPORT_PAD).then(None, js=PICK_BRUSHES)
    gallery.remove.click(actions.remove, inputs=[gallery.remove_choice], outputs=[*listing, gallery.removed])
    if gallery.load_examples is not None:
        gallery.load_examples.click(actions.load_examples, outputs=listing)
    pads = [] if classify.pad is None else [classify.pad]
    boxes = [] if classify.augment is None else [classify.augment]

    def classify_event(upload: str | None, *rest: object) -> tuple:
        """`rest`: the query pad's value, then the augment box's, for those the page has."""
        drawn = rest[0] if pads else None
        return actions.classify(upload, drawn, bool(rest[-1]) if boxes else False)

    classify.button.click(
        classify_event,
        inputs=[classify.query, *pads, *boxes],
        outputs=[classify.answer, classify.confidences, classify.nearest],
        api_name="classify",
    )
    blocks.load(actions.refresh, outputs=listing)
    register.add.click(actions.add_shots, **storing)
    if drawing is not None:
        blocks.load(None, js=PICK_BRUSHES)
        classify_tab.select(None, js=PICK_BRUSHES)


def build_demo(classifier: FewShotClassifier, *, scoped: bool = False) -> gr.Blocks:
    """The demo; `scoped`: users log in with a scope as user name, and only admin may change classes."""
    sketch = draws_characters(classifier)
    examples = example_set(classifier.manifest.dataset)
    blocks = gr.Blocks(title="distilshot demo")
    actions = DemoActions(classifier, blocks, scoped=scoped, sketch=sketch, examples=examples)
    with blocks:
        gr.Markdown("# distilshot — few-shot image classification")
        gr.Markdown(model_card(classifier), elem_id="model-card")
        drawings = gr.State([])
        with gr.Tab("Register classes"):
            start = _start_row(examples)
            register = _register_panel(sketch)
            gallery = _gallery_panel(*start)
        with gr.Tab("Classify") as classify_tab:
            classify = _classify_panel(sketch, classifier.augmented is not None, examples)
        actions.example_files = classify.example_files
        _wire(blocks, actions, drawings, register, gallery, classify, classify_tab)
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
        # Gradio's direct (unqueued) route, which loads a clicked example, would build file URLs without
        # the mount path (a broken image) unless it is named here.
        root_path=path,
        css=CSS,
        max_file_size=MAX_BYTES,
        auth=login if keys is not None else None,
        auth_message="User name: read (classify) or admin (also change classes); password: an API key",
    )
    # Gradio checks that a file named in an event's data is in its upload folder only once the app "has
    # launched", which mount_gradio_app never sets; without the check any server path would be read.
    blocks.has_launched = True
    return mounted
