"""The graphs that let an app without Python use a bundle: `preprocess.onnx` (decoded pixels -> the
embedder's input, export/pixels_graph.py) and `head.onnx` (embeddings and prototypes -> logits,
export/head_graph.py), recorded in the manifest's `preprocess_graph` and `head_graph`. Export writes them
into the staged bundle last, once the head's temperature is calibrated."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import onnx

from distilshot.core.files import sha256_file
from distilshot.core.manifest import HeadGraph, Manifest, PreprocessGraph, load_manifest
from distilshot.export.head_graph import LOGITS, PROTOTYPES_SUFFIX, write_head_graph
from distilshot.export.pixels_graph import PIXELS_INPUT, preprocessing_model

PREPROCESS_FILE = "preprocess.onnx"
HEAD_FILE = "head.onnx"


def stage_app_graphs(folder: Path) -> Manifest:
    """Writes both graphs into the (staged) bundle `folder` and records them in its manifest."""
    folder = Path(folder)
    manifest = load_manifest(folder)
    prep = manifest.preprocessing
    onnx.save(preprocessing_model(prep, manifest.embedder.input), str(folder / PREPROCESS_FILE))
    write_head_graph(manifest, folder / HEAD_FILE)
    manifest = replace(
        manifest,
        preprocess_graph=PreprocessGraph(PREPROCESS_FILE, prep.channels, input=PIXELS_INPUT),
        head_graph=HeadGraph(HEAD_FILE, output=LOGITS, prototypes_suffix=PROTOTYPES_SUFFIX),
        files={**manifest.files, **{f: sha256_file(folder / f) for f in (PREPROCESS_FILE, HEAD_FILE)}},
    )
    manifest.save(folder)
    return manifest
