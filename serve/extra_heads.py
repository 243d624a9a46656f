"""What a bundle may add to the prototype head: feature generators that augment each class before its
prototype is taken, and a fixed classifier trained for exactly the registered classes. Both are small
ONNX graphs on embeddings, run with ONNX Runtime on the CPU."""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from distilshot.core.head import PrototypeHead, class_mean, softmax
from distilshot.core.manifest import FixedClassifier, Generators
from distilshot.errors import DistilshotError


def _session(path: Path) -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise DistilshotError("ONNX Runtime is not installed: pip install distilshot[cpu]") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # graphs of a few matrix products: threads only add overhead
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def class_noise_seed(label: str, shots: int) -> int:
    """Noise for a class's generated features is a function of its name and shot count, so the same store
    always gives the same predictions."""
    return zlib.crc32(f"{label}\x00{shots}".encode())


class GeneratorEnsemble:
    def __init__(self, bundle_dir: Path, spec: Generators) -> None:
        self.spec = spec
        self.sessions = [_session(Path(bundle_dir) / f) for f in spec.files]

    def generate(self, real: np.ndarray, count: int, seed: int) -> list[np.ndarray]:
        """Per generator, `count` features for one class from its real embeddings [k, d]: x cycles through
        the real ones, q is their mean, z is standard normal from `seed`."""
        if count <= 0:
            return [np.zeros((0, real.shape[1]), np.float32) for _ in self.sessions]
        x = real[np.arange(count) % len(real)].astype(np.float32)
        q = np.repeat(class_mean(real)[None], count, axis=0)
        z = np.random.default_rng(seed).standard_normal((count, self.spec.noise_dim)).astype(np.float32)
        return [s.run(["feature"], {"x": x, "z": z, "q": q})[0] for s in self.sessions]

    def member_means(
        self, labels: Sequence[str], shots: Mapping[str, Mapping[str, np.ndarray]]
    ) -> list[dict[str, np.ndarray]]:
        """Per generator, the class means per output after augmenting output `spec.output`; other outputs
        keep their plain means. `shots[label][output]` holds a class's support embeddings [k, d]."""
        members: list[dict[str, list[np.ndarray]]] = [{} for _ in self.sessions]
        for label in labels:
            real = shots[label]
            k = len(real[self.spec.output])  # the class's shot count (not its number of outputs)
            generated = self.generate(
                real[self.spec.output], max(self.spec.k_max - k, 0), class_noise_seed(label, k)
            )
            for m, fake in enumerate(generated):
                for output, vectors in real.items():
                    rows = np.concatenate([vectors, fake]) if output == self.spec.output else vectors
                    members[m].setdefault(output, []).append(class_mean(rows))
        return [{o: np.stack(v) for o, v in member.items()} for member in members]


def ensemble_logits(
    head: PrototypeHead,
    labels: Sequence[str],
    member_means: Sequence[Mapping[str, np.ndarray]],
    queries: Mapping[str, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """The generators' students averaged as in the paper: mean softmax over members. Returns (scores,
    mean logits); the mean logits only rank within a row."""
    logits = [head.logits(queries, head.prepare(labels, means)) for means in member_means]
    scores = np.mean([softmax(row) for row in logits], axis=0)
    return scores, np.mean(logits, axis=0)


class FixedClassifierHead:
    def __init__(self, bundle_dir: Path, spec: FixedClassifier) -> None:
        self.spec = spec
        self.session = _session(Path(bundle_dir) / spec.file)

    def applies_to(self, labels: Sequence[str]) -> bool:
        return sorted(labels) == sorted(self.spec.labels)

    def logits(self, queries: Mapping[str, np.ndarray], labels: Sequence[str]) -> np.ndarray:
        """Logits [N, K] with columns in the order of `labels` (the registered classes)."""
        raw = self.session.run(["logits"], {"embedding": queries[self.spec.output].astype(np.float32)})[0]
        column = {label: i for i, label in enumerate(self.spec.labels)}
        return raw[:, [column[label] for label in labels]]
