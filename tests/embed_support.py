"""Small embedders and example-picture folders for the on-device learning tests."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

COLOURS = {
    "red": (40, 40, 220),
    "green": (40, 200, 40),
    "blue": (220, 60, 40),
    "yellow": (40, 220, 230),
}
"""BGR colours of the example objects, by class name."""


def tiny_embedder(
    path: Path, *, dim: int = 24, size: int = 32, output_shape: list[int] | None = None
) -> Path:
    """Writes an ONNX embedder without a manifest: a seeded 3x3 convolution, ReLU, global
    average pooling and a flatten, input ``(1, 3, size, size)`` float, output ``(1, dim)``
    (or ``output_shape``, reshaped from it)."""
    import pytest

    onnx = pytest.importorskip("onnx")
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    rng = np.random.default_rng(7)
    weights = rng.normal(0, 0.5, (dim, 3, 3, 3)).astype(np.float32)
    bias = rng.normal(0, 0.1, dim).astype(np.float32)
    shape = output_shape or [1, dim]
    nodes = [
        helper.make_node("Conv", ["images", "w", "b"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["pool"]),
        helper.make_node("Reshape", ["pool", "shape"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        path.stem,
        [helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("embedding", onnx.TensorProto.FLOAT, shape)],
        initializer=[
            numpy_helper.from_array(weights, "w"),
            numpy_helper.from_array(bias, "b"),
            numpy_helper.from_array(np.asarray(shape, np.int64), "shape"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def object_picture(colour: str, seed: int, size: int = 96) -> np.ndarray:
    """A BGR picture of a ``colour`` disc of random size and place on a grey noise
    background."""
    rng = np.random.default_rng(seed)
    image = rng.integers(90, 150, (size, size, 3), dtype=np.uint8)
    radius = int(rng.integers(size // 4, size // 3))
    centre = tuple(int(v) for v in rng.integers(radius, size - radius, 2))
    cv2.circle(image, centre, radius, COLOURS[colour], -1)
    return image


def write_class_folders(
    root: Path, classes: dict[str, int], *, first_seed: int = 0, suffix: str = ".png"
) -> Path:
    """Writes ``root/<class>/<n>.png`` pictures: ``classes`` maps a colour to a count."""
    for offset, (colour, count) in enumerate(classes.items()):
        folder = root / colour
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(count):
            seed = first_seed + 1000 * offset + index
            cv2.imwrite(str(folder / f"{index}{suffix}"), object_picture(colour, seed))
    return root
