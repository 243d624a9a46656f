"""What every inference backend provides, and the input/output checks they share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from distilshot.core.manifest import PRECISIONS, Graph, Manifest, Preprocessing
from distilshot.errors import BundleError, DistilshotError

CHUNK_SIZE = 64
# what adds a graph of each precision to a bundle
EXPORT_HINT = {"int8": "int8", "fp16": "tensorrt"}


class EngineUnavailable(DistilshotError):
    """The backend cannot run here (package, device or provider missing); `auto` moves on to the next."""


class EngineFailed(DistilshotError):
    """The backend is installed but failed on this graph or device (a provider that would not start, a
    plan TensorRT cannot parse, build or load, an unwritable engine cache, a CUDA error); `auto` warns and
    moves on to the next, a backend asked for by name stops here."""


class Engine(Protocol):
    """Runs one of a bundle's embedder graphs (`role` in manifest.graphs): NCHW float32 in, one [N, dim]
    float32 array per named output out. `providers_in_use` says what really runs it (device, precision);
    `close` frees what it holds (device memory, sessions) at once, after which `embed` refuses."""

    name: str
    role: str

    @property
    def providers_in_use(self) -> list[str]: ...

    def embed(self, batch: np.ndarray) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


def closed_error(name: str) -> DistilshotError:
    return DistilshotError(f"the {name} engine is closed")


def graph_role(manifest: Manifest, precision: str, formats: tuple[str, ...] = ("onnx",)) -> str:
    """The role of the graph an engine runs for `precision`, taking the first of `formats` the bundle has."""
    if precision not in PRECISIONS:
        raise DistilshotError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    for fmt in formats:
        role = manifest.role_for(precision, fmt)
        if role is not None:
            return role
    raise BundleError(
        f"the bundle has no {precision} graph; add one with "
        f"`distilshot export --bundle BUNDLE --to {EXPORT_HINT.get(precision, 'onnx')}`"
    )


def check_batch(batch: np.ndarray, prep: Preprocessing) -> None:
    """Raises DistilshotError unless `batch` is float32 [N, C, H, W] with the manifest's C, H, W."""
    expected = (prep.channels, prep.height, prep.width)
    if not isinstance(batch, np.ndarray) or batch.dtype != np.float32:
        kind = batch.dtype if isinstance(batch, np.ndarray) else type(batch).__name__
        raise DistilshotError(f"the embedder takes a float32 numpy array, not {kind}")
    if batch.ndim != 4 or batch.shape[1:] != expected:
        raise DistilshotError(
            f"the embedder takes shape [N, {', '.join(map(str, expected))}], not {list(batch.shape)}"
        )


def embed_in_chunks(
    run: Callable[[np.ndarray], dict[str, np.ndarray]],
    batch: np.ndarray,
    graph: Graph,
    chunk_size: int = CHUNK_SIZE,
) -> dict[str, np.ndarray]:
    """Calls `run` on slices of at most `chunk_size` images (bounding peak memory) and joins the results,
    checking each output against the manifest's name and dim."""
    parts: dict[str, list[np.ndarray]] = {o.name: [] for o in graph.outputs}
    for start in range(0, len(batch), chunk_size):
        chunk = batch[start : start + chunk_size]
        result = run(chunk)
        for output in graph.outputs:
            value = np.asarray(result[output.name], dtype=np.float32)
            if value.shape != (len(chunk), output.dim):
                raise BundleError(
                    f"embedder output {output.name!r} has shape {list(value.shape)}; "
                    f"the manifest says [{len(chunk)}, {output.dim}]"
                )
            if not np.isfinite(value).all():
                raise DistilshotError(f"embedder output {output.name!r} contains NaN or infinity")
            parts[output.name].append(value)
    return {
        o.name: np.concatenate(parts[o.name]) if parts[o.name] else np.zeros((0, o.dim), np.float32)
        for o in graph.outputs
    }
