"""FewShotClassifier end to end on tiny bundles whose embeddings are known."""

from __future__ import annotations

import io
import sqlite3

import numpy as np
import pytest
from PIL import Image
from serve_fixtures import encode, expected_embedding, make_bundle, solid, write_image

from distilshot.core.head import softmax
from distilshot.errors import DistilshotError, ImageError, StoreError
from distilshot.serve.classifier import FewShotClassifier, folder_classes

RED, GREEN, BLUE = (250, 10, 10), (10, 240, 10), (0, 0, 255)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("single"))


@pytest.fixture
def clf(bundle):
    with FewShotClassifier(bundle) as classifier:
        yield classifier


def test_register_and_classify_paths_bytes_and_pil(clf, tmp_path):
    red_path = write_image(tmp_path / "red1.png", solid(RED))
    clf.register("red", [red_path, encode(solid((230, 0, 0)), "JPEG", quality=95)])
    clf.register("green", [solid(GREEN)])
    clf.register("blue", [encode(solid(BLUE))], names=["upload.png"])
    assert [(c.name, c.shots) for c in clf.classes()] == [("blue", 1), ("green", 1), ("red", 2)]

    query = write_image(tmp_path / "q.png", solid((200, 30, 30), (40, 30)))
    predictions = clf.classify([query, encode(solid((0, 10, 200)))], top_k=2)
    assert [p.image for p in predictions] == [str(query), "image 2"]
    assert [label for label, _ in predictions[0].top_k] == ["red", "green"]
    assert predictions[1].top_k[0][0] == "blue"
    for p in predictions:
        scores = [score for _, score in p.top_k]
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-9
        assert len(p.logits) == 2 and p.logits[0] >= p.logits[1]


def test_logits_and_scores_follow_the_head(clf):
    clf.register("red", [solid(RED)])
    clf.register("blue", [solid(BLUE)])
    (prediction,) = clf.classify([solid((128, 0, 128))], top_k=5)
    assert len(prediction.top_k) == 2  # clipped to the number of classes
    q = expected_embedding((128, 0, 128))
    by_hand = {
        "blue": -float(((q - expected_embedding(BLUE)) ** 2).sum()),
        "red": -float(((q - expected_embedding(RED)) ** 2).sum()),
    }
    labels = [label for label, _ in prediction.top_k]
    assert prediction.logits == pytest.approx([by_hand[label] for label in labels], rel=1e-4)
    probabilities = softmax(np.array([[by_hand[label] for label in labels]]))[0]
    assert [s for _, s in prediction.top_k] == pytest.approx(probabilities.tolist(), rel=1e-4)
    assert prediction.to_dict() == {
        "image": "image 1",
        "label": labels[0],
        "unknown": False,  # the tiny bundle has no calibrated threshold
        "threshold": None,
        "top_k": [
            {"label": label, "score": score, "logit": logit}
            for (label, score), logit in zip(prediction.top_k, prediction.logits, strict=True)
        ],
    }


def test_two_output_bundle(tmp_path):
    bundle = make_bundle(tmp_path / "two", "two", weights={"global": 0.5, "local": 2.0}, temperature=0.5)
    with FewShotClassifier(bundle) as clf:
        clf.register("red", [solid(RED)])
        clf.register("blue", [solid(BLUE)])
        assert clf.classify([solid((220, 0, 30))])[0].top_k[0][0] == "red"
        assert clf.info()["outputs"] == {"global": 4, "local": 3}


def test_bad_third_image_stores_nothing(bundle, tmp_path):
    store = tmp_path / "s.db"
    with FewShotClassifier(bundle, store) as clf:
        clf.register("green", [solid(GREEN)])
    before = store.read_bytes()
    with FewShotClassifier(bundle, store) as clf:
        bad = [solid(RED), encode(solid(RED)), b"definitely not an image"]
        with pytest.raises(ImageError, match="image 3: not an image"):
            clf.register("red", bad)
        with pytest.raises(ImageError, match="image 3"):
            clf.add_shots("green", bad)
        assert [c.name for c in clf.classes()] == ["green"]
    assert store.read_bytes() == before


def test_store_rules_reach_the_api(clf):
    clf.register("cat", [solid(RED)])
    with pytest.raises(StoreError, match="already registered"):
        clf.register("cat", [solid(BLUE)])
    with pytest.raises(StoreError, match="path separator"):
        clf.register("a/b", [solid(BLUE)])
    with pytest.raises(StoreError, match="at least one support image"):
        clf.register("dog", [])
    with pytest.raises(StoreError, match="no class 'dog'"):
        clf.add_shots("dog", [solid(BLUE)])
    assert clf.add_shots("cat", [solid(BLUE)]).shots == 2
    clf.remove("cat")
    with pytest.raises(StoreError, match="no class 'cat'"):
        clf.remove("cat")


def test_classify_needs_classes_and_valid_arguments(clf):
    with pytest.raises(DistilshotError, match="no classes are registered"):
        clf.classify([solid(RED)])
    clf.register("red", [solid(RED)])
    with pytest.raises(DistilshotError, match="top_k must be at least 1"):
        clf.classify([solid(RED)], top_k=0)
    with pytest.raises(DistilshotError, match="list of images"):
        clf.classify(solid(RED))  # type: ignore[arg-type]
    with pytest.raises(DistilshotError, match="2 names for 1 images"):
        clf.classify([solid(RED)], names=["a", "b"])
    assert clf.classify([]) == []
    assert clf.classify([solid(RED)], names=["mine"])[0].image == "mine"


def test_remove_then_classify(clf):
    clf.register("red", [solid(RED)])
    clf.register("blue", [solid(BLUE)])
    clf.remove("red")
    assert clf.classify([solid(RED)])[0].top_k[0][0] == "blue"


def test_store_persists_and_refuses_another_model(bundle, tmp_path):
    store = tmp_path / "s.db"
    with FewShotClassifier(bundle, store) as clf:
        clf.register("red", [write_image(tmp_path / "dir" / "r.png", solid(RED))])
    with FewShotClassifier(bundle, store) as clf:
        assert clf.classify([solid(RED)])[0].top_k == [("red", 1.0)]
    other = make_bundle(tmp_path / "other", "two")
    with pytest.raises(StoreError, match="never mixed"):
        FewShotClassifier(other, store)
    conn = sqlite3.connect(store)
    source, png = conn.execute("SELECT source, thumbnail FROM shots").fetchone()
    conn.close()
    assert source == "r.png"  # the file name, not the caller's folder layout
    assert Image.open(io.BytesIO(png)).size == (24, 20)


def test_thumbnails_are_downscaled(bundle, tmp_path):
    with FewShotClassifier(bundle, tmp_path / "s.db") as clf:
        clf.register("big", [solid(RED, (1000, 400))])
    conn = sqlite3.connect(tmp_path / "s.db")
    png = conn.execute("SELECT thumbnail FROM shots").fetchone()[0]
    conn.close()
    assert Image.open(io.BytesIO(png)).size == (256, 102)


def test_register_folder_is_one_transaction(bundle, tmp_path):
    support = tmp_path / "support"
    write_image(support / "b red" / "1.png", solid(RED))
    write_image(support / "b red" / "2.jpg", solid((240, 0, 0)), "JPEG")
    (support / "b red" / "notes.txt").write_text("ignored")
    write_image(support / "a blue" / "1.png", solid(BLUE))
    assert list(folder_classes(support)) == ["a blue", "b red"]
    with FewShotClassifier(bundle) as clf:
        infos = clf.register_folder(support)
        assert [(i.name, i.shots) for i in infos] == [("a blue", 1), ("b red", 2)]
    (support / "c broken").mkdir()
    (support / "c broken" / "x.png").write_bytes(b"broken")
    with FewShotClassifier(bundle) as clf:
        with pytest.raises(ImageError, match=r"x\.png"):
            clf.register_folder(support)
        assert clf.classes() == []
    with pytest.raises(DistilshotError, match="no image files"):
        (support / "d empty").mkdir()
        folder_classes(support)
    with pytest.raises(DistilshotError, match="no class subfolders"):
        folder_classes(support / "a blue")


def test_info_summarises_the_bundle_and_engine(clf, bundle):
    info = clf.info()
    assert info["method"] == "protonet" and info["backbone"] == "tinynet" and info["dataset"] == "colours"
    assert info["metrics"] == {"5way-1shot": {"accuracy": 0.5, "ci95": 0.01}}
    assert info["fingerprint"] == clf.manifest.fingerprint() and len(info["fingerprint"]) == 64
    assert info["engine"] == "onnxruntime" and info["providers"] == ["CPUExecutionProvider"]
    assert info["store"] is None and info["classes"] == 0


def int8_variant(bundle_dir):
    """`bundle_dir` with a second graph "embedder-int8" (the "top" embedder: other bytes, other
    embeddings), as export adds an int8 graph."""
    import dataclasses

    import onnx
    from serve_fixtures import embedder_model

    from distilshot.core.files import sha256_file
    from distilshot.core.manifest import load_manifest

    onnx.save(embedder_model("top"), bundle_dir / "int8.onnx")
    manifest = load_manifest(bundle_dir)
    graph = dataclasses.replace(manifest.embedder, file="int8.onnx", precision="int8")
    files = {**manifest.files, "int8.onnx": sha256_file(bundle_dir / "int8.onnx")}
    dataclasses.replace(manifest, graphs={**manifest.graphs, "embedder-int8": graph}, files=files).save(
        bundle_dir
    )
    return bundle_dir


def test_a_store_of_another_graph_or_model_names_the_reembed_command(tmp_path):
    bundle = int8_variant(make_bundle(tmp_path / "b"))
    with FewShotClassifier(bundle, tmp_path / "s.db") as clf:
        clf.register("red", [solid(RED)])
    with pytest.raises(StoreError) as other_graph:
        FewShotClassifier(bundle, tmp_path / "s.db", precision="int8")
    message = str(other_graph.value)
    assert "holds the embeddings of this bundle's fp32 graph, not of its int8 graph" in message
    assert "open it with --precision fp32" in message and "another model" not in message
    assert f"distilshot reembed --bundle {bundle} --store {tmp_path / 's.db'} --precision int8" in message

    other = make_bundle(tmp_path / "other", "two")
    with pytest.raises(StoreError) as other_model:
        FewShotClassifier(other, tmp_path / "s.db")
    message = str(other_model.value)
    assert "another model" in message and "re-embed its 1 support images" in message
    assert f"`distilshot reembed --bundle {other} --store {tmp_path / 's.db'}`" in message
    assert "--reembed" not in message  # a flag few commands have

    with FewShotClassifier(bundle, tmp_path / "s.db", precision="int8", reembed=True) as clf:
        assert clf.classes()[0].shots == 1  # re-embedded for the int8 graph, which now opens it
    FewShotClassifier(bundle, tmp_path / "s.db", precision="int8").close()


def test_embed_returns_the_named_embeddings_of_paths_bytes_pil_and_arrays(clf, tmp_path):
    path = write_image(tmp_path / "red.png", solid(RED))
    pixels = np.asarray(solid(BLUE))
    embedded = clf.embed([path, encode(solid(GREEN)), solid(RED), pixels, pixels[:, :, :1]])
    assert set(embedded) == {"embedding"} and embedded["embedding"].dtype == np.float32
    vectors = embedded["embedding"]
    assert vectors.shape == (5, 4)
    for row, rgb in enumerate([RED, GREEN, RED, BLUE]):
        np.testing.assert_allclose(vectors[row], expected_embedding(rgb), atol=1e-5)
    np.testing.assert_allclose(
        vectors[4], expected_embedding((0, 0, 0)), atol=1e-5
    )  # its red channel (0) as a grey image
    assert clf.embed([])["embedding"].shape == (0, 4)
    with pytest.raises(DistilshotError, match="a list of images, not a single image"):
        clf.embed(pixels)
    batch = np.stack([pixels, pixels])  # an [N, H, W, C] array is N images
    np.testing.assert_allclose(clf.embed(batch)["embedding"], vectors[[3, 3]], atol=1e-6)


def test_arrays_register_and_classify_like_images(clf):
    clf.register("red", [np.asarray(solid(RED))])
    clf.register("blue", [np.asarray(solid(BLUE)).copy()])
    (prediction,) = clf.classify([np.asarray(solid((200, 20, 20)))])
    assert prediction.image == "image 1" and prediction.label == "red"
    with pytest.raises(ImageError, match="image 2: an image array must hold uint8 pixels"):
        clf.register("green", [np.asarray(solid(GREEN)), np.zeros((20, 20), np.float64)])
    assert [c.name for c in clf.classes()] == ["blue", "red"]


def test_register_exist_ok_makes_a_script_rerunnable(clf):
    first = clf.register("café", [solid(RED)], exist_ok=True)
    again = clf.register("cafe\u0301", [solid(BLUE), solid(BLUE)], exist_ok=True)  # the same name, decomposed
    assert again == first and clf.classes()[0].shots == 1  # left as it was
    with pytest.raises(StoreError, match="already registered"):
        clf.register("café", [solid(RED)])
    assert clf.add_shots("café", [solid(RED)]).shots == 2


def test_classify_each_answers_the_good_images_and_returns_the_errors(clf, tmp_path):
    clf.register("red", [solid(RED)])
    clf.register("blue", [solid(BLUE)])
    answers = clf.classify_each([solid(RED), b"not an image", tmp_path / "missing.png", solid(BLUE)])
    assert [a.label for a in (answers[0], answers[3])] == ["red", "blue"]
    assert isinstance(answers[1], ImageError) and "image 2: not an image" in str(answers[1])
    assert isinstance(answers[2], ImageError) and "missing.png: file not found" in str(answers[2])
    assert [a.image for a in (answers[0], answers[3])] == ["image 1", "image 4"]
    with pytest.raises(ImageError):
        clf.classify([solid(RED), b"not an image"])


def test_close_closes_the_engine_too_and_again_does_no_harm(bundle, monkeypatch):
    classifier = FewShotClassifier(bundle)
    engine, closes = classifier.engine, []
    close_engine = engine.close

    def recording_close() -> None:
        closes.append(engine.name)
        close_engine()

    monkeypatch.setattr(engine, "close", recording_close)
    with classifier:
        classifier.register("red", [solid(RED)])
    assert closes == ["onnxruntime"]  # a TensorRT or CUDA engine frees its device memory here
    with pytest.raises(DistilshotError, match="the onnxruntime engine is closed"):
        classifier.embed([solid(RED)])
    classifier.close()  # again, as `with` after an explicit close does: each engine's close is idempotent
    assert closes == ["onnxruntime", "onnxruntime"]


def test_a_store_that_does_not_open_leaves_no_engine_open(bundle, tmp_path, monkeypatch):
    import distilshot.serve.classifier as classifier_module

    with FewShotClassifier(bundle, tmp_path / "s.db") as first:
        first.register("red", [solid(RED)])
    real_open, opened = classifier_module.open_engine, []
    monkeypatch.setattr(
        classifier_module, "open_engine", lambda *a, **k: opened.append(real_open(*a, **k)) or opened[-1]
    )
    other = make_bundle(tmp_path / "other", "two")
    with pytest.raises(StoreError, match="another model"):
        FewShotClassifier(other, tmp_path / "s.db")
    with pytest.raises(DistilshotError, match="the onnxruntime engine is closed"):
        opened[0].embed(np.zeros((1, 1, 28, 28), np.float32))
