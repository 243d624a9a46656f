"""torch -> ONNX for the embedder: NCHW float32 input with a dynamic batch axis, one output per named
embedding of the method, checked with onnx.checker."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from distilshot.core.manifest import Graph, Output
from distilshot.train.checkpoint import ModelSpec
from distilshot.train.methods import Method

INPUT_NAME = "image"
OPSET = 18


class EmbedderGraph(nn.Module):
    """The method's `embed` as a module returning its outputs as a tuple in a fixed order."""

    def __init__(self, model: Method) -> None:
        super().__init__()
        self.model = model
        self.names = tuple(model.output_names)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model.embed(image)
        return tuple(outputs[name] for name in self.names)


def export_embedder(model: Method, spec: ModelSpec, path: Path) -> Graph:
    """Writes the eval-mode embedder to `path` and returns its manifest entry."""
    graph = EmbedderGraph(model.cpu().eval()).eval()
    example = torch.zeros(2, spec.channels, spec.image_size, spec.image_size)
    with torch.no_grad():
        dims = [int(t.shape[1]) for t in graph(example)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # the exporter logs every pass at INFO; keep the user's console for our own progress
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        program = torch.onnx.export(
            graph,
            (example,),
            input_names=[INPUT_NAME],
            output_names=list(graph.names),
            dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
            opset_version=OPSET,
            dynamo=True,
            optimize=True,
            verbose=False,
        )
    program.save(str(path))
    onnx.checker.check_model(str(path), full_check=True)
    return Graph(
        file=Path(path).name,
        input=INPUT_NAME,
        outputs=tuple(Output(name, dim) for name, dim in zip(graph.names, dims, strict=True)),
    )
