"""The bundle manifest: the one contract between training and serving. export/ writes it through
`Manifest.save`, serve/ reads it with `load_manifest`; train/ builds its `Head`.

A bundle is a folder holding `manifest.json` and the graph files it lists, each with its sha256.
"""

from __future__ import annotations

import hashlib
import json
import math
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from distilshot.core.enums import Metric
from distilshot.core.files import sha256_file, write_json_atomic
from distilshot.errors import BundleError

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
METRICS = tuple(metric.value for metric in Metric)  # as plain strings, in the enum's order
RESIZE_MODES = ("shorter-side-center-crop",)
RESAMPLE_FILTERS = ("bilinear", "bicubic", "lanczos", "nearest", "box")  # Pillow's, by name
PRECISIONS = ("fp32", "fp16", "int8")
GRAPH_FORMATS = ("onnx", "openvino")


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the model input: decode, EXIF-orient, convert to `channels` (1 = Pillow "L",
    3 = "RGB"), resize the shorter side to the target and center-crop, scale to [0, 1], subtract `mean`
    and divide by `std` per channel, layout NCHW float32."""

    height: int
    width: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: str = "shorter-side-center-crop"
    resample: str = "bilinear"


@dataclass(frozen=True)
class Output:
    name: str
    dim: int


@dataclass(frozen=True)
class Graph:
    """A graph in the bundle that computes the embedder: NCHW float32 input with a dynamic batch axis,
    float32 outputs, whatever it computes in between. `precision` is what it computes in: fp32, fp16
    (fp16 weights and activations behind fp32 inputs and outputs) or int8 (symmetric QuantizeLinear /
    DequantizeLinear pairs). `format` is onnx, or openvino (IR: `file` is the .xml, `weights` the .bin).
    `source` names the ONNX graph's role that this one was converted from without changing what it
    computes; it then shares that graph's fingerprint."""

    file: str
    input: str
    outputs: tuple[Output, ...]
    precision: str = "fp32"
    format: str = "onnx"
    source: str | None = None
    weights: str | None = None


@dataclass(frozen=True)
class Head:
    """Prototype head: logits[c] = sum over outputs o of weights[o] * s_o(query, prototype_c) / temperature,
    where s_o is the negative squared Euclidean distance or the cosine similarity and a prototype is the
    mean of a class's support embeddings."""

    metric: str
    weights: dict[str, float]
    temperature: float = 1.0


@dataclass(frozen=True)
class Rejection:
    """Open-set rejection: a query whose best logit is below `threshold` is answered "unknown". The
    threshold is the (1 - target) quantile of the best logit of queries of registered classes, measured
    on held-out classes (`protocol`); `known_accepted` and `unknown_rejected` are measured on other
    held-out classes than the ones it was fitted on."""

    threshold: float
    target: float
    protocol: str
    known_accepted: float
    unknown_rejected: float


@dataclass(frozen=True)
class Calibration:
    """Temperature scaling: `temperature` (the head's) is `fitted_from` times the factor that minimises
    the mean negative log-likelihood of episode queries of `fit_split` (`protocol`). ECE (expected
    calibration error over `bins` equal-width bins of the top-1 probability), NLL and top-1 accuracy are
    measured on episodes of `eval_split`, at the head's temperature and, for comparison, at `fitted_from`."""

    temperature: float
    fitted_from: float
    protocol: str
    fit_split: str
    eval_split: str
    bins: int
    ece: float
    ece_uncalibrated: float
    nll: float
    nll_uncalibrated: float
    accuracy: float


@dataclass(frozen=True)
class Generators:
    """Feature generators trained by progressive knowledge distillation. Each file is an ONNX graph with
    inputs "x" [N, d] (a real support embedding), "z" [N, noise_dim] (standard normal noise) and "q"
    [N, d] (the class mean) and output "feature" [N, d], in the space of embedder output `output`.
    With augmentation, a class with k support shots gets k_max - k generated features per generator
    before its prototype is taken; the generators' softmax predictions are averaged."""

    files: tuple[str, ...]
    output: str
    dim: int
    noise_dim: int
    k_max: int
    schedule: str


@dataclass(frozen=True)
class FixedClassifier:
    """A classifier trained for exactly the classes `labels` (REFILLED adapt): the ONNX graph `file` maps
    embedder output `output` ("embedding" [N, d]) to "logits" [N, len(labels)]. Serving uses it while the
    registered classes are exactly `labels`, and the prototype head once others are added."""

    file: str
    output: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class PreprocessGraph:
    """`preprocessing` as an ONNX graph (export/pixels_graph.py), for apps without Pillow: input `input`
    uint8 [N, H, W, channels], channels last, rows top to bottom, any H and W (one size per batch) ->
    the embedder's input, float32 NCHW at the preprocessing's size; it runs in front of any engine of
    the embedder. Decoding, EXIF orientation, compositing over white and conversion to `channels` stay
    the app's, in the integer formulas README "Edge" gives."""

    file: str
    channels: int
    input: str = "pixels"
    layout: str = "NHWC"


@dataclass(frozen=True)
class HeadGraph:
    """`head` as an ONNX graph (export/head_graph.py): inputs, per weighted embedder output o, `o`
    [N, D] (query embeddings) and `o` + `prototypes_suffix` [K, D] (class means, in the app's class
    order); output `output` [N, K], the head's logits at its (calibrated) temperature."""

    file: str
    output: str = "logits"
    prototypes_suffix: str = "_prototypes"


@dataclass(frozen=True)
class Manifest:
    name: str
    method: str
    backbone: str
    dataset: str
    preprocessing: Preprocessing
    graphs: dict[str, Graph]
    head: Head
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    created: str = ""
    rejection: Rejection | None = None
    generators: Generators | None = None
    classifier: FixedClassifier | None = None
    calibration: Calibration | None = None
    preprocess_graph: PreprocessGraph | None = None
    head_graph: HeadGraph | None = None
    schema_version: int = SCHEMA_VERSION

    @property
    def embedder(self) -> Graph:
        return self.graphs["embedder"]

    def fingerprint(self, graph: str = "embedder") -> str:
        """Identifies the embeddings graph role `graph` produces: the hash of its ONNX file (of its `source`
        for a converted graph) plus the preprocessing in front of it. Each precision is its own file, so
        int8 or fp16 embeddings never share the fp32 fingerprint and a store never mixes them. Every
        engine runs a graph at the graph's own precision, so engines running the same graph share its
        fingerprint; export checks that their predictions agree on real images."""
        root = self.graphs[graph]
        if root.source is not None:
            root = self.graphs[root.source]
        payload = json.dumps(
            {"graph": self.files[root.file], "preprocessing": asdict(self.preprocessing)}, sort_keys=True
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    def role_for(self, precision: str, format: str = "onnx") -> str | None:
        """The role of the graph with this precision and format, or None if the bundle has none."""
        return next(
            (r for r, g in self.graphs.items() if g.precision == precision and g.format == format), None
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise BundleError(
                f"manifest schema_version is {version!r}; this distilshot reads version {SCHEMA_VERSION}"
            )
        try:
            prep = data["preprocessing"]
            manifest = cls(
                name=str(data["name"]),
                method=str(data["method"]),
                backbone=str(data["backbone"]),
                dataset=str(data["dataset"]),
                preprocessing=Preprocessing(
                    height=int(prep["height"]),
                    width=int(prep["width"]),
                    channels=int(prep["channels"]),
                    mean=tuple(float(v) for v in prep["mean"]),
                    std=tuple(float(v) for v in prep["std"]),
                    resize=str(prep["resize"]),
                    resample=str(prep["resample"]),
                ),
                graphs={
                    role: Graph(
                        file=str(g["file"]),
                        input=str(g["input"]),
                        outputs=tuple(Output(str(o["name"]), int(o["dim"])) for o in g["outputs"]),
                        precision=str(g.get("precision", "fp32")),
                        format=str(g.get("format", "onnx")),
                        source=None if g.get("source") is None else str(g["source"]),
                        weights=None if g.get("weights") is None else str(g["weights"]),
                    )
                    for role, g in data["graphs"].items()
                },
                head=Head(
                    metric=str(data["head"]["metric"]),
                    weights={str(k): float(v) for k, v in data["head"]["weights"].items()},
                    temperature=float(data["head"]["temperature"]),
                ),
                metrics=dict(data.get("metrics", {})),
                training=dict(data.get("training", {})),
                files={str(k): str(v) for k, v in data["files"].items()},
                created=str(data.get("created", "")),
                rejection=_record(Rejection, data.get("rejection")),
                generators=_record(Generators, data.get("generators")),
                classifier=_record(FixedClassifier, data.get("classifier")),
                calibration=_record(Calibration, data.get("calibration")),
                preprocess_graph=_record(PreprocessGraph, data.get("preprocess_graph")),
                head_graph=_record(HeadGraph, data.get("head_graph")),
            )
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as error:
            raise BundleError(f"manifest is malformed: {error!r}") from None
        manifest.validate()
        return manifest

    def validate(self) -> None:
        """Checks internal consistency; raises BundleError naming the first problem."""
        # A NaN weight or temperature would make every answer the first class with NaN scores.
        where = _non_finite(self.to_dict(), "manifest")
        if where is not None:
            raise BundleError(f"{where} is not finite; every number in a manifest must be finite")
        p = self.preprocessing
        if p.channels not in (1, 3):
            raise BundleError(f"preprocessing.channels must be 1 or 3, not {p.channels}")
        if len(p.mean) != p.channels or len(p.std) != p.channels:
            raise BundleError("preprocessing.mean and .std need one value per channel")
        if any(s <= 0 for s in p.std):
            raise BundleError("preprocessing.std values must be positive")
        if p.height < 1 or p.width < 1:
            raise BundleError("preprocessing height and width must be positive")
        if p.resize not in RESIZE_MODES:
            raise BundleError(f"preprocessing.resize {p.resize!r} is not one of {RESIZE_MODES}")
        if p.resample not in RESAMPLE_FILTERS:
            raise BundleError(f"preprocessing.resample {p.resample!r} is not supported")
        if "embedder" not in self.graphs:
            raise BundleError("manifest has no 'embedder' graph")
        if (self.embedder.precision, self.embedder.format) != ("fp32", "onnx"):
            raise BundleError("the 'embedder' graph must be the fp32 ONNX graph")
        for role, graph in self.graphs.items():
            self._validate_graph(role, graph)
        if self.head.metric not in METRICS:
            raise BundleError(f"head.metric {self.head.metric!r} is not one of {METRICS}")
        outputs = {o.name for o in self.embedder.outputs}
        unknown = set(self.head.weights) - outputs
        if not self.head.weights or unknown:
            raise BundleError(
                f"head.weights must name embedder outputs {sorted(outputs)}, got {sorted(self.head.weights)}"
            )
        if self.head.temperature <= 0:
            raise BundleError("head.temperature must be positive")
        if self.rejection is not None and not (0 < self.rejection.target < 1):
            raise BundleError("rejection.target must lie between 0 and 1")
        if self.calibration is not None:
            self._validate_calibration(self.calibration)
        dims = {o.name: o.dim for o in self.embedder.outputs}
        extra_files = []
        if self.generators is not None:
            g = self.generators
            if dims.get(g.output) != g.dim or not g.files or g.k_max < 2 or g.noise_dim < 1:
                raise BundleError(
                    f"generators must work on an embedder output of dim {g.dim}, with files, "
                    "k_max >= 2 and noise"
                )
            extra_files += list(g.files)
        if self.classifier is not None:
            c = self.classifier
            if c.output not in dims or len(c.labels) < 2 or len(set(c.labels)) != len(c.labels):
                raise BundleError(
                    "classifier must read an embedder output and name at least two distinct labels"
                )
            extra_files.append(c.file)
        if self.preprocess_graph is not None:
            g = self.preprocess_graph
            if g.channels != p.channels or g.layout != "NHWC":
                raise BundleError(
                    f"preprocess_graph must take NHWC pixels with the preprocessing's {p.channels} channels"
                )
            extra_files.append(g.file)
        if self.head_graph is not None:
            extra_files.append(self.head_graph.file)
        for file in extra_files:
            if file not in self.files:
                raise BundleError(f"file {file!r} has no sha256 in manifest.files")

    def _validate_calibration(self, c: Calibration) -> None:
        if c.temperature != self.head.temperature:
            raise BundleError("calibration.temperature must be the head's temperature")
        if c.fitted_from <= 0 or c.bins < 1:
            raise BundleError("calibration.fitted_from must be positive and calibration.bins at least 1")
        if not all(0 <= v <= 1 for v in (c.ece, c.ece_uncalibrated, c.accuracy)):
            raise BundleError("calibration.ece, .ece_uncalibrated and .accuracy must lie between 0 and 1")
        if c.nll < 0 or c.nll_uncalibrated < 0:
            raise BundleError("calibration.nll and .nll_uncalibrated must not be negative")

    def _validate_graph(self, role: str, graph: Graph) -> None:
        for file in (graph.file, graph.weights):
            if file is not None and file not in self.files:
                raise BundleError(f"graph {role!r} file {file!r} has no sha256 in manifest.files")
        if graph.precision not in PRECISIONS:
            raise BundleError(f"graph {role!r} precision {graph.precision!r} is not one of {PRECISIONS}")
        if graph.format not in GRAPH_FORMATS:
            raise BundleError(f"graph {role!r} format {graph.format!r} is not one of {GRAPH_FORMATS}")
        if self.role_for(graph.precision, graph.format) != role:
            raise BundleError(f"the manifest has two {graph.precision} {graph.format} graphs")
        # one head serves every graph, so all take the same input and produce the same outputs
        if (graph.input, graph.outputs) != (self.embedder.input, self.embedder.outputs):
            raise BundleError(f"graph {role!r} must have the embedder's input and outputs")
        if graph.source is not None:
            source = self.graphs.get(graph.source)
            if source is None or source.format != "onnx" or source.precision != graph.precision:
                raise BundleError(
                    f"graph {role!r} source {graph.source!r} must be an ONNX graph of the same precision"
                )

    def save(self, bundle_dir: Path) -> Path:
        """Writes manifest.json atomically after validating it."""
        self.validate()
        return write_json_atomic(Path(bundle_dir) / MANIFEST_FILE, self.to_dict())


def _non_finite(value: object, where: str) -> str | None:
    """The path of the first NaN or infinite float in `value` (nested dicts, lists, tuples), or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{where} ({value})"
    if isinstance(value, dict):
        items = ((f"{where}.{k}", v) for k, v in value.items())
    elif isinstance(value, list | tuple):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    return next((found for path, v in items if (found := _non_finite(v, path)) is not None), None)


def _finite_json_number(text: str) -> float:
    """JSON parse hook: refuses NaN, Infinity and numbers too large for a float (1e999 would be inf)."""
    value = float(text)
    if not math.isfinite(value):
        raise BundleError(f"the number {text} is not finite; every number in a manifest must be finite")
    return value


R = TypeVar("R")
_COERCE: dict[object, Callable[[Any], Any]] = {str: str, int: int, float: float}


def _record(cls: type[R], data: dict[str, Any] | None) -> R | None:
    """An optional manifest record (rejection, calibration, ...) from its JSON object: every field
    present, each converted to its annotated type (str, int, float or a tuple of str)."""
    if data is None:
        return None
    values = {}
    for name, hint in typing.get_type_hints(cls).items():
        value = data[name]
        values[name] = tuple(str(v) for v in value) if hint == tuple[str, ...] else _COERCE[hint](value)
    return cls(**values)


def load_manifest(bundle_dir: Path | str, verify: bool = True) -> Manifest:
    """Reads a bundle's manifest; with `verify`, every listed file must exist with its recorded sha256."""
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST_FILE
    if not bundle_dir.is_dir():
        raise BundleError(f"bundle folder {bundle_dir} does not exist")
    if not path.is_file():
        raise BundleError(f"{bundle_dir} is not a bundle: it has no {MANIFEST_FILE}")
    try:
        data = json.loads(
            path.read_text(), parse_constant=_finite_json_number, parse_float=_finite_json_number
        )
    except BundleError as error:
        raise BundleError(f"cannot read {path}: {error}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(f"cannot read {path}: {error}") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path} does not hold a JSON object")
    manifest = Manifest.from_dict(data)
    if verify:
        for name, expected in manifest.files.items():
            file = bundle_dir / name
            if Path(name).is_absolute() or ".." in Path(name).parts:
                raise BundleError(f"manifest lists {name!r}, which is outside the bundle")
            if not file.is_file():
                raise BundleError(f"bundle file {file} listed in the manifest is missing")
            actual = sha256_file(file)
            if actual != expected:
                raise BundleError(
                    f"bundle file {file} has sha256 {actual[:12]}…, the manifest says {expected[:12]}…: "
                    "the file was changed or corrupted; re-export the bundle"
                )
    return manifest
