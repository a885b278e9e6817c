"""Measuring a compressed model against its float original, on this machine.

- :func:`calibration_images` picks the images; :func:`image_tensor` feeds each through
  the model's deployment preprocessing (both in :mod:`ubiq.models.toolchain.compress.calibration`).
- :func:`node_sensitivity` ranks the nodes of a quantized model by signal-to-quantization-
  noise ratio (SQNR, dB). It adds the float tensor of every node as a graph output in both
  models and matches tensors by name:

  - QDQ: the quantizer keeps the float name ``T`` on the node that computes it, and the
    quantized value is ``DequantizeLinear(QuantizeLinear(T))``; that DequantizeLinear
    output is compared. A fused activation (Conv + Relu/Clip) already carries the
    activation's output name.
  - QOperator: ``T`` becomes the integer tensor ``T_quantized`` with initializers
    ``T_scale`` and ``T_zero_point``; a DequantizeLinear is appended to read it. A Relu
    or Clip fused into its producer leaves the producer's tensor holding the
    activation's range, so the activation's float output is compared with it.
  - A node left in float (excluded) keeps its tensor; it is compared as is.

  Nodes whose tensors were fused away on either side are skipped.
- :func:`fidelity` compares the main output of two models (SQNR and cosine similarity).
- :func:`measure_latency` times models against each other in interleaved rounds
  (:mod:`ubiq.models.toolchain.compress.latency`).

The onnx import and the choice of nodes to keep in float are in
:mod:`ubiq.models.toolchain.compress.onnx_nodes`. The names of all four modules are importable from
here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ubiq.errors import ConfigError, ModelError
from ubiq.models.toolchain.compress.calibration import (
    IMAGE_SUFFIXES,
    CalibrationReader,
    calibration_images,
    image_tensor,
    load_manifest,
)
from ubiq.models.toolchain.compress.latency import LatencyStats, measure_latency
from ubiq.models.toolchain.compress.onnx_nodes import (
    ACTIVATION_OPS,
    output_tail,
    require_onnx,
    stem_convolutions,
    with_producers,
)

logger = logging.getLogger(__name__)

__all__ = [
    "ACTIVATION_OPS",
    "IMAGE_SUFFIXES",
    "MAX_SQNR_DB",
    "CalibrationReader",
    "LatencyStats",
    "NodeError",
    "calibration_images",
    "fidelity",
    "image_tensor",
    "load_manifest",
    "measure_latency",
    "node_sensitivity",
    "output_tail",
    "require_onnx",
    "sqnr_db",
    "stem_convolutions",
    "with_producers",
]

MAX_SQNR_DB = 100.0
"""SQNR reported for identical tensors (and the most any tensor reports)."""

_FLOAT_TYPES = (1, 10, 11, 16)  # onnx.TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16


@dataclass(frozen=True)
class NodeError:
    """Quantization error of one node's output.

    Attributes:
        name: Node name in the float model.
        op_type: Its operator type.
        tensor: The float tensor that was compared.
        sqnr_db: Signal-to-quantization-noise ratio over the images, in dB (higher is
            better; ``MAX_SQNR_DB`` for identical values). It includes the error every
            node upstream passed on.
        own_sqnr_db: The SQNR of the noise this node added itself: its output's relative
            noise power less that of its noisiest compared input (first order: the
            inherited noise passes through unchanged in relative terms). Ranks the node
            that causes an error above the nodes that merely inherit it.
    """

    name: str
    op_type: str
    tensor: str
    sqnr_db: float
    own_sqnr_db: float = MAX_SQNR_DB

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sqnr_db(signal_energy: float, noise_energy: float) -> float:
    """Returns ``10 log10(signal / noise)`` clipped to ``[-MAX_SQNR_DB, MAX_SQNR_DB]``."""
    if noise_energy <= 0.0:
        return MAX_SQNR_DB
    if signal_energy <= 0.0:
        return -MAX_SQNR_DB
    value = 10.0 * math.log10(signal_energy / noise_energy)
    return float(min(MAX_SQNR_DB, max(-MAX_SQNR_DB, value)))


def _session(model: Any, threads: int = 1) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    source = model if isinstance(model, str) else model.SerializeToString()
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001 - onnxruntime raises many private types
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ModelError(f"cannot load the model: {first_line[:200]}") from error


def _float_node_outputs(onnx: Any, model: Any) -> dict[str, tuple[Any, int]]:
    """Maps each float tensor a (non-Constant) node computes to (node, element type)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {
        info.name: info.type.tensor_type.elem_type
        for info in (*inferred.graph.value_info, *inferred.graph.output)
    }
    outputs = {}
    for node in model.graph.node:
        if node.op_type == "Constant":
            continue
        for name in node.output:
            if name and types.get(name) in _FLOAT_TYPES:
                outputs[name] = (node, types[name])
    return outputs


def _quantized_views(onnx: Any, quant_model: Any, float_tensors: Sequence[str]) -> dict[str, str]:
    """Maps float tensor names to the int8 model's tensor holding the same value (as float).

    Appends the DequantizeLinear nodes QOperator tensors need to ``quant_model``.
    """
    graph = quant_model.graph
    producers = {name for node in graph.node for name in node.output}
    initializers = {tensor.name for tensor in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    views: dict[str, str] = {}
    for name in float_tensors:
        dequantized = [
            after.output[0]
            for node in consumers.get(name, ())
            if node.op_type == "QuantizeLinear"
            for after in consumers.get(node.output[0], ())
            if after.op_type == "DequantizeLinear"
        ]
        scale, zero_point = f"{name}_scale", f"{name}_zero_point"
        if dequantized:
            views[name] = dequantized[0]
        elif f"{name}_quantized" in producers and {scale, zero_point} <= initializers:
            view = f"{name}_ubiq_dequantized"
            graph.node.append(
                onnx.helper.make_node(
                    "DequantizeLinear",
                    [f"{name}_quantized", scale, zero_point],
                    [view],
                    name=f"{name}_ubiq_dequantize",
                )
            )
            views[name] = view
        elif name in producers:
            views[name] = name
    return views


def _alias_fused_activations(float_outputs: dict[str, tuple[Any, int]], views: dict) -> None:
    """Compares a fused activation's output with its producer's int8 tensor (QOperator)."""
    for name, (node, _) in float_outputs.items():
        source = node.input[0] if node.input else ""
        if node.op_type in ACTIVATION_OPS and name not in views and source in views:
            views[name] = views.pop(source)


def _add_outputs(onnx: Any, model: Any, names: dict[str, int]) -> None:
    existing = {output.name for output in model.graph.output}
    for name, elem_type in names.items():
        if name not in existing:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, elem_type, None))


def node_sensitivity(
    fp32_path: str | Path,
    int8_path: str | Path,
    calibration: Sequence[str | Path],
    *,
    top: int = 10,
    max_images: int = 8,
    rank_by: str = "own",
) -> list[NodeError]:
    """Ranks the nodes of a quantized model by how much quantization changed their output.

    Both models run with every matched node output added as a graph output, so the int8
    side runs unfused (DequantizeLinear -> float op -> QuantizeLinear); its values equal
    the fused kernels' up to rounding. Errors accumulate along the graph, so by total
    SQNR deep nodes (the output head) usually rank worst; by ``own`` SQNR (the default)
    the node whose own quantization adds the most noise ranks worst.

    Args:
        fp32_path: The float model.
        int8_path: A QDQ or QOperator model quantized from it.
        calibration: Images fed through the float model's preprocessing.
        top: How many of the worst nodes to return.
        max_images: Most images to run (the first ones of ``calibration``).
        rank_by: ``"own"`` (:attr:`NodeError.own_sqnr_db`) or ``"total"``
            (:attr:`NodeError.sqnr_db`).

    Returns:
        Up to ``top`` nodes, worst (lowest SQNR of ``rank_by``) first.

    Raises:
        ConfigError: If ``top`` or ``max_images`` is below 1, ``calibration`` is empty or
            an image cannot be read.
        ModelError: If a model cannot be loaded or run, or no tensor matches.
        BackendUnavailable: If onnx is not installed.
    """
    if top < 1 or max_images < 1:
        raise ConfigError(f"top and max_images must be >= 1, got {top} and {max_images}")
    if rank_by not in ("own", "total"):
        raise ConfigError(f"rank_by must be 'own' or 'total', got {rank_by!r}")
    if not calibration:
        raise ConfigError("calibration must hold at least one image")
    onnx = require_onnx()
    manifest = load_manifest(fp32_path)
    float_model = onnx.load(str(fp32_path))
    quant_model = onnx.load(str(int8_path))
    float_outputs = _float_node_outputs(onnx, float_model)
    views = _quantized_views(onnx, quant_model, list(float_outputs))
    _alias_fused_activations(float_outputs, views)
    if not views:
        raise ModelError(f"no node output of {Path(fp32_path).name} matches {Path(int8_path).name}")
    _add_outputs(onnx, float_model, {name: float_outputs[name][1] for name in views})
    _add_outputs(onnx, quant_model, {view: onnx.TensorProto.FLOAT for view in views.values()})
    float_session, quant_session = _session(float_model), _session(quant_model)
    quant_input = quant_session.get_inputs()[0].name
    float_names, view_names = list(views), [views[name] for name in views]
    signal = np.zeros(len(views))
    noise = np.zeros(len(views))
    for image_path in list(calibration)[:max_images]:
        tensor = image_tensor(image_path, manifest)
        reference = float_session.run(float_names, {manifest.input.name: tensor})
        quantized = quant_session.run(view_names, {quant_input: tensor})
        for index, (ref, other) in enumerate(zip(reference, quantized)):
            ref = np.asarray(ref, np.float64)
            signal[index] += float(np.sum(ref * ref))
            noise[index] += float(np.sum((ref - np.asarray(other, np.float64)) ** 2))
    own = _own_noise(float_outputs, float_names, signal, noise)
    errors = [
        NodeError(
            name=float_outputs[name][0].name or name,
            op_type=float_outputs[name][0].op_type,
            tensor=name,
            sqnr_db=round(sqnr_db(signal[index], noise[index]), 3),
            own_sqnr_db=round(sqnr_db(1.0, own[index]), 3),
        )
        for index, name in enumerate(float_names)
    ]
    key = "own_sqnr_db" if rank_by == "own" else "sqnr_db"
    errors.sort(key=lambda error: (getattr(error, key), error.sqnr_db))
    logger.debug("compared %d tensors of %s", len(errors), Path(int8_path).name)
    return errors[:top]


def _own_noise(
    float_outputs: dict[str, tuple[Any, int]],
    names: Sequence[str],
    signal: np.ndarray,
    noise: np.ndarray,
) -> np.ndarray:
    """Relative noise power each node adds: its output's noise/signal less the largest of
    its inputs' (0 when the output is no noisier). An input that was not compared (fused
    away) stands for the nearest compared tensors upstream of it."""
    ratio = {name: noise[i] / signal[i] if signal[i] > 0 else 0.0 for i, name in enumerate(names)}

    resolved: dict[str, float] = {}  # uncompared tensors already walked (branches rejoin)

    def upstream(tensor: str, depth: int = 0) -> float:
        if tensor in ratio:
            return ratio[tensor]
        if tensor not in resolved:
            producer = float_outputs.get(tensor)
            if producer is None or depth >= 16:  # a graph input or an initializer: exact
                return 0.0
            inputs = [t for t in producer[0].input if t]
            resolved[tensor] = max((upstream(t, depth + 1) for t in inputs), default=0.0)
        return resolved[tensor]

    added = np.zeros(len(names))
    for index, name in enumerate(names):
        inputs = [t for t in float_outputs[name][0].input if t and t != name]
        inherited = max((upstream(t) for t in inputs), default=0.0)
        added[index] = max(ratio[name] - inherited, 0.0)
    return added


def fidelity(
    fp32_path: str | Path, other_path: str | Path, images: Sequence[str | Path]
) -> dict[str, Any]:
    """Compares the main (first) output of two models over images.

    Args:
        fp32_path: The reference model; its manifest preprocesses the images.
        other_path: A model with the same input and main output (int8, fp16, pruned).
        images: Images to run.

    Returns:
        ``{"output", "images", "sqnr_db", "cosine", "cosine_min", "max_abs_error"}``:
        SQNR over all images, mean and least per-image cosine similarity of the
        flattened outputs, and the largest absolute difference.

    Raises:
        ConfigError: If ``images`` is empty or an image cannot be read.
        ModelError: If a model cannot be loaded or run, or the output shapes differ.
    """
    if not images:
        raise ConfigError("fidelity needs at least one image")
    manifest = load_manifest(fp32_path)
    reference_session, other_session = _session(str(fp32_path)), _session(str(other_path))
    output_name = reference_session.get_outputs()[0].name
    other_output = other_session.get_outputs()[0].name
    other_input = other_session.get_inputs()[0].name
    signal = noise = max_abs_error = 0.0
    cosines = []
    for image_path in images:
        tensor = image_tensor(image_path, manifest)
        reference = reference_session.run([output_name], {manifest.input.name: tensor})[0]
        other = other_session.run([other_output], {other_input: tensor})[0]
        if reference.shape != other.shape:
            raise ModelError(
                f"{Path(other_path).name} output {other_output} has shape {other.shape}, "
                f"expected {reference.shape} like {Path(fp32_path).name}"
            )
        ref = reference.astype(np.float64).ravel()
        oth = other.astype(np.float64).ravel()
        signal += float(ref @ ref)
        noise += float((ref - oth) @ (ref - oth))
        max_abs_error = max(max_abs_error, float(np.max(np.abs(ref - oth))) if ref.size else 0.0)
        norms = float(np.linalg.norm(ref) * np.linalg.norm(oth))
        cosines.append(float(ref @ oth) / norms if norms > 0 else float(np.array_equal(ref, oth)))
    return {
        "output": output_name,
        "images": len(cosines),
        "sqnr_db": round(sqnr_db(signal, noise), 3),
        "cosine": round(float(np.mean(cosines)), 6),
        "cosine_min": round(float(np.min(cosines)), 6),
        "max_abs_error": round(max_abs_error, 6),
    }
