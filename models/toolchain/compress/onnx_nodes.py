"""Reading ONNX graphs: the ``onnx`` import, and the nodes a quantizer should keep in float.

:func:`output_tail`, :func:`stem_convolutions` and :func:`with_producers` name the nodes
that are usually best left unquantized: those after the last convolution, those on the raw
image, and the producers of fused activations.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ubiq.errors import BackendUnavailable

__all__ = [
    "ACTIVATION_OPS",
    "output_tail",
    "require_onnx",
    "stem_convolutions",
    "with_producers",
]

ACTIVATION_OPS = ("Relu", "Clip", "LeakyRelu", "HardSigmoid", "HardSwish")
"""Activations the quantizer fuses into their producer."""


def require_onnx() -> Any:
    """Imports ``onnx`` (a toolchain dependency).

    Raises:
        BackendUnavailable: If onnx is not installed, with the pip hint.
    """
    try:
        import onnx
    except ImportError as error:
        raise BackendUnavailable(
            "onnx", missing="the onnx package", hint="pip install 'ubiq[train]'"
        ) from error
    return onnx


_TAIL_STOP_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})


def output_tail(model_path: Path) -> list[str]:
    """Names the nodes between the last convolutions (or matmuls) and the graph outputs."""
    onnx = require_onnx()
    graph = onnx.load(str(model_path), load_external_data=False).graph
    producers = {output: node for node in graph.node for output in node.output}
    tail: list[str] = []
    frontier = [output.name for output in graph.output]
    while frontier:
        node = producers.get(frontier.pop())
        if node is None or node.op_type in _TAIL_STOP_OPS or node.name in tail:
            continue
        tail.append(node.name)
        frontier.extend(node.input)
    return tail


def stem_convolutions(model_path: Path) -> list[str]:
    """Names the plain convolutions with at most 4 input channels (over the image)."""
    onnx = require_onnx()
    graph = onnx.load(str(model_path), load_external_data=False).graph
    weights = {tensor.name: tuple(tensor.dims) for tensor in graph.initializer}
    stems = []
    for node in graph.node:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        shape = weights.get(node.input[1]) if len(node.input) > 1 else None
        if node.op_type == "Conv" and group == 1 and shape and len(shape) == 4 and shape[1] <= 4:
            stems.append(node.name)
    return stems


def with_producers(fp32_path: Path, names: Sequence[str]) -> list[str]:
    """Adds the producer of each fused activation (Conv + Relu/Clip), so both stay float."""
    onnx = require_onnx()
    graph = onnx.load(str(fp32_path), load_external_data=False).graph
    producers = {output: node.name for node in graph.node for output in node.output}
    result = list(names)
    for node in graph.node:
        if node.name in names and node.op_type in ACTIVATION_OPS and node.input:
            producer = producers.get(node.input[0])
            if producer and producer not in result:
                result.append(producer)
    return result
