"""Inference backends for a bundle's embedder graph."""

# each registers its backend (registry.backend) on import
from distilshot.serve.engines import (  # noqa: F401
    cuda_engine,
    onnxruntime_engine,
    openvino_engine,
    tensorrt_engine,
)
from distilshot.serve.engines.base import Engine
from distilshot.serve.engines.registry import BACKENDS, open_engine

__all__ = ["BACKENDS", "Engine", "open_engine"]
