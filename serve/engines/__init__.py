"""Inference backends for a bundle's embedder graph."""

from distilshot.serve.engines.base import Engine
from distilshot.serve.engines.registry import BACKENDS, open_engine

__all__ = ["BACKENDS", "Engine", "open_engine"]
