"""Reading and running ``.tflite`` files: their tensors and ops, float in and out.

Needs only a LiteRT runtime (``ai-edge-litert``); :mod:`ubiq.models.toolchain.export.tflite`
writes the files.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ubiq.errors import ModelError

__all__ = [
    "TfliteModelInfo",
    "TfliteTensor",
    "describe_tflite",
    "load_interpreter",
    "native_logs_to_debug",
    "run_tflite",
]

log = logging.getLogger(__name__)

# Ops whose float output in a quantized file is expected: the boundary conversions.
_BOUNDARY_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})


@dataclass(frozen=True)
class TfliteTensor:
    """One input or output of a ``.tflite`` file.

    Attributes:
        name: Tensor name in the file.
        shape: Full shape, such as ``(1, 160, 160, 3)``.
        dtype: numpy dtype name (``float32``, ``int8``, ...).
        quantization: ``(scale, zero_point)`` for a quantized tensor, else ``None``;
            ``real = scale * (q - zero_point)``.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    quantization: tuple[float, int] | None = None


@dataclass(frozen=True)
class TfliteModelInfo:
    """What a written ``.tflite`` file holds.

    Attributes:
        path: The file.
        inputs: Input tensors in the file's order.
        outputs: Output tensors in the file's order.
        ops: Builtin op name -> count in the main graph.
        float_ops: Ops (other than QUANTIZE/DEQUANTIZE) that compute in float: empty for a
            full-integer model.
        size_bytes: File size.
    """

    path: Path
    inputs: tuple[TfliteTensor, ...]
    outputs: tuple[TfliteTensor, ...]
    ops: Mapping[str, int]
    float_ops: tuple[str, ...]
    size_bytes: int


@contextlib.contextmanager
def native_logs_to_debug() -> Iterator[None]:
    """Sends what native code (and tqdm) prints to stderr to this module's debug log."""
    from ubiq.models.runtime.litert_backend import native_stderr_captured

    lines: list[str] = []
    try:
        with native_stderr_captured(lines):
            yield
    finally:
        for line in lines:
            log.debug("converter: %s", line)


def load_interpreter(path: Path) -> Any:
    """Loads a ``.tflite`` file into an allocated LiteRT interpreter."""
    from ubiq.models.runtime.litert_backend import import_interpreter

    with native_logs_to_debug():
        interpreter = import_interpreter()(model_path=str(path))
        interpreter.allocate_tensors()
    return interpreter


def _tensor(detail: Mapping[str, Any]) -> TfliteTensor:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    quantization = (float(scale), int(zero_point)) if scale else None
    shape = tuple(int(v) for v in detail["shape"])
    return TfliteTensor(str(detail["name"]), shape, np.dtype(detail["dtype"]).name, quantization)


def _op_histogram(path: Path) -> tuple[dict[str, int], tuple[str, ...]]:
    """Op counts of the main graph and the ops whose first output is float32."""
    from ai_edge_litert import schema_py_generated as schema

    buffer = path.read_bytes()
    model = schema.Model.GetRootAsModel(buffer, 0)
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    graph = model.Subgraphs(0)
    counts: Counter[str] = Counter()
    float_ops: Counter[str] = Counter()
    for index in range(graph.OperatorsLength()):
        operator = graph.Operators(index)
        code = model.OperatorCodes(operator.OpcodeIndex())
        # Codes above 127 live in BuiltinCode; the deprecated byte field saturates at 127.
        name = op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
        counts[name] += 1
        if operator.OutputsLength() and name not in _BOUNDARY_OPS:
            output = graph.Tensors(operator.Outputs(0))
            if output.Type() == schema.TensorType.FLOAT32:
                float_ops[name] += 1
    return dict(counts), tuple(f"{name} x{count}" for name, count in sorted(float_ops.items()))


def describe_tflite(path: str | Path) -> TfliteModelInfo:
    """Reads the inputs, outputs and ops of a ``.tflite`` file (runtime packages only).

    Raises:
        ModelError: If the file is not a loadable TFLite model.
        BackendUnavailable: If no LiteRT runtime is installed.
    """
    path = Path(path)
    try:
        interpreter = load_interpreter(path)
        ops, float_ops = _op_histogram(path)
    except (ValueError, RuntimeError) as error:
        raise ModelError(f"cannot read {path}: not a valid TFLite model: {error}") from error
    return TfliteModelInfo(
        path=path,
        inputs=tuple(_tensor(d) for d in interpreter.get_input_details()),
        outputs=tuple(_tensor(d) for d in interpreter.get_output_details()),
        ops=ops,
        float_ops=float_ops,
        size_bytes=path.stat().st_size,
    )


def run_tflite(path: str | Path, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Runs a ``.tflite`` file on float inputs, quantizing and dequantizing int8 tensors.

    Args:
        path: The file.
        inputs: One float array per input, each in the file's shape.

    Returns:
        The outputs in the file's order, dequantized to float32.
    """
    interpreter = load_interpreter(Path(path))
    for detail, value in zip(interpreter.get_input_details(), inputs):
        value = np.asarray(value, np.float32)
        dtype = np.dtype(detail["dtype"])
        scale, zero_point = detail["quantization"]
        if dtype.kind in "iu" and scale:
            info = np.iinfo(dtype)
            value = np.clip(np.round(value / scale + zero_point), info.min, info.max)
        interpreter.set_tensor(detail["index"], value.astype(dtype))
    interpreter.invoke()
    outputs = []
    for detail in interpreter.get_output_details():
        value = interpreter.get_tensor(detail["index"])
        scale, zero_point = detail["quantization"]
        if np.dtype(detail["dtype"]).kind in "iu" and scale:
            value = (value.astype(np.float32) - zero_point) * np.float32(scale)
        outputs.append(np.asarray(value, np.float32))
    return outputs
