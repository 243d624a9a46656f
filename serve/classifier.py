"""The Python API of the runtime: register support images per class, classify queries.

CLI, HTTP and demo front ends are meant to be thin layers over `FewShotClassifier`: every method takes
paths, bytes, PIL images or uint8 numpy arrays (with optional display names), validates all of them
before anything is stored, and returns plain dataclasses / dicts ready to print or serialise.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from distilshot.core.head import PrototypeHead, top_k_indices
from distilshot.core.manifest import Manifest, load_manifest
from distilshot.core.preprocess import normalise, to_model_pixels
from distilshot.errors import DistilshotError, ImageError, StoreError
from distilshot.serve.batching import Batcher
from distilshot.serve.engines import open_engine
from distilshot.serve.engines.base import CHUNK_SIZE
from distilshot.serve.extra_heads import FixedClassifierHead, GeneratorEnsemble
from distilshot.serve.images import (
    THUMBNAIL_SIDE,
    ImageSource,
    decoded,
    load_stored_copy,
    source_name,
    thumbnail_png,
)
from distilshot.serve.scoring import AugmentedScorer, ClassSnapshot, FixedScorer, PrototypeScorer, Scorer
from distilshot.serve.store import (
    ClassInfo,
    ClassStore,
    ModelMismatchError,
    Shot,
    ShotInfo,
    UnknownClassError,
    import_shots,
    open_store,
)
from distilshot.serve.store.names import canonical_name

# Files `register_folder` picks up from each class folder; anything else (notes, .DS_Store) is ignored.
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)


@dataclass(frozen=True)
class Prediction:
    """The best classes for one query image. `top_k` holds (label, softmax probability) best first;
    `logits` holds the raw logit of each of those labels in the same order. `unknown` is true when the
    best logit is below the rejection `threshold` (None: no threshold, never unknown). `nearest` holds,
    per top-k label, the id of that class's support shot nearest to the query (when asked for)."""

    image: str
    top_k: list[tuple[str, float]]
    logits: list[float]
    unknown: bool = False
    threshold: float | None = None
    nearest: list[int | None] = field(default_factory=list)

    @property
    def label(self) -> str | None:
        """The answer: the best class, or None for "unknown"."""
        return None if self.unknown else self.top_k[0][0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "label": self.label,
            "unknown": self.unknown,
            "threshold": self.threshold,
            "top_k": [
                {"label": label, "score": score, "logit": logit}
                | ({"shot": self.nearest[i]} if self.nearest else {})
                for i, ((label, score), logit) in enumerate(zip(self.top_k, self.logits, strict=True))
            ],
        }


def folder_classes(folder: Path | str) -> dict[str, list[Path]]:
    """One class per subfolder of `folder` (sorted by name), each with its image files (sorted)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DistilshotError(f"{folder} is not a folder")
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subfolders:
        raise DistilshotError(
            f"{folder} has no class subfolders; put each class's images in its own subfolder"
        )
    classes = {}
    for sub in subfolders:
        files = sorted(
            p
            for p in sub.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise DistilshotError(f"{sub} has no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        classes[sub.name] = files
    return classes


def model_mismatch(store: ClassStore, manifest: Manifest, bundle_dir: Path, precision: str) -> str:
    """Why `store` cannot serve the bundle's `precision` graph, and what to do: run the graph whose
    embeddings the store holds, or re-embed it with `distilshot reembed` (serve/cli.py)."""
    reembed = f"`distilshot reembed --bundle {bundle_dir} --store {store.location}"
    reembed += "`" if precision == "fp32" else f" --precision {precision}`"
    held = [
        manifest.graphs[r].precision for r in manifest.graphs if manifest.fingerprint(r) == store.fingerprint
    ]
    if held:
        return (
            f"store {store.location} holds the embeddings of this bundle's {held[0]} graph, not of its "
            f"{precision} graph, and embeddings of two graphs are never mixed: open it with --precision "
            f"{held[0]} (Python: precision={held[0]!r}), or re-embed it for the {precision} graph with "
            f"{reembed}"
        )
    shots = sum(c.shots for c in store.classes())
    return (
        f"store {store.location} holds embeddings of another model ({store.fingerprint[:12]}…; this bundle "
        f"is {manifest.fingerprint()[:12]}…), and embeddings of two models are never mixed: re-embed its "
        f"{shots} support images with this bundle, after which the store belongs to it, with {reembed} "
        "(Python: reembed=True), or use another store"
    )


class FewShotClassifier:
    """A bundle's embedder plus a support store. `store_path=None` keeps classes in memory only.

    Opening verifies the bundle's files against their sha256s (BundleError) and refuses a store whose
    embeddings come from a different model (StoreError). `backend` picks the inference engine (auto:
    the best that runs here) and `precision` the bundle's graph it runs (fp32, int8, fp16); the store is
    tied to that graph's fingerprint, so int8 and fp32 embeddings never mix.

    With `reembed` a store of another model is accepted: every stored support image is then embedded
    again with this bundle, in one transaction, and the store belongs to it from then on.

    Safe to share between threads: the store serialises its connection, the engine is called by one
    thread at a time through a Batcher that combines the images of concurrent calls, and everything else
    is per call. Several processes may share one store file (SQLite WAL; writers take turns).
    """

    def __init__(
        self,
        bundle_dir: Path | str,
        store_path: Path | str | None = None,
        backend: str = "auto",
        *,
        providers: Sequence[str] | None = None,
        reembed: bool = False,
        precision: str = "fp32",
    ) -> None:
        self.bundle_dir = Path(bundle_dir)
        self.manifest = load_manifest(self.bundle_dir)
        self.engine = open_engine(self.bundle_dir, self.manifest, backend, providers, precision)
        self.head = PrototypeHead(self.manifest.head)
        self.batcher = Batcher(self._embed, CHUNK_SIZE)
        reembedder = self._reembed_stored if reembed else None
        try:
            self.store = self._open_store(store_path, reembedder, precision)
        except BaseException:
            self.engine.close()  # a store that does not open (another model's, say) leaves no engine behind
            raise
        try:
            self._set_up_scorers()
        except BaseException:
            self.close()
            raise
        self._snapshot: ClassSnapshot | None = None
        self._snapshot_lock = threading.Lock()

    def _set_up_scorers(self) -> None:
        m = self.manifest
        self.plain = PrototypeScorer(self.head, None if m.rejection is None else m.rejection.threshold)
        self.augmented = (
            None
            if m.generators is None
            else AugmentedScorer(
                self.head,
                GeneratorEnsemble(self.bundle_dir, m.generators),
                lambda label: self.store.shot_embeddings(label)[1],
            )
        )
        self.fixed = (
            None if m.classifier is None else FixedScorer(FixedClassifierHead(self.bundle_dir, m.classifier))
        )

    def _open_store(self, store_path: Path | str | None, reembedder: Any, precision: str) -> ClassStore:
        layout = {o.name: o.dim for o in self.manifest.embedder.outputs}
        try:
            return open_store(
                store_path, self.manifest.fingerprint(self.engine.role), reembedder, layout=layout
            )
        except ModelMismatchError:
            with open_store(store_path) as held:
                message = model_mismatch(held, self.manifest, self.bundle_dir, precision)
            raise ModelMismatchError(message) from None

    def close(self) -> None:
        """Closes the store and the engine, freeing what the engine holds (GPU memory and streams for
        TensorRT and CUDA) now rather than when it is collected; closing again does nothing more."""
        try:
            self.store.close()
        finally:
            self.engine.close()  # even if closing the store failed

    def __enter__(self) -> FewShotClassifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- classes ------------------------------------------------------------------------------------

    def register(
        self,
        name: str,
        images: Sequence[ImageSource],
        *,
        names: Sequence[str] | None = None,
        exist_ok: bool = False,
    ) -> ClassInfo:
        """Adds a new class from its support images; a bad image or name stores nothing. With `exist_ok`,
        a class of that name is left as it is (its images are not read again) and returned, so that a
        script registering its classes can run twice; `add_shots` adds images to a class."""
        if exist_ok:
            existing = {c.name: c for c in self.classes()}.get(canonical_name(name))
            if existing is not None:
                return existing
        return self.register_many({name: images}, names={name: names} if names is not None else None)[0]

    def register_many(
        self,
        classes: Mapping[str, Sequence[ImageSource]],
        *,
        names: Mapping[str, Sequence[str]] | None = None,
    ) -> list[ClassInfo]:
        """Adds several new classes in one transaction: all of them or none."""
        self.store.check_new(list(classes))  # cheap refusals before the embedding work
        shots = {label: self._shots(images, (names or {}).get(label)) for label, images in classes.items()}
        return self.store.register_many(shots)

    def register_folder(self, folder: Path | str) -> list[ClassInfo]:
        """Registers one class per subfolder of `folder` (see `folder_classes`), all in one transaction."""
        return self.register_many(folder_classes(folder))

    def add_shots(
        self, name: str, images: Sequence[ImageSource], *, names: Sequence[str] | None = None
    ) -> ClassInfo:
        """Adds support images to an existing class."""
        self.store.check_existing(name)
        return self.store.add_shots(name, self._shots(images, names))

    def remove(self, name: str) -> None:
        self.store.remove(name)

    def remove_shot(self, name: str, shot_id: int) -> ClassInfo:
        return self.store.remove_shot(name, shot_id)

    def classes(self) -> list[ClassInfo]:
        return self.store.classes()

    def shots(self, name: str) -> list[ShotInfo]:
        return self.store.shots(name)

    def thumbnail(self, name: str, shot_id: int) -> bytes:
        """The stored PNG of a support shot (upright; the image itself up to 256 px, else downscaled)."""
        return self.store.thumbnail(name, shot_id)

    def export_store(self, destination: Path | str) -> Path:
        """Writes a portable copy of the store (one SQLite file) for `import_store` elsewhere."""
        return self.store.export_to(destination)

    def import_store(self, source: Path | str) -> list[ClassInfo]:
        """Adds every class of an exported store, its images embedded again with this bundle (the file's
        vectors are never trusted); all of them or, if any name is taken or anything is invalid, none."""
        layout = {o.name: o.dim for o in self.manifest.embedder.outputs}
        shots = import_shots(source, self.store.fingerprint, layout, self._reembed_stored)
        return self.store.register_many(shots)

    # -- classification -----------------------------------------------------------------------------

    def classify(
        self,
        images: Sequence[ImageSource],
        top_k: int = 5,
        *,
        names: Sequence[str] | None = None,
        threshold: float | None = None,
        nearest: bool = False,
        augment: bool = False,
    ) -> list[Prediction]:
        """The `top_k` most probable classes (clipped to the number of classes) for each query image, and
        "unknown" when the best logit is below `threshold` (default: the bundle's calibrated threshold).
        With `nearest`, each top-k class also names its support shot nearest to the query.

        With `augment`, every class is completed with the bundle's generated features before its
        prototype is taken (most useful at 1-2 shots); when the registered classes are exactly those of
        the bundle's fixed classifier, that classifier decides. The calibrated threshold belongs to the
        plain prototype head, so those two answer "unknown" only for an explicit `threshold`
        (serve/scoring.py holds each one's rule)."""
        self._check_classify_options(top_k, threshold, augment)
        image_names, pixels, _ = self._read(images, names, thumbnails=False)
        return self._predict(image_names, pixels, top_k, threshold, nearest, augment)

    def classify_each(
        self,
        images: Sequence[ImageSource],
        top_k: int = 5,
        *,
        names: Sequence[str] | None = None,
        threshold: float | None = None,
        nearest: bool = False,
        augment: bool = False,
    ) -> list[Prediction | ImageError]:
        """`classify`, except that an image that cannot be used does not fail the call: its ImageError
        takes its place in the answer, in the order of `images`."""
        self._check_classify_options(top_k, threshold, augment)
        failures: dict[int, ImageError] = {}
        image_names, pixels, _ = self._read(images, names, thumbnails=False, failures=failures)
        predictions = iter(self._predict(image_names, pixels, top_k, threshold, nearest, augment))
        return [failures[i] if i in failures else next(predictions) for i in range(len(images))]

    def embed(
        self, images: Sequence[ImageSource], *, names: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """The embeddings of `images` by output name (the manifest's graph outputs), each [images, dim]
        float32: what the store keeps for support shots and the head compares."""
        image_names, pixels, _ = self._read(images, names, thumbnails=False)
        if not image_names:
            return {o.name: np.zeros((0, o.dim), np.float32) for o in self.manifest.embedder.outputs}
        return self.batcher.run(pixels)

    def _check_classify_options(self, top_k: int, threshold: float | None, augment: bool) -> None:
        if augment and self.augmented is None:
            raise DistilshotError(
                f"bundle {self.bundle_dir} has no feature generator; add one with "
                f"`distilshot generator --bundle {self.bundle_dir}`"
            )
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise DistilshotError(f"top_k must be at least 1 and a whole number, not {top_k!r}")
        if threshold is not None and not np.isfinite(threshold):
            raise DistilshotError(f"threshold must be a finite number, not {threshold!r}")

    def _predict(
        self,
        image_names: list[str],
        pixels: np.ndarray,
        top_k: int,
        threshold: float | None,
        nearest: bool,
        augment: bool,
    ) -> list[Prediction]:
        classes = self._classes()
        if not classes.labels:
            raise DistilshotError("no classes are registered yet; register some support images first")
        if not image_names:
            return []
        embeddings = self.batcher.run(pixels)
        scores = self._scorer(augment, classes.labels).score(
            classes, embeddings, None if threshold is None else float(threshold)
        )
        labels, probabilities, logits = classes.labels, scores.probabilities, scores.logits
        best = top_k_indices(probabilities, top_k)
        return [
            Prediction(
                image=image,
                top_k=[(labels[c], float(probabilities[row, c])) for c in best[row]],
                logits=[float(logits[row, c]) for c in best[row]],
                unknown=scores.threshold is not None and float(logits[row, best[row, 0]]) < scores.threshold,
                threshold=scores.threshold,
                nearest=(
                    [self._nearest_shot(labels[c], embeddings, row) for c in best[row]] if nearest else []
                ),
            )
            for row, image in enumerate(image_names)
        ]

    def _scorer(self, augment: bool, labels: list[str]) -> Scorer:
        if augment and self.augmented is not None:
            return self.augmented
        if self.fixed is not None and self.fixed.applies_to(labels):
            return self.fixed
        return self.plain

    def _classes(self) -> ClassSnapshot:
        """The registered classes, numbered: the store hands back the same prototype objects until it
        changes (serve/store/interface.py), so other objects are the next version."""
        labels, means = self.store.prototypes()
        with self._snapshot_lock:
            snapshot = self._snapshot
            if snapshot is None or snapshot.means is not means:
                version = 0 if snapshot is None else snapshot.version + 1
                snapshot = self._snapshot = ClassSnapshot(version, labels, means)
            return snapshot

    def _nearest_shot(self, label: str, queries: Mapping[str, np.ndarray], row: int) -> int | None:
        """The id of class `label`'s support shot with the highest logit for query `row` (None if the class
        was removed meanwhile)."""
        try:
            ids, vectors = self.store.shot_embeddings(label)
        except UnknownClassError:
            return None
        shots = self.head.prepare([str(i) for i in ids], vectors)
        logits = self.head.logits({o: v[row : row + 1] for o, v in queries.items()}, shots)
        return ids[int(np.argmax(logits[0]))]

    # -- images -------------------------------------------------------------------------------------

    def _read(
        self,
        images: Sequence[ImageSource],
        names: Sequence[str] | None,
        *,
        thumbnails: bool,
        failures: dict[int, ImageError] | None = None,
    ) -> tuple[list[str], np.ndarray, list[bytes]]:
        """Loads and validates every image; keeps only model pixels (and thumbnails), not the decoded
        images, so large calls do not hold many full-size images in memory. Each image is decoded under
        the process-wide decode budget, so concurrent calls wait rather than add up. With `failures`,
        an image that cannot be used is left out and its error kept there by its index."""
        single = isinstance(images, np.ndarray) and images.ndim < 4  # an [N, H, W, C] array is N images
        if single or isinstance(images, str | Path | bytes | Image.Image):
            raise DistilshotError("pass a list of images, not a single image")
        if names is not None and len(names) != len(images):
            raise DistilshotError(f"got {len(names)} names for {len(images)} images")
        prep = self.manifest.preprocessing
        image_names, pixels, thumbs = [], [], []
        for index, source in enumerate(images):
            name = names[index] if names is not None else source_name(source, index)
            try:
                with decoded(source, name=name) as image:
                    pixels.append(to_model_pixels(image, prep))
                    if thumbnails:
                        thumbs.append(thumbnail_png(image))
            except ImageError as error:
                if failures is None:
                    raise
                failures[index] = error
                continue
            image_names.append(name)
        shape = (0, prep.height, prep.width, prep.channels)
        return image_names, np.stack(pixels) if pixels else np.zeros(shape, np.uint8), thumbs

    def _embed(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """One Batcher batch (at most CHUNK_SIZE images) through the engine."""
        embedded = self.engine.embed(normalise(pixels, self.manifest.preprocessing))
        return {o.name: embedded[o.name] for o in self.manifest.embedder.outputs}

    def _shots(self, images: Sequence[ImageSource], names: Sequence[str] | None) -> list[Shot]:
        image_names, pixels, thumbs = self._read(images, names, thumbnails=True)
        if not image_names:
            return []
        embeddings = self.batcher.run(pixels)
        return [
            Shot(
                source=Path(name).name if isinstance(source, str | Path) else name,
                embeddings={output: values[i] for output, values in embeddings.items()},
                thumbnail=thumbs[i],
            )
            for i, (name, source) in enumerate(zip(image_names, images, strict=True))
        ]

    def _reembed_stored(self, images: Sequence[tuple[str, bytes]]) -> dict[str, np.ndarray]:
        """Embeds stored support images (PNG copies) with this bundle. A copy at the size limit may have
        been downscaled; it still re-embeds faithfully if its shorter side is at least the model's input
        side (the preprocessing then only shrinks it further), and is refused otherwise."""
        prep = self.manifest.preprocessing
        pixels = []
        for source, data in images:
            image = load_stored_copy(data, name=f"stored support image {source!r}")
            if max(image.size) >= THUMBNAIL_SIDE and min(image.size) < min(prep.height, prep.width):
                raise StoreError(
                    f"stored support image {source!r} was kept downscaled to {image.size}, "
                    f"smaller than this model's {prep.width}x{prep.height} input: it cannot be re-embedded "
                    "faithfully; register the original images in a new store instead"
                )
            pixels.append(to_model_pixels(image, prep))
        return self.batcher.run(np.stack(pixels))

    # -- description --------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """What is being served: the bundle's model and quality, the engine in use and the store."""
        m = self.manifest
        return {
            "name": m.name,
            "method": m.method,
            "backbone": m.backbone,
            "dataset": m.dataset,
            "metrics": m.metrics,
            "fingerprint": m.fingerprint(self.engine.role),
            "outputs": {o.name: o.dim for o in m.embedder.outputs},
            "head": asdict(m.head),
            "preprocessing": asdict(m.preprocessing),
            "created": m.created,
            "bundle": str(self.bundle_dir),
            "engine": self.engine.name,
            "graph": self.engine.role,
            "precision": m.graphs[self.engine.role].precision,
            "providers": self.engine.providers_in_use,
            "rejection": None if m.rejection is None else asdict(m.rejection),
            "calibration": None if m.calibration is None else asdict(m.calibration),
            "store": self.store.location,
            "classes": len(self.store.classes()),
        }
