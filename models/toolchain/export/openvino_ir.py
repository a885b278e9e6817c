"""ONNX to OpenVINO IR (``.xml`` + ``.bin``), checked against onnxruntime.

``openvino.convert_model`` reads the ONNX file (its ``ubiq.manifest`` metadata is kept in
the IR's rt_info, so ``ubiq detect --model model.xml`` needs nothing else); the IR runs on
the ``openvino`` backend with no torch and no onnxruntime.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ubiq.errors import BackendUnavailable, ModelError

__all__ = ["OpenVinoExportResult", "export_openvino"]


@dataclass(frozen=True)
class OpenVinoExportResult:
    """What an IR export wrote and how closely it matches onnxruntime (both in f32)."""

    path: Path
    weights_path: Path
    max_abs_diff: float
    half_weights: bool


def export_openvino(
    onnx_path: str | Path, out: str | Path | None = None, *, half_weights: bool = False
) -> OpenVinoExportResult:
    """Converts an ONNX model to OpenVINO IR and compares both on one random input.

    Args:
        onnx_path: The ONNX file (a ``ubiq export`` or Ultralytics export).
        out: The ``.xml`` to write (default: beside the ONNX file, same stem).
        half_weights: Store weights in f16 (half the ``.bin``; OpenVINO computes in the
            device's precision either way).

    Raises:
        BackendUnavailable: If openvino is not installed.
        ModelError: If the ONNX file cannot be converted, or ``out`` is not an ``.xml``.
    """
    try:
        import openvino
    except ImportError as error:
        raise BackendUnavailable(
            "openvino", missing="the openvino package", hint="pip install 'ubiq[openvino]'"
        ) from error
    onnx_path = Path(onnx_path)
    xml = Path(out) if out else onnx_path.with_suffix(".xml")
    if xml.suffix.lower() != ".xml":
        raise ModelError(f"--out for OpenVINO IR must end in .xml, got {xml.name}")
    try:
        model = openvino.convert_model(str(onnx_path))
    except Exception as error:  # noqa: BLE001 - OpenVINO's frontends raise many types
        raise ModelError(f"cannot convert {onnx_path} to OpenVINO IR: {error}") from error
    xml.parent.mkdir(parents=True, exist_ok=True)
    openvino.save_model(model, str(xml), compress_to_fp16=half_weights)
    return OpenVinoExportResult(
        path=xml,
        weights_path=xml.with_suffix(".bin"),
        max_abs_diff=_max_abs_diff(onnx_path, xml),
        half_weights=half_weights,
    )


def _max_abs_diff(onnx_path: Path, xml: Path) -> float:
    """Largest |IR - ONNX| over every output, both in f32, on one random input."""
    import onnxruntime
    import openvino

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    generator = np.random.default_rng(0)
    feeds = {}
    for tensor in session.get_inputs():
        shape = tuple(axis if isinstance(axis, int) and axis > 0 else 1 for axis in tensor.shape)
        feeds[tensor.name] = generator.random(shape).astype(np.float32)
    expected = session.run(None, feeds)
    compiled = openvino.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    results = compiled.create_infer_request().infer(feeds)
    got = [results[port] for port in compiled.outputs]
    return float(max(np.max(np.abs(g - e)) for g, e in zip(got, expected, strict=True)))
