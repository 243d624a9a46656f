"""export/ort_format.py: ORT-format models load in onnxruntime and compute what their ONNX graphs compute
on real images; the operator config parses with onnxruntime's build-config parser.

An ORT file holds the graph as optimised when it was saved, without the x86-only NCHWc layout. Against
the ONNX graph run with that same optimisation, its outputs must be identical; against a default session
(NCHWc on this x86 machine) only the order of each convolution's float32 sums differs, which keeps
embeddings at cosine 1 - 1e-6 and within 1e-5 of their largest value (a few hundred terms' roundings)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from edge_graphs import OMNIGLOT_PREP, conv_embedder, cosines, omniglot_drawings, session
from method_runs import cli
from onnxruntime.tools.reduced_build_config_parser import parse_config
from PIL import Image

from distilshot.core.manifest import load_manifest
from distilshot.core.preprocess import flatten, preprocess
from distilshot.errors import BundleError
from distilshot.export.ort_format import CONFIG_FILE, convert_to_ort
from distilshot.export.pixels_graph import PIXELS_INPUT, write_pixels_graph


def portable_session(path) -> ort.InferenceSession:
    """The ONNX graph optimised as the converter optimises it: everything but the NCHWc layout."""
    return ort.InferenceSession(
        str(path), providers=["CPUExecutionProvider"], disabled_optimizers=["NchwcTransformer"]
    )


def check_same_embeddings(onnx_path, ort_path, feeds: list[dict[str, np.ndarray]]) -> None:
    converted, portable, default = session(ort_path), portable_session(onnx_path), session(onnx_path)
    for feed in feeds:
        ours = converted.run(None, feed)[0]
        np.testing.assert_array_equal(ours, portable.run(None, feed)[0])
        reference = default.run(None, feed)[0]
        assert cosines(ours, reference).min() >= 1 - 1e-6
        assert np.abs(ours - reference).max() <= 1e-5 * np.abs(reference).max()


@pytest.fixture(scope="module")
def drawings() -> list[Image.Image]:
    return omniglot_drawings(24)


def test_the_embedder_and_its_pixels_graph_convert_and_compute_the_same(tmp_path, drawings):
    onnx.save(conv_embedder(1, 28), tmp_path / "embedder.onnx")
    write_pixels_graph(tmp_path / "embedder.onnx", OMNIGLOT_PREP, tmp_path / "pixels.onnx")
    converted = convert_to_ort([tmp_path / "embedder.onnx", tmp_path / "pixels.onnx"], tmp_path / "ort")
    assert converted.models == {
        "embedder.onnx": tmp_path / "ort" / "embedder.ort",
        "pixels.onnx": tmp_path / "ort" / "pixels.ort",
    }
    assert converted.models["embedder.onnx"].read_bytes()[4:8] == b"ORTM"  # the ORT flatbuffer identifier
    check_same_embeddings(
        tmp_path / "embedder.onnx",
        converted.models["embedder.onnx"],
        [{"image": preprocess(drawings[i : i + 8], OMNIGLOT_PREP)} for i in (0, 8, 16)],
    )
    sized = [d.convert("L").resize((57, 80)) for d in drawings[:6]]
    check_same_embeddings(
        tmp_path / "pixels.onnx",
        converted.models["pixels.onnx"],
        [{PIXELS_INPUT: np.asarray(flatten(d, "L"))[None, :, :, None]} for d in drawings[:6] + sized],
    )
    required, _ = parse_config(str(converted.config), enable_type_reduction=True)
    assert "Resize" in required["ai.onnx"][18] and "Conv" in set().union(*required["ai.onnx"].values())
    resize_line = next(line for line in converted.config.read_text().splitlines() if "Resize" in line)
    assert '"uint8_t"' in resize_line  # the Pillow-style uint8 Resize kernel must stay in a reduced build


def test_export_to_ort_converts_every_graph_of_a_trained_bundle(tmp_path, trained_run, drawings):
    bundle = tmp_path / "bundle"
    shutil.copytree(trained_run.bundle, bundle)
    report = json.loads(cli("export", "--bundle", bundle, "--to", "ort", "--json").stdout.splitlines()[-1])
    manifest = load_manifest(bundle)  # every file present with its recorded sha256
    sources = [manifest.embedder.file, manifest.preprocess_graph.file, manifest.head_graph.file]
    converted = {f"ort/{Path(f).stem}.ort" for f in sources} | {f"ort/{CONFIG_FILE}"}
    assert converted <= set(manifest.files)
    assert report["format"] == "ort"
    checks = [c for c in report["checks"] if c["check"] == "ort-vs-onnx"]
    assert sorted(c["graph"] for c in checks) == sorted(sources)
    assert all(c["max_relative_difference"] <= 1e-4 for c in checks)
    # the .ort embedder computes the ONNX embedder's embeddings on stored-size drawings
    feeds = [{"image": preprocess(drawings[i : i + 8], manifest.preprocessing)} for i in (0, 8, 16)]
    check_same_embeddings(bundle / manifest.embedder.file, bundle / "ort" / "embedder.ort", feeds)
    parse_config(str(bundle / "ort" / CONFIG_FILE))
    # again: the new folder (ort-2/, BundleEdit never overwrites a file in place) replaces ort/
    cli("export", "--bundle", bundle, "--to", "ort", "--json")
    folders = {f.split("/", 1)[0] for f in load_manifest(bundle).files if f.startswith("ort")}
    assert folders == {"ort-2"} and not (bundle / "ort").exists()


def test_missing_duplicate_and_broken_files_are_refused(tmp_path):
    with pytest.raises(BundleError, match="no ONNX graphs"):
        convert_to_ort([], tmp_path / "ort")
    with pytest.raises(BundleError, match=r"missing\.onnx is not an ONNX file"):
        convert_to_ort([tmp_path / "missing.onnx"], tmp_path / "ort")
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        onnx.save(conv_embedder(1, 28), tmp_path / folder / "embedder.onnx")
    with pytest.raises(BundleError, match="distinct names"):
        convert_to_ort([tmp_path / "a" / "embedder.onnx", tmp_path / "b" / "embedder.onnx"], tmp_path / "ort")
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    with pytest.raises(BundleError, match=r"could not convert broken\.onnx to ORT format"):
        convert_to_ort([tmp_path / "broken.onnx"], tmp_path / "ort")
