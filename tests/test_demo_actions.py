"""The demo's event handlers without a browser: what an "unknown" answer shows, and counted nouns."""

from __future__ import annotations

from dataclasses import replace

import gradio as gr
from serve_fixtures import make_bundle, solid, write_image

from distilshot.core.manifest import Rejection, load_manifest
from distilshot.demo.actions import NEAREST, NEAREST_UNKNOWN, DemoActions, count
from distilshot.serve.classifier import FewShotClassifier

# the tiny colour bundle's best logit: about -0.2 for a red query of the red class, -30 for green
THRESHOLD = -5.0


def test_unknown_is_never_shown_as_a_confident_label(tmp_path):
    bundle = make_bundle(tmp_path / "bundle")
    rejection = Rejection(THRESHOLD, 0.95, "test", known_accepted=0.95, unknown_rejected=0.5)
    replace(load_manifest(bundle), rejection=rejection).save(bundle)
    with FewShotClassifier(bundle, tmp_path / "s.db") as classifier:
        classifier.register("red", [solid((250, 0, 0)), solid((240, 0, 0))])
        classifier.register("blue", [solid((0, 0, 250))])
        blocks = gr.Blocks()
        actions = DemoActions(classifier, blocks, scoped=False, sketch=False, examples=None)

        def classify(rgb: tuple[int, int, int]) -> tuple:
            query = str(write_image(tmp_path / f"{rgb}.png", solid(rgb)))
            blocks.upload_file_set.add(query)  # as if uploaded through the page
            return actions.classify(query, None)

        answer, ranked, nearest = classify((230, 20, 10))
        assert answer == "Answer: red" and ranked["red"] > 0.99 and nearest.label == NEAREST
        answer, ranked, nearest = classify((0, 250, 0))
        # the answer is "unknown"; the best guess and its probability only in small print
        first_line, detail = answer.split("\n\n")
        assert first_line == "Answer: unknown" and ranked == "unknown"
        assert detail.startswith("<small>closest class red, 65% among the registered classes")
        assert "below the threshold -5" in detail and nearest.label == NEAREST_UNKNOWN


def test_counts_are_singular_for_one():
    assert [count(n, "class") for n in (0, 1, 2)] == ["0 classes", "1 class", "2 classes"]
    assert [count(n, "image") for n in (1, 3)] == ["1 image", "3 images"]
    assert count(1, "example class") == "1 example class" and count(6, "shot") == "6 shots"
