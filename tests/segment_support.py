"""Segmentation models the tests build themselves (importable: tests/ is on sys.path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

VOC = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


def save_onnx(graph, path: Path) -> Path:
    """Checks and writes an ONNX graph at opset 13."""
    import onnx

    helper = onnx.helper
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def deeplab_format_onnx(path: Path, size: int = 129, stride: int = 1) -> Path:
    """A DeepLabV3-format model: ``(1, size, size, 3)`` uint8 input read as ``[-1, 1]``,
    ``(1, size / stride, size / stride)`` int64 class ids out (argmax inside the model).

    Its classes follow the smoothed colour of each region through a fixed 1x1 convolution
    to 21 scores, so real photos give large regions of several classes.
    """
    import onnx

    helper, numpy_helper, TensorProto = onnx.helper, onnx.numpy_helper, onnx.TensorProto
    rng = np.random.default_rng(7)
    weights = rng.normal(0.0, 1.0, (21, 3, 1, 1)).astype(np.float32)
    bias = rng.normal(0.0, 0.3, (21,)).astype(np.float32)
    initializers = [
        numpy_helper.from_array(np.array(127.5, np.float32), "half"),
        numpy_helper.from_array(weights, "w"),
        numpy_helper.from_array(bias, "b"),
    ]
    nodes = [
        helper.make_node("Cast", ["ImageTensor"], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["pixels", "half"], ["centred"]),
        helper.make_node("Div", ["centred", "half"], ["unit"]),
        helper.make_node("Transpose", ["unit"], ["planar"], perm=[0, 3, 1, 2]),
        helper.make_node(
            "AveragePool", ["planar"], ["smooth"], kernel_shape=[9, 9], pads=[4, 4, 4, 4],
            strides=[stride, stride], count_include_pad=0,
        ),
        helper.make_node("Conv", ["smooth", "w", "b"], ["logits"]),
        helper.make_node("ArgMax", ["logits"], ["SemanticPredictions"], axis=1, keepdims=0),
    ]  # fmt: skip
    out = (size + stride - 1) // stride
    graph = helper.make_graph(
        nodes,
        "deeplab_format",
        [helper.make_tensor_value_info("ImageTensor", TensorProto.UINT8, [1, size, size, 3])],
        [helper.make_tensor_value_info("SemanticPredictions", TensorProto.INT64, [1, out, out])],
        initializers,
    )
    return save_onnx(graph, path)
