"""`distilshot adapt`: REFILLED's adapt mode. The classes registered in a store (middle-shot: 10-30
images each) train a small task-specific student, distilled from the bundle's own embedder as a frozen
teacher; the result is a new bundle with the student's embedder and a fixed classifier over exactly those
classes, which serving uses while the registered classes stay the same (new classes fall back to the
prototype head on the student's embedding)."""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from torch import nn

from distilshot.core.files import sha256_file
from distilshot.core.manifest import FixedClassifier, Manifest, load_manifest
from distilshot.errors import DistilshotError
from distilshot.export.bundle import stage_embedder, staged_folder
from distilshot.serve.engines.registry import open_engine
from distilshot.serve.extra_heads import FixedClassifierHead
from distilshot.serve.store import open_store
from distilshot.train.adapt import AdaptConfig, student_logits, train_task_student
from distilshot.train.augment import normalize, to_float
from distilshot.train.backbones.base import Backbone
from distilshot.train.checkpoint import ModelSpec, load_model
from distilshot.train.data.decode import decode_image
from distilshot.train.methods.base import Method

CLASSIFIER_FILE = "classifier.onnx"


class BundleTeacher(Method):
    """A bundle's embedder run by ONNX Runtime as a frozen teacher: REFILLED needs only its embeddings."""

    name = "bundle"
    sampling = "batches"

    def __init__(self, bundle: Path, manifest: Manifest) -> None:
        prep = manifest.preprocessing
        # describes the input the teacher takes; set_teacher checks it against the student's
        super().__init__(Backbone([nn.Identity()], "avg", prep.channels, prep.height), num_classes=0)
        self.engine = open_engine(bundle, manifest, "onnxruntime")

    def embed(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.engine.embed(x.detach().float().cpu().numpy())
        return {k: torch.from_numpy(v) for k, v in out.items()}


def store_images(store: Path, manifest: Manifest) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Every stored support image at the bundle's input size, with class indices and class names."""
    prep = manifest.preprocessing
    images, labels = [], []
    with open_store(store) as opened:
        names = [c.name for c in opened.classes()]
        for index, name in enumerate(names):
            for shot in opened.shots(name):
                picture = Image.open(io.BytesIO(opened.thumbnail(name, shot.id)))
                images.append(decode_image(picture, prep.height, prep.channels))
                labels.append(index)
    if len(names) < 2:
        raise DistilshotError(f"{store} holds {len(names)} class(es); a task needs at least two")
    return np.stack(images), np.array(labels, dtype=np.int64), names


def classifier_graph(layer: nn.Linear, path: Path) -> None:
    """The student's linear classifier as ONNX: "embedding" [N, d] -> "logits" [N, C]."""
    weight = numpy_helper.from_array(layer.weight.detach().numpy().T.copy(), "weight")
    bias = numpy_helper.from_array(layer.bias.detach().numpy().copy(), "bias")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["embedding", "weight"], ["scores"]),
            helper.make_node("Add", ["scores", "bias"], ["logits"]),
        ],
        "fixed_classifier",
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", layer.in_features])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", layer.out_features])],
        [weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


@dataclass
class AdaptOutcome:
    bundle: Path
    classes: list[str]
    images: int
    fit_accuracy: float
    max_abs_diff: float


def adapt(
    bundle: Path,
    store: Path,
    out: Path,
    cfg: AdaptConfig,
    tolerance: float = 1e-3,
    start: Path | None = None,
) -> AdaptOutcome:
    """`start`: a checkpoint whose backbone the student starts from (e.g. the run the bundle was exported
    from); without it the student starts from random weights."""
    manifest = load_manifest(bundle)
    prep = manifest.preprocessing
    images, labels, names = store_images(store, manifest)
    teacher = BundleTeacher(bundle, manifest)
    initial = None if start is None else load_model(start)[0]
    student = train_task_student(images, labels, prep.mean, prep.std, cfg, teacher, initial)
    logits = student_logits(student, images, prep.mean, prep.std)
    spec = ModelSpec(
        "refilled-classify",
        cfg.backbone,
        len(names),
        prep.channels,
        prep.height,
        prep.mean,
        prep.std,
        f"store:{Path(store).name}",
        {},
    )
    training = {
        "adapt": {
            "teacher_bundle": manifest.name,
            "teacher_fingerprint": manifest.fingerprint(),
            "classes": len(names),
            "images": len(images),
            "start": None if start is None else Path(start).name,
            "config": cfg.__dict__,
        }
    }
    fit = float((logits.argmax(1).numpy() == labels).mean())
    metrics = {
        "adapt fit accuracy": {"mean": 100 * fit, "protocol": f"the {len(images)} stored support images"}
    }
    with staged_folder(out) as staging:
        manifest = stage_embedder(student, spec, staging, metrics, training)
        classifier_graph(student.classifier, staging / CLASSIFIER_FILE)
        fixed = FixedClassifier(CLASSIFIER_FILE, "embedding", tuple(names))
        embeddings = open_engine(staging, manifest, "onnxruntime").embed(
            normalize(to_float(images), prep.mean, prep.std).numpy()
        )
        served = FixedClassifierHead(staging, fixed).logits(embeddings, list(names))
        diff = float(np.abs(served - logits.numpy()).max())
        if not diff <= tolerance:
            raise DistilshotError(f"the exported student differs from PyTorch by {diff:.2e}")
        files = {**manifest.files, CLASSIFIER_FILE: sha256_file(staging / CLASSIFIER_FILE)}
        replace(manifest, classifier=fixed, files=files).save(staging)
    return AdaptOutcome(Path(out), names, len(images), fit, diff)


def restore_for(bundle: Path, store: Path, new_store: Path) -> None:
    """A copy of `store` for the adapted bundle: every stored image embedded again with its student."""
    from distilshot.serve.classifier import FewShotClassifier

    with tempfile.TemporaryDirectory() as tmp, open_store(store) as old:
        copy = old.export_to(Path(tmp) / "store.db")
        with FewShotClassifier(bundle, new_store) as classifier:
            classifier.import_store(copy)
