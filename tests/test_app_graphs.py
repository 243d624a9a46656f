"""An app that knows only the bundle's documented graphs (preprocess.onnx -> embedder.onnx ->
head.onnx, manifest records preprocess_graph and head_graph) gets the Python runtime's answers: the same
labels, nearly the same logits and the same "unknown" decisions, on real Omniglot drawings at their
stored size. The graph's resize may put a pixel one grey level from Pillow's (export/pixels_graph.py),
which moves an embedding by a cosine under 1e-6 and a logit by well under 1e-3 of the logits' scale."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from edge_graphs import omniglot_drawings

from distilshot.core.manifest import load_manifest
from distilshot.serve.classifier import FewShotClassifier


def _session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_the_documented_graphs_answer_as_the_runtime(trained_run, tmp_path) -> None:
    bundle = trained_run.bundle
    manifest = load_manifest(bundle)  # checks every file's sha256, the two graphs' too
    prep_graph, head_graph = manifest.preprocess_graph, manifest.head_graph
    assert prep_graph is not None and head_graph is not None
    assert prep_graph.channels == manifest.preprocessing.channels == 1
    preprocess, embedder = _session(bundle / prep_graph.file), _session(bundle / manifest.embedder.file)
    head = _session(bundle / head_graph.file)

    def embed(image) -> dict[str, np.ndarray]:
        pixels = np.asarray(image.convert("L"), dtype=np.uint8)[None, :, :, None]  # the app's step: to grey
        x = preprocess.run(None, {prep_graph.input: pixels})[0]
        names = [o.name for o in manifest.embedder.outputs]
        return dict(zip(names, embedder.run(names, {manifest.embedder.input: x}), strict=True))

    drawings = omniglot_drawings(40)  # 40 drawings spread over the evaluation alphabets
    support, queries = drawings[::2][:8], drawings[1::2]
    labels = [f"c{i}" for i in range(len(support))]
    output = next(iter(manifest.head.weights))
    prototypes = np.concatenate([embed(image)[output] for image in support])
    ours = np.concatenate(
        [
            head.run(
                [head_graph.output],
                {output: embed(q)[output], output + head_graph.prototypes_suffix: prototypes},
            )[0]
            for q in queries
        ]
    )

    with FewShotClassifier(bundle, tmp_path / "classes.db") as classifier:
        for label, image in zip(labels, support, strict=True):
            classifier.register(label, [image])
        served = classifier.classify(queries, top_k=len(labels))
    for row, prediction in zip(ours, served, strict=True):
        by_label = dict(zip([label for label, _ in prediction.top_k], prediction.logits, strict=True))
        theirs = np.array([by_label[label] for label in labels])
        spread = float(np.abs(theirs).max())
        tolerance = 1e-3 * spread
        np.testing.assert_allclose(row, theirs, rtol=0, atol=tolerance)
        top2 = np.sort(theirs)[-2:]
        if top2[1] - top2[0] > 2 * tolerance:  # no near tie
            assert labels[int(row.argmax())] == prediction.top_k[0][0]
        if abs(theirs.max() - manifest.rejection.threshold) > tolerance:
            assert (row.max() < manifest.rejection.threshold) == prediction.unknown
