"""The OpenVINO backend (CPU), from the `openvino` extra. Runs the bundle's OpenVINO IR graph of the
requested precision, or its ONNX graph if the bundle has no IR for it."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from distilshot.core.manifest import Manifest
from distilshot.errors import BundleError, DistilshotError
from distilshot.serve.engines.base import (
    CHUNK_SIZE,
    EngineUnavailable,
    check_batch,
    closed_error,
    embed_in_chunks,
    graph_role,
)
from distilshot.serve.engines.registry import backend

INSTALL_HINT = "pip install distilshot[openvino]"
DEVICE = "CPU"


def is_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


class OpenVinoEngine:
    name = "openvino"

    def __init__(
        self, bundle_dir: Path, manifest: Manifest, precision: str = "fp32", chunk_size: int = CHUNK_SIZE
    ) -> None:
        try:
            import openvino as ov
            import openvino.properties.hint as hints
        except ImportError:
            raise EngineUnavailable(f"openvino is not installed: {INSTALL_HINT}") from None
        self.role = graph_role(manifest, precision, formats=("openvino", "onnx"))
        self._manifest = manifest
        self._graph = manifest.graphs[self.role]
        self._chunk_size = chunk_size
        path = Path(bundle_dir) / self._graph.file
        weights = None if self._graph.weights is None else str(Path(bundle_dir) / self._graph.weights)
        core = ov.Core()
        try:
            model = core.read_model(str(path), weights)
            # The CPU plugin computes in bf16 wherever the CPU supports it (AMX, AVX512-BF16) unless told
            # otherwise; f32 keeps the graph's own numbers (int8 layers stay int8 either way).
            self._compiled = core.compile_model(
                model,
                DEVICE,
                {
                    hints.inference_precision: ov.Type.f32,
                    hints.performance_mode: hints.PerformanceMode.LATENCY,
                },
            )
        except Exception as error:  # OpenVINO raises RuntimeError subclasses with its own messages
            raise BundleError(f"openvino cannot load {path}: {error}") from None
        self._ports = self._check_signature(path)
        self._request = self._compiled.create_infer_request()
        self._lock = threading.Lock()  # an infer request serves one call at a time
        self._precision = self._compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()

    def _check_signature(self, path: Path) -> dict[str, object]:
        prep = self._manifest.preprocessing
        inputs = {name: port for port in self._compiled.inputs for name in port.get_names()}
        port = inputs.get(self._graph.input)
        if port is None:
            raise BundleError(f"{path} has no input {self._graph.input!r}; it has {sorted(inputs)}")
        shape = port.get_partial_shape()
        expected = (prep.channels, prep.height, prep.width)
        if shape.rank.get_length() != 4 or any(
            d.is_static and d.get_length() != e for d, e in zip(list(shape)[1:], expected, strict=True)
        ):
            raise BundleError(f"{path} input shape {shape} does not match the manifest's [N, {expected}]")
        outputs = {name: port for port in self._compiled.outputs for name in port.get_names()}
        missing = [o.name for o in self._graph.outputs if o.name not in outputs]
        if missing:
            raise BundleError(f"{path} has no outputs {missing}; it has {sorted(outputs)}")
        return {o.name: outputs[o.name] for o in self._graph.outputs}

    @property
    def providers_in_use(self) -> list[str]:
        return [f"{DEVICE} (inference precision {self._precision})"]

    def embed(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        check_batch(batch, self._manifest.preprocessing)

        def run(chunk: np.ndarray) -> dict[str, np.ndarray]:
            with self._lock:
                if self._request is None:
                    raise closed_error(self.name)
                result = self._request.infer({self._graph.input: chunk})
                # the request reuses its output buffers on the next call
                return {name: np.array(result[port]) for name, port in self._ports.items()}

        return embed_in_chunks(run, batch, self._graph, self._chunk_size)

    def close(self) -> None:
        """Drops the infer request and the compiled model."""
        with self._lock:
            self._request = self._compiled = None


@backend("openvino")
def open_engine(
    bundle_dir: Path, manifest: Manifest, providers: Sequence[str] | None = None, precision: str = "fp32"
) -> OpenVinoEngine:
    if providers:
        raise DistilshotError("the openvino backend runs on the CPU and takes no providers")
    return OpenVinoEngine(bundle_dir, manifest, precision)
