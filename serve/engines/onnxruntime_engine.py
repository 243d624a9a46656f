"""The ONNX Runtime backend: CPU by default, any installed execution providers on request."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from distilshot.errors import BundleError, DistilshotError
from distilshot.serve.engines.base import CHUNK_SIZE, check_batch, embed_in_chunks
from distilshot.serve.manifest import Manifest

INSTALL_HINT = "pip install distilshot[cpu] (or distilshot[gpu] for CUDA)"
DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


def is_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


class OnnxRuntimeEngine:
    """Runs the embedder graph of a bundle in an onnxruntime InferenceSession."""

    name = "onnxruntime"

    def __init__(
        self,
        bundle_dir: Path,
        manifest: Manifest,
        providers: Sequence[str] | None = None,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise DistilshotError(f"onnxruntime is not installed: {INSTALL_HINT}") from None
        providers = list(providers or DEFAULT_PROVIDERS)
        missing = [p for p in providers if p not in ort.get_available_providers()]
        if missing:
            raise DistilshotError(
                f"onnxruntime execution providers {missing} are not available here; "
                f"available: {ort.get_available_providers()}"
            )
        self._manifest = manifest
        self._graph = manifest.embedder
        self._chunk_size = chunk_size
        path = Path(bundle_dir) / self._graph.file
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: ORT's warnings are not actionable for users
        try:
            self._session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as error:  # ORT raises its own pybind exception types for bad graphs
            raise BundleError(f"onnxruntime cannot load {path}: {error}") from None
        self._check_signature(path)

    def _check_signature(self, path: Path) -> None:
        """The graph must take and produce what the manifest says, so mistakes show up at open."""
        prep = self._manifest.preprocessing
        inputs = {i.name: i for i in self._session.get_inputs()}
        graph_input = inputs.get(self._graph.input)
        if graph_input is None:
            raise BundleError(f"{path} has no input {self._graph.input!r}; it has {sorted(inputs)}")
        if graph_input.type != "tensor(float)" or len(graph_input.shape) != 4:
            raise BundleError(
                f"{path} input must be a 4-d float tensor, not {graph_input.type} {graph_input.shape}"
            )
        for actual, expected in zip(
            graph_input.shape[1:], (prep.channels, prep.height, prep.width), strict=True
        ):
            if isinstance(actual, int) and actual != expected:
                raise BundleError(
                    f"{path} input shape {graph_input.shape} does not match the manifest's "
                    f"[N, {prep.channels}, {prep.height}, {prep.width}]"
                )
        outputs = {o.name: o for o in self._session.get_outputs()}
        for output in self._graph.outputs:
            found = outputs.get(output.name)
            if found is None:
                raise BundleError(f"{path} has no output {output.name!r}; it has {sorted(outputs)}")
            dim = found.shape[-1] if found.shape else None
            if isinstance(dim, int) and dim != output.dim:
                raise BundleError(
                    f"{path} output {output.name!r} has dim {dim}; the manifest says {output.dim}"
                )

    @property
    def providers_in_use(self) -> list[str]:
        return list(self._session.get_providers())

    def embed(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        check_batch(batch, self._manifest.preprocessing)
        names = [o.name for o in self._graph.outputs]

        def run(chunk: np.ndarray) -> dict[str, np.ndarray]:
            return dict(zip(names, self._session.run(names, {self._graph.input: chunk}), strict=True))

        return embed_in_chunks(run, batch, self._graph, self._chunk_size)


def open_engine(
    bundle_dir: Path, manifest: Manifest, providers: Sequence[str] | None = None
) -> OnnxRuntimeEngine:
    return OnnxRuntimeEngine(bundle_dir, manifest, providers=providers)
