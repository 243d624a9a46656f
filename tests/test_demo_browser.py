"""The Gradio demo end to end in headless Chromium (Debian's chromium driven by Playwright; `make install`
installs it), as a new user goes: one class first (its gallery measured in the DOM), a refused duplicate
name then the right register, images added to a class, drawings made without picking the brush, drawn,
uploaded and example queries, the example set, removing a class. Screenshots of the states go to
SCREENSHOTS."""

from __future__ import annotations

import re
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright
from serve_fixtures import encode, make_bundle, noise, solid, write_image
from serve_http import served

from distilshot.core.manifest import load_manifest
from distilshot.demo.app import THUMBNAIL_PX, mount_demo
from distilshot.serve.api import create_app
from distilshot.serve.classifier import FewShotClassifier

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 60_000  # per step; the CPU may be shared
expect.set_options(timeout=TIMEOUT_MS)


CROSS = [[(0.2, 0.2), (0.8, 0.8)], [(0.8, 0.2), (0.2, 0.8)]]  # strokes, in fractions of the canvas
SCREENSHOTS = Path(tempfile.gettempdir()) / "distilshot-demo-screenshots"
# Each thumbnail's image box and caption, and whether the caption is whole and inside its thumbnail.
THUMBNAILS_JS = """items => items.map((item) => {
  const image = item.querySelector('img').getBoundingClientRect();
  const caption = item.querySelector('.caption-label');
  const whole = caption.scrollWidth <= caption.clientWidth && caption.scrollHeight <= caption.clientHeight;
  const inside = caption.getBoundingClientRect().bottom <= item.getBoundingClientRect().bottom;
  return {width: image.width, height: image.height, caption: caption.innerText, shown: whole && inside};
})"""


def draw(page, pad: str, strokes: list[list[tuple[float, float]]]) -> None:
    """Draws `strokes` with the mouse in the sketchpad's square drawing area, once the page has picked
    its brush (a user does not pick it)."""
    expect(page.locator(pad).get_by_role("button", name="Brush", exact=True)).to_have_class(
        re.compile("highlight")
    )
    box = page.locator(f"{pad} canvas").first.bounding_box()
    side = 0.8 * box["height"]
    left, top = box["x"] + (box["width"] - side) / 2, box["y"] + (box["height"] - side) / 2
    for stroke in strokes:
        page.mouse.move(left + stroke[0][0] * side, top + stroke[0][1] * side)
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(left + x * side, top + y * side, steps=8)
        page.mouse.up()


@pytest.fixture
def browser_page():
    assert CHROMIUM.exists(), (
        "Debian's chromium is missing: `make install` installs it (apt-get install chromium)"
    )
    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=ARGS
        )
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context.new_page()
        finally:
            context.close()


def thumbnails(page, gallery: str) -> list[dict]:
    return page.locator(f"{gallery} .thumbnail-item").evaluate_all(THUMBNAILS_JS)


def shot_names(classifier: FewShotClassifier, name: str) -> list[str]:
    return [shot.source for shot in classifier.shots(name)]


def test_a_new_user_in_the_browser(browser_page, tmp_path):
    bundle = make_bundle(tmp_path / "bundle")
    # Named as an Omniglot model, the demo also offers the sketchpads and the example set.
    replace(load_manifest(bundle), dataset="omniglot").save(bundle)
    red = [write_image(tmp_path / f"red{i}.png", solid((250 - 5 * i, 0, 0))) for i in range(2)]
    blue = [write_image(tmp_path / f"blue{i}.png", solid((0, 0, 250 - 5 * i))) for i in range(2)]
    query = write_image(tmp_path / "query.png", solid((230, 20, 10)))
    broken = tmp_path / "broken.png"
    broken.write_bytes(encode(noise())[:200])
    SCREENSHOTS.mkdir(exist_ok=True)

    with FewShotClassifier(bundle, tmp_path / "s.db") as classifier:
        app = create_app(classifier, home="/demo/")
        mount_demo(app, classifier)
        with served(app) as url:
            page = browser_page
            page.set_viewport_size({"width": 1280, "height": 1000})

            def screenshot(name: str) -> None:
                page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)

            page.goto(f"{url}/")  # redirects to the demo
            expect(page.locator("#model-card")).to_contain_text("protonet")
            count, status = page.locator("#class-count"), page.locator("#status")
            expect(count).to_have_text("No classes yet: load the example set, or register your own below")
            screenshot("0-empty")

            def upload(images: list[Path]) -> None:
                page.locator("#support-files input[type=file]").set_input_files([str(p) for p in images])
                for image in images:
                    expect(
                        page.locator("#support-files").get_by_role("cell", name=image.name)
                    ).to_be_visible()

            def store(button: str, name: str, images: list[Path]) -> None:
                page.locator("#class-name").get_by_role("textbox").fill(name)
                upload(images)
                page.locator(button).click()

            # one class, one image: a thumbnail of the fixed size, whole, with its whole caption
            store("#register", "red", red[:1])
            expect(status).to_have_text("registered red with 1 image")
            expect(count).to_have_text("1 class registered")
            expect(page.locator("#classes")).to_contain_text("red (1 shot)")
            gallery_width = page.locator("#classes").bounding_box()["width"]
            ((red_thumbnail),) = thumbnails(page, "#classes")
            assert red_thumbnail["height"] == THUMBNAIL_PX and red_thumbnail["width"] < gallery_width / 4
            assert red_thumbnail["caption"] == "red (1 shot)" and red_thumbnail["shown"]
            screenshot("1-one-class")

            # a duplicate name is refused and its images dropped; the right register stores the new ones
            store("#register", "red", blue)
            expect(status).to_have_text(
                "red is already registered; nothing was stored and the images are cleared: to add images"
                " to it, upload them again and press Add images to this class"
            )
            expect(page.locator("#support-files").get_by_role("cell", name=blue[0].name)).to_have_count(0)
            screenshot("2-refused-duplicate")
            store("#register", "blue", blue)
            expect(status).to_have_text("registered blue with 2 images")
            assert shot_names(classifier, "blue") == ["blue0.png", "blue1.png"]
            assert shot_names(classifier, "red") == ["red0.png"]
            expect(count).to_have_text("2 classes registered")

            # more images for an existing class
            store("#add-shots", "red", red[1:])
            expect(status).to_have_text("added 1 image to red, now 2 images")
            assert shot_names(classifier, "red") == ["red0.png", "red1.png"]
            expect(page.locator("#classes")).to_contain_text("red (2 shots)")

            # invent a symbol, draw it twice (the brush is picked already), register it
            for drawings in ("1 drawing", "2 drawings"):
                draw(page, "#support-pad", CROSS)
                page.locator("#add-drawing").click()
                expect(status).to_have_text(f"{drawings} ready to store")
                page.wait_for_timeout(500)  # the pad is cleared, and its brush picked again, just after
            expect(page.locator("#drawn")).to_contain_text("drawing 2")
            screenshot("3-drawings")
            page.locator("#class-name").get_by_role("textbox").fill("cross")
            page.locator("#register").click()
            expect(status).to_have_text("registered cross with 2 images")
            assert [(c.name, c.shots) for c in classifier.classes()] == [
                ("blue", 2),
                ("cross", 2),
                ("red", 2),
            ]

            page.get_by_role("tab", name="Classify").click()
            draw(page, "#query-pad", CROSS)  # draw it again: recognised
            page.locator("#classify").click()
            answer = page.locator("#answer")
            expect(answer).to_have_text("Answer: cross")
            page.locator("#query input[type=file]").set_input_files(str(query))  # an upload goes first
            expect(page.locator("#query img")).to_be_visible()
            page.locator("#classify").click()
            expect(answer).to_have_text("Answer: red")
            expect(page.locator("#nearest")).to_contain_text("red: 100%")
            nearest = thumbnails(page, "#nearest")
            labels = [n["caption"].split(":")[0] for n in nearest]
            assert labels[0] == "red" and sorted(labels) == ["blue", "cross", "red"]
            assert all(n["height"] == THUMBNAIL_PX and n["shown"] and "%" in n["caption"] for n in nearest)
            screenshot("4-classified")

            # an example query: its image loads, and it is classified
            page.locator("#examples .gallery-item").first.click()
            expect(page.locator("#query img")).to_have_attribute("src", re.compile("/demo/gradio_api/file="))
            page.wait_for_function("() => document.querySelector('#query img')?.naturalWidth > 0")
            page.locator("#classify").click()
            expect(answer).to_have_text("Answer: cross")  # a drawing, like the only drawn class
            screenshot("5-example-query")

            page.get_by_role("tab", name="Register classes").click()
            page.locator("#load-examples").click()
            expect(count).to_have_text("loaded 6 example classes; 9 classes registered")
            assert len(classifier.classes()) == 9
            page.locator("#remove-choice input").click()
            page.get_by_role("option", name="cross", exact=True).click()
            page.locator("#remove").click()
            expect(page.locator("#removed")).to_have_text("removed cross")
            expect(count).to_have_text("8 classes registered")
            store("#register", "bad", [broken])  # the error is shown; nothing is stored
            expect(status).to_contain_text("truncated or corrupt")
            assert len(classifier.classes()) == 8
            screenshot("6-example-set")
