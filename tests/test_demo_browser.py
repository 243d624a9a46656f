"""The Gradio demo end to end in headless Chromium (Debian's chromium driven by Playwright; `make install`
installs it): register two classes by uploading files and one by drawing it, classify drawn and uploaded
queries, read the label shown."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright
from serve_fixtures import encode, make_bundle, noise, solid, write_image
from serve_http import served

from distilshot.core.manifest import load_manifest
from distilshot.demo.app import mount_demo
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


def draw(page, pad: str, strokes: list[list[tuple[float, float]]]) -> None:
    """Picks the sketchpad's brush and draws `strokes` with the mouse in its square drawing area."""
    page.locator(pad).get_by_role("button", name="Brush", exact=True).click()
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


def test_register_two_classes_and_classify_in_the_browser(browser_page, tmp_path):
    bundle = make_bundle(tmp_path / "bundle")
    # Named as an Omniglot model, the demo also offers the sketchpads and the example set.
    replace(load_manifest(bundle), dataset="omniglot").save(bundle)
    red = [write_image(tmp_path / f"red{i}.png", solid((250 - 5 * i, 0, 0))) for i in range(2)]
    blue = [write_image(tmp_path / f"blue{i}.png", solid((0, 0, 250 - 5 * i))) for i in range(2)]
    query = write_image(tmp_path / "query.png", solid((230, 20, 10)))
    broken = tmp_path / "broken.png"
    broken.write_bytes(encode(noise())[:200])

    with FewShotClassifier(bundle, tmp_path / "s.db") as classifier:
        app = create_app(classifier, home="/demo/")
        mount_demo(app, classifier)
        with served(app) as url:
            page = browser_page
            page.goto(f"{url}/")  # redirects to the demo
            expect(page.locator("#model-card")).to_contain_text("protonet")
            status = page.locator("#status")
            expect(status).to_contain_text("0 classes registered")

            def register(name: str, images: list[Path], expected: str) -> None:
                page.locator("#class-name").get_by_role("textbox").fill(name)
                page.locator("#support-files input[type=file]").set_input_files([str(p) for p in images])
                for image in images:
                    expect(
                        page.locator("#support-files").get_by_role("cell", name=image.name)
                    ).to_be_visible()
                page.locator("#register").click()
                expect(status).to_contain_text(expected)

            register("red", red, "registered red with 2 images")
            register("blue", blue, "registered blue with 2 images")
            expect(page.locator("#classes")).to_contain_text("red (2 shots)")

            # invent a symbol, draw it twice, register it
            for count in (1, 2):
                draw(page, "#support-pad", CROSS)
                page.get_by_role("button", name="Add drawing").click()
                expect(status).to_contain_text(f"{count} drawings ready to register")
            page.locator("#class-name").get_by_role("textbox").fill("cross")
            page.locator("#register").click()
            expect(status).to_contain_text("registered cross with 2 images")
            assert [(c.name, c.shots) for c in classifier.classes()] == [
                ("blue", 2),
                ("cross", 2),
                ("red", 2),
            ]

            page.get_by_role("tab", name="Classify").click()
            draw(page, "#query-pad", CROSS)  # draw it again: recognised
            page.locator("#classify").click()
            expect(page.locator("#answer")).to_have_text("Answer: cross")
            page.locator("#query input[type=file]").set_input_files(str(query))  # an upload goes first
            expect(page.locator("#query img")).to_be_visible()
            page.locator("#classify").click()
            expect(page.locator("#answer")).to_have_text("Answer: red")

            page.get_by_role("tab", name="Register classes").click()
            page.get_by_role("button", name="Load the example set").click()
            expect(status).to_contain_text("registered 6 example classes")
            assert len(classifier.classes()) == 9
            register("bad", [broken], "truncated or corrupt")  # the error is shown; nothing is stored
            assert len(classifier.classes()) == 9
