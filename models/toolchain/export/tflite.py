"""Export of a torch model to TFLite: float32, and full-integer int8 for the Coral Edge TPU.

The route needs no TensorFlow:

1. ``litert-torch`` (Google's successor of ai-edge-torch) lowers the module through
   ``torch.export`` to a float32 ``.tflite``. A wrapper makes the file's image input
   channels-last (``(1, H, W, C)``, the layout LiteRT and the Edge TPU run natively) and, by
   default, its 4-D outputs as well, so the converter cancels every layout transpose and
   the graph holds none.
2. ``ai-edge-quantizer`` quantizes that float file statically with calibration images:
   int8 weights (symmetric, per output channel), int8 activations (asymmetric, per
   tensor, min/max calibration), int32 biases, and int8 input and outputs with their
   ``(scale, zero_point)`` in the file: the full-integer form ``edgetpu_compiler`` needs.
   Ops the quantizer does not support stay float and are listed in the result.

ONNX is not an input: ONNX -> TFLite needs TensorFlow (``onnx2tf``), which pins its
dependencies against this toolchain; :func:`quantize_tflite_int8` still quantizes a float
``.tflite`` made any other way.

Edge TPU caveats (``edgetpu_compiler`` cannot be installed here, so none is verified):
litert-torch lowers nearest/bilinear upsampling to RESIZE_* ops with
``half_pixel_centers=True`` (op version 3), a form the Edge TPU compiler has reported as
"Operation version not supported" (the op and all after it then run on the CPU); and
TRANSPOSE or BROADCAST_TO ops (channel shuffles, in-graph anchor grids) are not Edge TPU
ops. :attr:`TfliteModelInfo.ops` lists what a file holds.

```python
# calibration: (1, 3, H, W) float arrays, normalised as the model eats them
result = export_tflite(model, torch.rand(1, 3, 320, 320), "out", int8=True, calibration=images)
result.int8_model.inputs[0].shape, result.int8_model.inputs[0].dtype   # (1, 320, 320, 3) int8
```

The converters are optional and imported only when an export runs. Reading and running
``.tflite`` files lives in :mod:`ubiq.models.toolchain.export.tflite_info`, int8 quantization in
:mod:`ubiq.models.toolchain.export.tflite_int8`; their public names are importable from here too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ubiq.errors import BackendUnavailable, ModelError
from ubiq.manifest import InputSpec, ModelManifest, manifest_path_for
from ubiq.models.toolchain.export.tflite_info import (
    TfliteModelInfo,
    TfliteTensor,
    describe_tflite,
    native_logs_to_debug,
    run_tflite,
)
from ubiq.models.toolchain.export.tflite_int8 import (
    QUANTIZER_SPEC,
    import_quantizer,
    int8_cosines,
    int8_notes,
    quantize_tflite_int8,
)

__all__ = [
    "LITERT_TORCH_SPEC",
    "QUANTIZER_SPEC",
    "TfliteExportResult",
    "TfliteModelInfo",
    "TfliteTensor",
    "describe_tflite",
    "export_tflite",
    "quantize_tflite_int8",
    "run_tflite",
]

log = logging.getLogger(__name__)

# Tested together with torch 2.14.1 and ai-edge-litert 2.3.0 (litert-torch needs torch < 2.15).
LITERT_TORCH_SPEC = "litert-torch==0.10.0"


@dataclass(frozen=True)
class TfliteExportResult:
    """What :func:`export_tflite` wrote and how closely it matches torch.

    Attributes:
        float_model: The float32 file.
        int8_model: The full-integer file, or ``None`` without ``int8``.
        max_abs_diff: Largest ``|float tflite - torch|`` over the check inputs and outputs.
        int8_cosine: Per output, the worst cosine similarity of the dequantized int8 output
            to torch over the check inputs; empty without ``int8``.
        manifest_path: The manifest beside the int8 (else float) file, if any.
        seconds: Conversion and quantization times, such as ``{"float": 6.1, "int8": 0.7}``.
        notes: What did not convert, or converted with a caveat, one line each.
    """

    float_model: TfliteModelInfo
    int8_model: TfliteModelInfo | None
    max_abs_diff: float
    int8_cosine: tuple[float, ...] = ()
    manifest_path: Path | None = None
    seconds: Mapping[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def _import_litert_torch() -> Any:
    try:
        with native_logs_to_debug():
            import litert_torch
    except ImportError as error:
        raise BackendUnavailable(
            "tflite-export", "the litert-torch package", f"pip install '{LITERT_TORCH_SPEC}'"
        ) from error
    return litert_torch


@contextlib.contextmanager
def _quiet_converter() -> Iterator[None]:
    """Silences litert-torch's progress lines and the converter's native log lines."""
    saved = os.environ.get("LITERT_TORCH_SHOW_PROGRESS")
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"
    try:
        with native_logs_to_debug():
            yield
    finally:
        if saved is None:
            os.environ.pop("LITERT_TORCH_SHOW_PROGRESS", None)
        else:
            os.environ["LITERT_TORCH_SHOW_PROGRESS"] = saved


def _as_nchw_batch(value: Any, what: str) -> np.ndarray:
    array = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[0] != 1:
        raise ValueError(f"{what} must have shape (1, C, H, W), got {array.shape}")
    return np.ascontiguousarray(array, np.float32)


def _channel_last_wrapper(
    module: Any, channels_last_input: bool, channels_last_outputs: bool, example: np.ndarray
) -> tuple[Any, list[int]]:
    """Wraps ``module`` so the exported file is channels-last where asked."""
    import torch

    with torch.no_grad():
        outputs = module(torch.from_numpy(example))
    outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    last = [i for i, o in enumerate(outputs) if channels_last_outputs and o.ndim == 4]
    if not channels_last_input and not last:
        return module, last
    litert_torch = _import_litert_torch()
    wrapped = litert_torch.to_channel_last_io(
        module, args=[0] if channels_last_input else [], outputs=last
    )
    return wrapped.eval(), last


def _torch_outputs(module: Any, value: np.ndarray) -> list[np.ndarray]:
    import torch

    with torch.no_grad():
        outputs = module(torch.from_numpy(value))
    outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    return [o.detach().cpu().numpy().astype(np.float32) for o in outputs]


def export_tflite(
    model: Any,
    example: Any,
    out_dir: str | Path,
    *,
    name: str = "model",
    int8: bool = False,
    calibration: Iterable[np.ndarray] | None = None,
    channels_last_input: bool = True,
    channels_last_outputs: bool = True,
    check_inputs: Sequence[np.ndarray] = (),
    tolerance: float = 1e-4,
    manifest: ModelManifest | None = None,
) -> TfliteExportResult:
    """Exports a torch module to ``NAME_float32.tflite`` and, with ``int8``, ``NAME_int8.tflite``.

    Args:
        model: A ``torch.nn.Module`` taking one ``(1, C, H, W)`` float image tensor and
            returning a tensor or a tuple of tensors. It is put in eval mode.
        example: A ``(1, C, H, W)`` tensor or array fixing the input shape.
        out_dir: Folder for the files (created).
        name: File stem.
        int8: Also write the full-integer model (int8 input and outputs).
        calibration: Required with ``int8``: representative ``(1, C, H, W)`` float inputs in
            the model's own layout and normalisation (the exporter makes them channels-last).
        channels_last_input: Give the file a ``(1, H, W, C)`` input (LiteRT's and the Edge
            TPU's layout; no transpose in the graph). ``False`` keeps ``(1, C, H, W)``.
        channels_last_outputs: Give 4-D outputs as ``(1, H, W, C)``; ``False`` keeps them
            ``(1, C, H, W)`` at the cost of a TRANSPOSE op each. Other outputs keep their shape.
        check_inputs: Extra ``(1, C, H, W)`` inputs to compare torch and TFLite on (two
            random inputs are always used).
        tolerance: Largest allowed ``|float tflite - torch|`` per output, in units of
            ``max(1, max |torch output|)`` (boxes in pixels differ by float32 rounding of
            their magnitude).
        manifest: The model's (ONNX) manifest; when given, a copy describing each written
            file (format, input name, shape, layout, dtype and quantization) is saved
            beside it (``NAME_float32.json``, ``NAME_int8.json``).

    Returns:
        The files, their tensors and ops, and the agreement with torch.

    Raises:
        BackendUnavailable: If litert-torch (or, for ``int8``, ai-edge-quantizer) is missing.
        ValueError: If ``example``, ``calibration`` or ``check_inputs`` is malformed, or
            ``int8`` is asked for without calibration.
        ModelError: If conversion fails or the float file differs from torch beyond
            ``tolerance``.
    """
    litert_torch = _import_litert_torch()
    if int8:
        import_quantizer()
        if calibration is None:
            raise ValueError("int8 export needs calibration inputs, got calibration=None")
    import torch

    example_array = _as_nchw_batch(example, "example")
    checks = [_as_nchw_batch(v, f"check_inputs[{i}]") for i, v in enumerate(check_inputs)]
    generator = np.random.default_rng(0)
    checks += [generator.random(example_array.shape, dtype=np.float32) for _ in range(2)]
    for index, value in enumerate(checks):
        if value.shape != example_array.shape:
            raise ValueError(
                f"check_inputs[{index}] must have the example's shape {example_array.shape}, "
                f"got {value.shape}"
            )
    model = model.eval()
    wrapped, last_outputs = _channel_last_wrapper(
        model, channels_last_input, channels_last_outputs, example_array
    )

    def to_file(value: np.ndarray) -> np.ndarray:
        """An NCHW input in the file's layout."""
        return np.ascontiguousarray(value.transpose(0, 2, 3, 1)) if channels_last_input else value

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    float_path = out_dir / f"{name}_float32.tflite"
    seconds: dict[str, float] = {}
    notes: list[str] = []
    start = time.perf_counter()
    try:
        with _quiet_converter(), torch.no_grad():
            edge_model = litert_torch.convert(wrapped, (torch.from_numpy(to_file(example_array)),))
            edge_model.export(str(float_path))
    except Exception as error:  # noqa: BLE001 - export and lowering raise many kinds
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelError(f"litert-torch cannot convert {name}: {first[:300]}") from error
    seconds["float"] = round(time.perf_counter() - start, 2)
    float_info = describe_tflite(float_path)
    if "TRANSPOSE" in float_info.ops:
        notes.append(f"float model keeps {float_info.ops['TRANSPOSE']} TRANSPOSE op(s)")
    references = [_torch_outputs(wrapped, to_file(v)) for v in checks]
    file_inputs = [to_file(v) for v in checks]
    worst = _float_agreement(float_path, file_inputs, references, tolerance)
    log.info(
        "exported %s in %.1fs (max |tflite - torch| %.2e)", float_path, seconds["float"], worst
    )
    int8_info = None
    cosines: tuple[float, ...] = ()
    if int8:
        start = time.perf_counter()
        samples = (to_file(_as_nchw_batch(v, "calibration item")) for v in calibration)
        int8_info = quantize_tflite_int8(float_path, out_dir / f"{name}_int8.tflite", samples)
        seconds["int8"] = round(time.perf_counter() - start, 2)
        cosines = int8_cosines(int8_info.path, file_inputs, references)
        notes += int8_notes(int8_info, references, last_outputs)
        log.info(
            "quantized %s in %.1fs (cosine to torch %s)",
            int8_info.path,
            seconds["int8"],
            ", ".join(f"{c:.4f}" for c in cosines),
        )
    if last_outputs:
        notes.append(f"outputs {last_outputs} are channels-last (N, H, W, C)")
    manifest_path = None
    if manifest is not None:
        manifest_path = _write_manifest(manifest, float_info, channels_last_input)
        if int8_info is not None:
            manifest_path = _write_manifest(manifest, int8_info, channels_last_input)
    return TfliteExportResult(
        float_model=float_info,
        int8_model=int8_info,
        max_abs_diff=worst,
        int8_cosine=cosines,
        manifest_path=manifest_path,
        seconds=seconds,
        notes=tuple(notes),
    )


def _float_agreement(
    path: Path,
    inputs: Sequence[np.ndarray],
    references: Sequence[Sequence[np.ndarray]],
    tolerance: float,
) -> float:
    """Largest ``|tflite - torch|``; raises ModelError beyond ``tolerance`` (scaled)."""
    worst = worst_scaled = 0.0
    for value, expected in zip(inputs, references):
        for e, a in zip(expected, run_tflite(path, [value])):
            difference = float(np.abs(e - a).max())
            worst = max(worst, difference)
            worst_scaled = max(worst_scaled, difference / max(1.0, float(np.abs(e).max())))
    if worst_scaled > tolerance:
        raise ModelError(
            f"TFLite export {path} differs from torch by {worst:.2e} "
            f"(> {tolerance:.0e} of the output's magnitude)"
        )
    return worst


def _write_manifest(manifest: ModelManifest, info: TfliteModelInfo, channels_last: bool) -> Path:
    tensor = info.inputs[0]
    dtype = tensor.dtype if tensor.dtype in ("float32", "float16", "uint8", "int8") else "float32"
    input_spec = InputSpec(
        name=tensor.name,
        shape=tensor.shape,
        dtype=dtype,
        layout="NHWC" if channels_last else "NCHW",
    )
    preprocess = replace(manifest.preprocess, quantization=tensor.quantization)
    updated = manifest.with_updates(
        name=info.path.stem, format="tflite", input=input_spec, preprocess=preprocess, sha256=""
    )
    return updated.save(manifest_path_for(info.path))


def export_checkpoint_tflite(
    checkpoint: str | Path,
    exported: Any,
    *,
    int8: bool = False,
    calib: str | Sequence[Path] | None = None,
    count: int = 64,
) -> TfliteExportResult:
    """Exports a ``ubiq train`` checkpoint to TFLite beside its ONNX export.

    Args:
        checkpoint: The checkpoint (``best.pt``).
        exported: What :func:`~ubiq.models.toolchain.export.onnx_export.export_onnx` returned
            for it; the files are written beside ``exported.path`` with its stem and manifest.
        int8: Also write the full-integer model.
        calib: Calibration images for ``int8``: a data.yaml (its train split), an image
            folder or a glob, of which up to ``count`` are used, or the image paths
            themselves. Each goes through the deployment preprocessing.
        count: Most calibration images.

    Raises:
        ConfigError: If ``int8`` has no ``calib``, or the images cannot be found or read.
        BackendUnavailable: If the TFLite converters are not installed.
        ModelError: If the conversion fails.
    """
    import cv2
    import torch

    from ubiq.errors import ConfigError
    from ubiq.models.runtime.preprocess import prepare_input
    from ubiq.models.toolchain.compress.sensitivity import calibration_images
    from ubiq.models.toolchain.export.onnx_export import load_checkpoint

    model, config, _ = load_checkpoint(checkpoint)
    if hasattr(model, "export_mode"):
        model.export_mode = True
    calibration = None
    if int8:
        if not calib:
            raise ConfigError("int8 needs calib data (a data.yaml, an image folder or a glob)")
        calibration = []
        paths = calibration_images(calib, count=count) if isinstance(calib, str) else calib
        for image_path in paths:
            image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
            if image is None:
                raise ConfigError(f"calib: cannot read image {image_path}")
            manifest = exported.manifest
            calibration.append(prepare_input(image, manifest.preprocess, manifest.input)[0])
    height, width = config.imgsz
    return export_tflite(
        model,
        torch.rand(1, config.in_channels, height, width),
        Path(exported.path).parent,
        name=Path(exported.path).stem,
        int8=int8,
        calibration=calibration,
        manifest=exported.manifest,
    )
