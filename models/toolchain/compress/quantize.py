"""Post-training quantization of ONNX models, chosen by measuring on the target machine.

Whether int8 pays off on a CPU depends on the format and the kernels: on an AVX-512 VNNI
x86 core, QDQ with uint8 activations is faster than fp32 while int8 activations can be
several times slower, and a small or elementwise-heavy model may be slower in any int8
form. :func:`~ubiq.models.toolchain.compress.autoquant.auto_quantize` therefore builds each
candidate format, times all of them
against fp32 in interleaved rounds with a fixed thread count, checks accuracy with a
caller's metric, falls back to other calibrators and to excluding the most sensitive
nodes, and keeps fp32 unless a candidate is both faster and accurate enough.

Calibration images always pass through the model's own deployment preprocessing
(:func:`~ubiq.models.runtime.preprocess.prepare_input`), so the calibrated ranges are
those of the tensors the deployed model sees.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ubiq.errors import BackendUnavailable, ConfigError, ModelError, UbiqError
from ubiq.manifest import MANIFEST_METADATA_KEY, ModelManifest, manifest_path_for
from ubiq.models.toolchain.compress.sensitivity import (
    CalibrationReader,
    LatencyStats,
    NodeError,
    calibration_images,
    fidelity,
    load_manifest,
    measure_latency,
    node_sensitivity,
    require_onnx,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_CANDIDATES",
    "LatencyStats",
    "NodeError",
    "QuantCandidate",
    "calibration_images",
    "convert_fp16",
    "fidelity",
    "measure_latency",
    "node_sensitivity",
    "quantize_dynamic",
    "quantize_static",
]

DYNAMIC_OP_TYPES = ("MatMul", "Attention", "LSTM")
"""Operators :func:`quantize_dynamic` quantizes (convolutions stay float: ConvInteger is slow)."""

_QUANT_FORMATS = ("QDQ", "QOperator")
_INT_TYPES = {"uint8": "QUInt8", "int8": "QInt8"}
_CALIBRATORS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
_SHORT_TYPES = {"uint8": "u8", "int8": "s8"}


@dataclass(frozen=True)
class QuantCandidate:
    """One way to quantize a model statically.

    Attributes:
        quant_format: ``"QDQ"`` (QuantizeLinear/DequantizeLinear pairs that onnxruntime
            fuses) or ``"QOperator"`` (QLinearConv and friends).
        activation_type: ``"uint8"`` or ``"int8"``.
        weight_type: ``"int8"`` or ``"uint8"``.
        per_channel: One weight scale per output channel instead of per tensor.
        calibrator: ``"minmax"``, ``"entropy"`` or ``"percentile"``.

    Raises:
        ConfigError: If a field is not one of its allowed values.
    """

    quant_format: str = "QDQ"
    activation_type: str = "uint8"
    weight_type: str = "int8"
    per_channel: bool = True
    calibrator: str = "minmax"

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("quant_format", self.quant_format, _QUANT_FORMATS),
            ("activation_type", self.activation_type, tuple(_INT_TYPES)),
            ("weight_type", self.weight_type, tuple(_INT_TYPES)),
            ("calibrator", self.calibrator, tuple(_CALIBRATORS)),
        ):
            if value not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")

    def label(self) -> str:
        """Returns a short human label such as ``"QDQ u8/s8 per-channel minmax"``."""
        types = f"{_SHORT_TYPES[self.activation_type]}/{_SHORT_TYPES[self.weight_type]}"
        channel = "per-channel" if self.per_channel else "per-tensor"
        return f"{self.quant_format} {types} {channel} {self.calibrator}"

    def file_stem(self) -> str:
        """Returns a file-name-safe form of the label, such as ``"qdq-u8s8-pc-minmax"``."""
        types = _SHORT_TYPES[self.activation_type] + _SHORT_TYPES[self.weight_type]
        channel = "pc" if self.per_channel else "pt"
        return f"{self.quant_format.lower()}-{types}-{channel}-{self.calibrator}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_CANDIDATES = (
    QuantCandidate("QDQ", "uint8", "int8"),
    QuantCandidate("QDQ", "int8", "int8"),
    QuantCandidate("QOperator", "uint8", "int8"),
)
"""What :func:`auto_quantize` measures unless told otherwise (all per-channel minmax)."""


def _quantization() -> Any:
    require_onnx()
    try:
        from onnxruntime import quantization
    except ImportError as error:
        raise BackendUnavailable(
            "onnxruntime", missing="onnxruntime.quantization", hint="pip install onnxruntime"
        ) from error
    return quantization


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def prepare_for_quantization(source: str | Path, target: str | Path) -> Path:
    """Runs onnxruntime's ``quant_pre_process`` (shape inference, graph optimization).

    Falls back to skipping symbolic shape inference, then to the model as is.

    Returns:
        ``target``, or ``source`` when pre-processing failed.
    """
    quantization = _quantization()
    source, target = Path(source), Path(target)
    for skip_symbolic in (False, True):
        try:
            quantization.quant_pre_process(
                str(source), str(target), skip_symbolic_shape=skip_symbolic
            )
            return target
        except Exception as error:  # noqa: BLE001 - shape inference raises many types
            logger.debug("quant_pre_process(skip_symbolic=%s): %s", skip_symbolic, error)
    logger.warning("%s: quantization pre-processing failed; quantizing it as is", source.name)
    return source


def _save_with_manifest(
    model: Any, out_path: Path, manifest: ModelManifest, source_metadata: dict[str, str]
) -> Path:
    """Saves ``model`` with the source's metadata and ``manifest`` (embedded and sidecar)."""
    onnx = require_onnx()
    from ubiq.paths import file_sha256

    metadata = {**source_metadata, **{p.key: p.value for p in model.metadata_props}}
    metadata[MANIFEST_METADATA_KEY] = manifest.with_updates(sha256="").to_json()
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, metadata)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out_path))
    manifest.with_updates(sha256=file_sha256(out_path)).save(manifest_path_for(out_path))
    return out_path


def _metadata(onnx: Any, path: Path) -> dict[str, str]:
    model = onnx.load(str(path), load_external_data=False)
    return {prop.key: prop.value for prop in model.metadata_props}


def _convert(
    fp32_path: str | Path,
    out_path: str | Path,
    manifest: ModelManifest | None,
    entry: dict[str, Any],
    convert: Callable[[Any, Path, Path], Path],
) -> Path:
    """Shared frame of the converters: checks, temp folder, manifest entry, save.

    ``convert(quantization, prepared_path, result_path)`` writes the converted model.
    """
    fp32_path = Path(fp32_path)
    if not fp32_path.is_file():
        raise ModelError(f"model file not found: {fp32_path}")
    quantization = _quantization()
    onnx = require_onnx()
    manifest = manifest or load_manifest(fp32_path)
    with tempfile.TemporaryDirectory(prefix="ubiq-quantize-") as folder:
        result = Path(folder) / "converted.onnx"
        try:
            convert(quantization, Path(folder), result)
            model = onnx.load(str(result))
        except UbiqError:
            raise
        except Exception as error:  # noqa: BLE001 - the quantizer raises many types
            raise ModelError(
                f"cannot convert {fp32_path.name} ({entry.get('method')}): {_first_line(error)}"
            ) from error
    updated = manifest.with_updates(compression=(*manifest.compression, entry), format="onnx")
    return _save_with_manifest(model, Path(out_path), updated, _metadata(onnx, fp32_path))


CALIBRATION_CHUNK = 8
"""Images whose intermediate tensors calibration holds at once (see :func:`quantize_static`).
Entropy and percentile calibration otherwise keep every intermediate tensor of every
image: ``benchmarks/calib_memory.py`` measures the difference."""


ENTROPY_BINS = 512
"""Histogram bins of entropy calibration. onnxruntime's own default (128 bins, 128
quantized bins) leaves the KL search a single candidate, the full range: its "entropy" is
min-max (every activation scale of ubiq-det-mnv2 came out equal). 512 bins give it 193
thresholds to search; TensorRT's 2048 took 178 s against 37 s here for 64 images."""


def _takes_calibration_cache(quantization: Any) -> bool:
    import inspect

    return "calibration_cache_path" in inspect.signature(quantization.quantize_static).parameters


def _calibrate(prepared: Path, reader: Any, method: Any, chunk: int | None, folder: Path) -> Path:
    """Runs the calibration chunk by chunk and writes onnxruntime's calibration cache."""
    from onnxruntime.quantization.calibrate import (
        CalibrationMethod,
        create_calibrator,
        save_tensors_data,
    )

    extra = {}
    if method == CalibrationMethod.Entropy:
        extra = {"num_bins": ENTROPY_BINS, "num_quantized_bins": 128}
    calibrator = create_calibrator(
        Path(prepared),
        None,
        augmented_model_path=str(folder / "augmented.onnx"),
        calibrate_method=method,
        extra_options=extra,
    )
    count = len(reader)
    stride = _chunk_options(count, chunk).get("CalibStridedMinMax", count)
    for start in range(0, count, stride):
        reader.set_range(start, start + stride)
        calibrator.collect_data(reader)
    cache = folder / "calibration.json"
    save_tensors_data(calibrator.compute_data(), cache)
    return cache


def _chunk_options(count: int, chunk: int | None) -> dict[str, Any]:
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise ConfigError(f"chunk must be a whole number >= 1 or None, got {chunk!r}")
    if chunk is None or count <= chunk:
        return {}
    stride = max(d for d in range(1, chunk + 1) if count % d == 0)
    return {"CalibStridedMinMax": stride}


def quantize_static(
    fp32_path: str | Path,
    out_path: str | Path,
    calibration: Sequence[str | Path],
    candidate: QuantCandidate = QuantCandidate(),
    *,
    exclude_nodes: Sequence[str] = (),
    manifest: ModelManifest | None = None,
    pre_process: bool = True,
    chunk: int | None = CALIBRATION_CHUNK,
    calibration_cache: str | Path | None = None,
) -> Path:
    """Quantizes a float ONNX model statically with calibration images.

    The model is pre-processed (``quant_pre_process``), calibrated on ``calibration``
    through its deployment preprocessing, and quantized as ``candidate`` says. The
    output keeps the float model's metadata; its manifest (embedded and sidecar) is the
    float one plus ``{"step": "quantize", "method": "static", **candidate fields,
    "excluded_nodes": [...]}``.

    Args:
        fp32_path: The float model.
        out_path: Where to write the quantized model (its ``.json`` goes beside it).
        calibration: Calibration images (see :func:`calibration_images`).
        candidate: Format, types, granularity and calibrator.
        exclude_nodes: Node names to leave in float.
        manifest: The float model's manifest (found beside or inside it when None).
        pre_process: Run ``quant_pre_process`` first (False when ``fp32_path`` already
            went through :func:`prepare_for_quantization`).
        chunk: Most images whose intermediate tensors are held at once while calibrating
            (onnxruntime merges the chunks' ranges and histograms); ``None`` holds them
            all, as onnxruntime does by default. The chunk used is the largest divisor of
            the image count up to ``chunk``.
        calibration_cache: A file for the calibrated ranges: read when it exists (no
            calibration runs), else written. Only for the same model, images and
            calibrator: ``auto_quantize`` shares one among its candidates.

    Returns:
        ``out_path``.

    Raises:
        ConfigError: If ``calibration`` is empty or an image cannot be read.
        ModelError: If the model is missing or onnxruntime cannot quantize it.
        BackendUnavailable: If onnx is not installed.
    """
    if not calibration:
        raise ConfigError("calibration must hold at least one image")
    fp32_path = Path(fp32_path)
    entry = {
        "step": "quantize",
        "method": "static",
        **candidate.to_dict(),
        "excluded_nodes": list(exclude_nodes),
    }

    def convert(quantization: Any, folder: Path, result: Path) -> Path:
        prepared = fp32_path
        if pre_process:
            prepared = prepare_for_quantization(fp32_path, folder / "prepared.onnx")
        method = getattr(quantization.CalibrationMethod, _CALIBRATORS[candidate.calibrator])
        reader = CalibrationReader([Path(p) for p in calibration], used_manifest)
        options: dict[str, Any] = {}
        if _takes_calibration_cache(quantization):
            cache = Path(calibration_cache) if calibration_cache is not None else None
            if cache is None or not cache.is_file():
                made = _calibrate(prepared, reader, method, chunk, folder)
                if cache is not None:
                    cache.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(made, cache)
                cache = made
            options = {"calibration_cache_path": str(cache)}
            reader = None  # the ranges come from the cache
        quantization.quantize_static(
            str(prepared),
            str(result),
            reader,
            quant_format=getattr(quantization.QuantFormat, candidate.quant_format),
            activation_type=getattr(quantization.QuantType, _INT_TYPES[candidate.activation_type]),
            weight_type=getattr(quantization.QuantType, _INT_TYPES[candidate.weight_type]),
            per_channel=candidate.per_channel,
            calibrate_method=method,
            nodes_to_exclude=list(exclude_nodes),
            extra_options=_chunk_options(len(calibration), chunk) if reader else {},
            **options,
        )
        return result

    used_manifest = manifest or load_manifest(fp32_path)
    return _convert(fp32_path, out_path, used_manifest, entry, convert)


def quantize_dynamic(
    fp32_path: str | Path, out_path: str | Path, *, manifest: ModelManifest | None = None
) -> Path:
    """Quantizes the weights of MatMul/Attention/LSTM to int8; activations at run time.

    For Linear-heavy models (speech, transformers); convolutions stay float.

    Raises:
        ModelError: If the model is missing or onnxruntime cannot quantize it.
        BackendUnavailable: If onnx is not installed.
    """
    fp32_path = Path(fp32_path)
    entry = {
        "step": "quantize",
        "method": "dynamic",
        "weight_type": "int8",
        "op_types": list(DYNAMIC_OP_TYPES),
    }

    def convert(quantization: Any, folder: Path, result: Path) -> Path:
        prepared = prepare_for_quantization(fp32_path, folder / "prepared.onnx")
        operators = {node.op_type for node in require_onnx().load(str(prepared)).graph.node}
        if not operators & set(DYNAMIC_OP_TYPES):
            logger.warning(
                "%s has no %s node: dynamic quantization leaves it unchanged",
                fp32_path.name,
                "/".join(DYNAMIC_OP_TYPES),
            )
        quantization.quantize_dynamic(
            str(prepared),
            str(result),
            weight_type=quantization.QuantType.QInt8,
            op_types_to_quantize=list(DYNAMIC_OP_TYPES),
        )
        return result

    return _convert(fp32_path, out_path, manifest, entry, convert)


def convert_fp16(
    fp32_path: str | Path, out_path: str | Path, *, manifest: ModelManifest | None = None
) -> Path:
    """Converts weights and compute to float16, keeping float32 inputs and outputs.

    Raises:
        ModelError: If the model is missing or cannot be converted.
        BackendUnavailable: If neither onnxruntime's nor onnxconverter-common's float16
            converter is available.
    """
    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError:
        try:
            from onnxconverter_common.float16 import convert_float_to_float16
        except ImportError as error:
            raise BackendUnavailable(
                "fp16",
                missing="a float16 converter",
                hint="pip install onnxconverter-common",
            ) from error
    entry = {"step": "quantize", "method": "fp16", "keep_io_types": True}

    def convert(quantization: Any, folder: Path, result: Path) -> Path:
        onnx = require_onnx()
        model = convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True)
        onnx.save(model, str(result))
        return result

    return _convert(fp32_path, out_path, manifest, entry, convert)


def __getattr__(name: str) -> Any:
    """:func:`auto_quantize` and its report types live in :mod:`.autoquant`; importing them
    from here still works."""
    if name in ("QuantAttempt", "QuantizeReport", "auto_quantize", "machine_fingerprint"):
        from ubiq.models.toolchain.compress import autoquant

        return getattr(autoquant, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
