"""Full-integer (int8) quantization of a float ``.tflite`` file, and how well the result does.

``ai-edge-quantizer`` quantizes statically with calibration inputs: int8 weights (symmetric,
per output channel), int8 activations (asymmetric, per tensor, min/max calibration), int32
biases, and int8 input and outputs with their ``(scale, zero_point)`` in the file: the
full-integer form ``edgetpu_compiler`` needs. The quantizer is optional and imported only
when it runs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ubiq.errors import BackendUnavailable, ModelError
from ubiq.models.toolchain.export.tflite_info import (
    TfliteModelInfo,
    describe_tflite,
    load_interpreter,
    native_logs_to_debug,
    run_tflite,
)

__all__ = [
    "QUANTIZER_SPEC",
    "import_quantizer",
    "int8_cosines",
    "int8_notes",
    "quantize_tflite_int8",
]

log = logging.getLogger(__name__)

# Tested together with torch 2.14.1 and ai-edge-litert 2.3.0.
QUANTIZER_SPEC = "ai-edge-quantizer==0.10.0"


def import_quantizer() -> tuple[Any, Any]:
    """Imports ai-edge-quantizer, or raises :class:`BackendUnavailable` saying what to install."""
    try:
        from ai_edge_quantizer import quantizer, recipe
    except ImportError as error:
        raise BackendUnavailable(
            "tflite-export", "the ai-edge-quantizer package", f"pip install '{QUANTIZER_SPEC}'"
        ) from error
    return quantizer, recipe


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a.ravel().astype(np.float64)
    b = b.ravel().astype(np.float64)
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norm == 0.0:
        return 1.0 if not a.any() and not b.any() else 0.0
    return float(a @ b / norm)


def quantize_tflite_int8(
    float_path: str | Path, out_path: str | Path, calibration: Iterable[np.ndarray]
) -> TfliteModelInfo:
    """Quantizes a float ``.tflite`` to full integer with int8 input and outputs.

    Args:
        float_path: A float32 ``.tflite`` file with one input.
        out_path: Where to write the int8 file.
        calibration: Representative inputs in the file's input shape and layout (float,
            normalised as the model expects). A hundred or more real images is typical;
            every value range the model will meet should appear.

    Returns:
        The written file. ``float_ops`` lists ops the quantizer left in float (empty for a
        model the Edge TPU compiler can take whole).

    Raises:
        BackendUnavailable: If ai-edge-quantizer is not installed.
        ValueError: If ``calibration`` is empty or an array has the wrong shape.
        ModelError: If the file cannot be quantized.
    """
    quantizer_module, recipe = import_quantizer()
    float_path, out_path = Path(float_path), Path(out_path)
    interpreter = load_interpreter(float_path)
    runner = interpreter.get_signature_runner()
    input_details = runner.get_input_details()
    if len(input_details) != 1:
        raise ModelError(f"{float_path.name} must have one input, found {list(input_details)}")
    ((input_name, detail),) = input_details.items()
    shape = tuple(int(v) for v in detail["shape"])
    samples = []
    for index, value in enumerate(calibration):
        array = np.asarray(value, np.float32)
        if array.shape != shape:
            raise ValueError(
                f"calibration[{index}] must have the input shape {shape}, got {array.shape}"
            )
        samples.append({input_name: array})
    if not samples:
        raise ValueError("calibration must hold at least one input array, got none")
    signature = next(iter(interpreter.get_signature_list()))
    try:
        with native_logs_to_debug():
            quantizer = quantizer_module.Quantizer(str(float_path), recipe.static_wi8_ai8())
            ranges = quantizer.calibrate({signature: samples}, num_threads=os.cpu_count() or 1)
            result = quantizer.quantize(ranges, enable_progress_report=False)
    except (ValueError, RuntimeError, KeyError) as error:
        raise ModelError(f"cannot quantize {float_path.name} to int8: {error}") from error
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(bytes(result.quantized_model))
    info = describe_tflite(out_path)
    if info.float_ops:
        log.warning("%s: ops left in float: %s", out_path.name, ", ".join(info.float_ops))
    return info


def int8_cosines(
    path: Path, inputs: Sequence[np.ndarray], references: Sequence[Sequence[np.ndarray]]
) -> tuple[float, ...]:
    """Per output, the worst cosine similarity of the dequantized int8 output to torch."""
    worst = [1.0] * len(references[0])
    for value, expected in zip(inputs, references):
        for index, (e, a) in enumerate(zip(expected, run_tflite(path, [value]))):
            worst[index] = min(worst[index], _cosine(e, a))
    return tuple(worst)


def int8_notes(
    info: TfliteModelInfo,
    references: Sequence[Sequence[np.ndarray]],
    channels_last: Sequence[int],
) -> list[str]:
    """What keeps an int8 file from being full-integer, or from being useful.

    A channel whose values span fewer than four int8 steps of its output's scale reads as
    a constant: the typical case is sigmoid scores concatenated with boxes in pixels into
    one ``(1, 4 + K, A)`` tensor, whose single scale is set by the boxes.
    """
    notes = []
    if info.float_ops:
        notes.append(
            "int8 model is not full-integer; ops left in float: " + ", ".join(info.float_ops)
        )
    if any(t.dtype != "int8" for t in info.inputs + info.outputs):
        notes.append("int8 model has non-int8 inputs or outputs")
    for index, tensor in enumerate(info.outputs):
        values = np.stack([np.asarray(r[index]) for r in references])  # (checks, 1, ...)
        if tensor.quantization is None or values.ndim not in (4, 5):
            continue
        if values.ndim == 4:  # (1, C, A) or (1, A, C): channels are the shorter axis
            axis = 2 if values.shape[2] <= values.shape[3] else 3
        else:
            axis = 4 if index in channels_last else 2
        moved = np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1)
        spans = moved.max(axis=1) - moved.min(axis=1)
        flat = np.flatnonzero(spans < 4 * tensor.quantization[0])
        if flat.size:
            note = (
                f"output {index} ({tensor.name}): channels {flat.tolist()[:8]} span fewer than 4 "
                f"int8 steps of its scale {tensor.quantization[0]:.3g} and read as constants; "
                "give values of different ranges their own outputs or normalise them"
            )
            log.warning("%s", note)
            notes.append(note)
    return notes
