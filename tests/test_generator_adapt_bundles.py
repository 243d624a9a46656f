"""Issue 4's deployment forms: generators inside a bundle (serving `augment`), and REFILLED's adapt mode
(a student bundle with a fixed classifier over a store's classes)."""

import json
import os
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from method_runs import cli

from distilshot.core.manifest import Generators, load_manifest
from distilshot.errors import BundleError, DistilshotError
from distilshot.export.adapt_bundle import adapt, restore_for
from distilshot.export.bundle import write_bundle
from distilshot.export.generator_bundle import add_generators, export_generator
from distilshot.serve.classifier import FewShotClassifier
from distilshot.serve.extra_heads import GeneratorEnsemble
from distilshot.train.adapt import AdaptConfig
from distilshot.train.checkpoint import ModelSpec, save_checkpoint
from distilshot.train.generator import FeatureGenerator, GeneratorConfig, augment_class

DATA = Path(os.environ["DISTILSHOT_DATA"]) / "omniglot" / "images_evaluation"
CHARACTERS = ["Angelic/character01", "Keble/character02", "Tibetan/character05", "Oriya/character02"]


def drawings(character: str, start: int, count: int) -> list[Path]:
    return sorted((DATA / character).glob("*.png"))[start : start + count]


SPEC = ModelSpec("protonet", "convnet4", 10, 1, 28, (0.92,), (0.21,), "omniglot", {})


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    path, _ = write_bundle(SPEC.build(seed=0).eval(), SPEC, tmp_path_factory.mktemp("b") / "bundle")
    return path


def test_served_generation_follows_the_training_rule(tmp_path: Path) -> None:
    torch.manual_seed(0)
    generator = FeatureGenerator(dim=6, noise_dim=3, hidden=8)
    torch.nn.init.normal_(generator.net[-1].weight)  # not the identity it starts as
    export_generator(generator, tmp_path / "g.onnx")
    ensemble = GeneratorEnsemble(tmp_path, Generators(("g.onnx",), "embedding", 6, 3, 8, "plain"))
    real = np.random.default_rng(1).standard_normal((2, 6)).astype(np.float32)
    (served,) = ensemble.generate(real, 5, seed=7)
    noise = np.random.default_rng(7).standard_normal((5, 3)).astype(np.float32)
    with torch.no_grad():
        trained = augment_class(generator, torch.from_numpy(real), 5, torch.from_numpy(noise)).numpy()
    np.testing.assert_allclose(served, trained, atol=1e-5)


def test_generators_join_the_bundle_and_serve_augmented_predictions(bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(DistilshotError, match="no feature generator"):
        FewShotClassifier(bundle).classify(drawings(CHARACTERS[0], 0, 1), augment=True)
    args = ["--iterations", 30, "--k-max", 10, "--members", 2, "--episodes", 20, "--json"]
    added = json.loads(cli("generator", "--bundle", bundle, *args).stdout)  # as a user adds them
    results = added["results"]
    assert [r["k_shot"] for r in results] == [1, 1, 5, 5] and "2 generators" in results[1]["classifier"]
    manifest = load_manifest(bundle)
    assert manifest.generators is not None and len(manifest.generators.files) == 2
    assert any("[weaken-student]" in key for key in manifest.metrics)
    first_files = manifest.generators.files
    cfg = GeneratorConfig(schedule="weaken-student", iterations=30, k_max=10, members=2, seed=0)
    manifest, _ = add_generators(bundle, cfg, episodes=20)  # replaced, not accumulated
    on_disk = {p.relative_to(bundle).as_posix() for p in (bundle / "generators").rglob("*.onnx")}
    on_disk |= {p.relative_to(bundle).as_posix() for p in bundle.glob("generators-*/*.onnx")}
    assert on_disk == set(manifest.generators.files) and set(first_files) != set(manifest.generators.files)

    shots = {
        character.replace("/", " "): drawings(character, 0, k) for k, character in enumerate(CHARACTERS, 1)
    }
    queries = [drawings(c, 5, 1)[0] for c in CHARACTERS]
    with FewShotClassifier(bundle) as clf:
        for name, support in shots.items():  # 1 to 4 shots: the noise seed and count follow each k
            clf.register(name, support)
        augmented = clf.classify(queries, top_k=4, augment=True)
        again = clf.classify(queries, top_k=4, augment=True)
        plain = clf.classify(queries, top_k=4)
    assert [p.top_k for p in augmented] == [p.top_k for p in again]  # the noise is a function of each class
    scores, logits = augmented_by_hand(bundle, shots, queries)
    for row, prediction in enumerate(augmented):
        order = [list(shots).index(label) for label, _ in prediction.top_k]
        assert order == list(np.argsort(-scores[row], kind="stable"))
        # float32 embeddings and generator outputs, summed in another order: ~1e-6 relative
        np.testing.assert_allclose([s for _, s in prediction.top_k], scores[row, order], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(prediction.logits, logits[row, order], rtol=1e-4)
    assert not np.allclose([p.logits for p in augmented], [p.logits for p in plain])  # generators count

    generator_file = bundle / manifest.generators.files[0]
    original = generator_file.read_bytes()
    generator_file.write_bytes(original[:-4] + b"\0\0\0\0")
    try:
        with pytest.raises(BundleError, match="sha256"):
            FewShotClassifier(bundle)
    finally:
        generator_file.write_bytes(original)


def augmented_by_hand(
    bundle: Path, shots: dict[str, list[Path]], queries: list[Path]
) -> tuple[np.ndarray, np.ndarray]:
    """The documented rule (manifest.Generators), with ONNX Runtime on the bundle's graphs: a class with k
    shots gets k_max - k features per generator from G(x, z, q) (x cycling through its real embeddings, q
    their mean, z standard normal seeded by crc32(name NUL k)); each generator's student takes the mean
    of real + generated as the prototype; scores are the members' mean softmax, logits their mean."""
    import onnxruntime as ort
    from PIL import Image

    from distilshot.core.preprocess import preprocess

    manifest = load_manifest(bundle)
    gen = manifest.generators
    assert gen is not None and manifest.head.metric == "euclidean" and gen.output == "embedding"
    embedder = ort.InferenceSession(str(bundle / manifest.embedder.file), providers=["CPUExecutionProvider"])

    def embed(paths: list[Path]) -> np.ndarray:
        pixels = preprocess([Image.open(p) for p in paths], manifest.preprocessing)
        return embedder.run([gen.output], {manifest.embedder.input: pixels})[0].astype(np.float64)

    query = embed(queries)
    member_logits = []
    for file in gen.files:
        generator = ort.InferenceSession(str(bundle / file), providers=["CPUExecutionProvider"])
        prototypes = []
        for name, paths in shots.items():
            real, k = embed(paths), len(paths)
            count = gen.k_max - k
            seed = zlib.crc32(f"{name}\x00{k}".encode())
            z = np.random.default_rng(seed).standard_normal((count, gen.noise_dim)).astype(np.float32)
            x = real[np.arange(count) % k].astype(np.float32)
            q = np.repeat(real.mean(0, keepdims=True), count, axis=0).astype(np.float32)
            fake = generator.run(["feature"], {"x": x, "z": z, "q": q})[0]
            prototypes.append(np.concatenate([real, fake]).mean(0))
        distances = ((query[:, None, :] - np.array(prototypes)[None]) ** 2).sum(-1)
        member_logits.append(-distances * manifest.head.weights[gen.output] / manifest.head.temperature)
    softmax = [np.exp(z - z.max(1, keepdims=True)) for z in member_logits]
    scores = np.mean([e / e.sum(1, keepdims=True) for e in softmax], axis=0)
    return scores, np.mean(member_logits, axis=0)


def test_adapt_builds_a_student_bundle_with_a_fixed_classifier(bundle: Path, tmp_path: Path) -> None:
    store = tmp_path / "classes.db"
    with FewShotClassifier(bundle, store) as clf:
        for character in CHARACTERS[:3]:
            clf.register(character.replace("/", " "), drawings(character, 0, 4))
    cfg = AdaptConfig(embed_steps=10, classify_steps=30, augment="none")
    outcome = adapt(bundle, store, tmp_path / "student", cfg)
    assert outcome.images == 12 and outcome.max_abs_diff <= 1e-3
    manifest = load_manifest(outcome.bundle)
    assert manifest.classifier is not None and sorted(manifest.classifier.labels) == sorted(outcome.classes)
    assert json.loads((outcome.bundle / "manifest.json").read_text())["method"] == "refilled-classify"

    new_store = tmp_path / "student.db"
    restore_for(outcome.bundle, store, new_store)
    with FewShotClassifier(outcome.bundle, new_store) as clf:
        assert sorted(c.name for c in clf.classes()) == sorted(outcome.classes)
        fixed = clf.classify(drawings(CHARACTERS[0], 0, 4))
        assert clf.fixed is not None and clf.fixed.applies_to([c.name for c in clf.classes()])
        assert {p.top_k[0][0] for p in fixed} == {CHARACTERS[0].replace("/", " ")}  # its own training images
        clf.register("new class", drawings(CHARACTERS[3], 0, 2))
        mixed = clf.classify(drawings(CHARACTERS[3], 2, 1))  # prototypes again: four classes
        assert len(mixed[0].top_k) == 4
    with pytest.raises(DistilshotError, match="already exists"):
        adapt(bundle, store, tmp_path / "student", cfg)


def test_adapt_runs_from_the_cli_starting_from_a_checkpoint(bundle: Path, tmp_path: Path) -> None:
    store = tmp_path / "classes.db"
    with FewShotClassifier(bundle, store) as clf:
        for character in CHARACTERS[:2]:
            clf.register(character.replace("/", " "), drawings(character, 0, 3))
    checkpoint = save_checkpoint(tmp_path / "base.pt", SPEC, SPEC.build(seed=0))  # the bundle's model
    args = ["adapt", "--bundle", bundle, "--store", store, "--out"]
    summary = json.loads(
        cli(*args, tmp_path / "student", "--steps", 5, "--start", checkpoint, "--json").stdout
    )
    assert summary["images"] == 6 and summary["max_abs_diff"] <= 1e-3
    recorded = json.loads((tmp_path / "student" / "manifest.json").read_text())
    assert recorded["training"]["adapt"]["start"] == "base.pt"
    wide = replace(SPEC, backbone="resnet12")
    other = save_checkpoint(tmp_path / "resnet12.pt", wide, wide.build(seed=0))
    error = cli(*args, tmp_path / "student2", "--start", other, ok=False).stderr
    assert "backbones differ" in error and not (tmp_path / "student2").exists()
