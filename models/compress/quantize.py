"""Post-training quantization of ONNX models, chosen by measuring on the target machine.

Whether int8 pays off on a CPU depends on the format and the kernels: on an AVX-512 VNNI
x86 core, QDQ with uint8 activations is faster than fp32 while int8 activations can be
several times slower, and a small or elementwise-heavy model may be slower in any int8
form. :func:`auto_quantize` therefore builds each candidate format, times all of them
against fp32 in interleaved rounds with a fixed thread count, checks accuracy with a
caller's metric, falls back to other calibrators and to excluding the most sensitive
nodes, and keeps fp32 unless a candidate is both faster and accurate enough.

Calibration images always pass through the model's own deployment preprocessing
(:func:`~ubiq.models.runtime.preprocess.prepare_input`), so the calibrated ranges are
those of the tensors the deployed model sees.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ubiq.errors import BackendUnavailable, ConfigError, ModelError, UbiqError
from ubiq.manifest import MANIFEST_METADATA_KEY, ModelManifest, manifest_path_for
from ubiq.models.compress.sensitivity import (
    CalibrationReader,
    LatencyStats,
    NodeError,
    calibration_images,
    fidelity,
    load_manifest,
    measure_latency,
    node_sensitivity,
    output_tail,
    require_onnx,
    stem_convolutions,
    with_producers,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_CANDIDATES",
    "LatencyStats",
    "NodeError",
    "QuantAttempt",
    "QuantCandidate",
    "QuantizeReport",
    "auto_quantize",
    "calibration_images",
    "convert_fp16",
    "fidelity",
    "machine_fingerprint",
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


def quantize_static(
    fp32_path: str | Path,
    out_path: str | Path,
    calibration: Sequence[str | Path],
    candidate: QuantCandidate = QuantCandidate(),
    *,
    exclude_nodes: Sequence[str] = (),
    manifest: ModelManifest | None = None,
    pre_process: bool = True,
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
        quantization.quantize_static(
            str(prepared),
            str(result),
            CalibrationReader([Path(p) for p in calibration], used_manifest),
            quant_format=getattr(quantization.QuantFormat, candidate.quant_format),
            activation_type=getattr(quantization.QuantType, _INT_TYPES[candidate.activation_type]),
            weight_type=getattr(quantization.QuantType, _INT_TYPES[candidate.weight_type]),
            per_channel=candidate.per_channel,
            calibrate_method=getattr(
                quantization.CalibrationMethod, _CALIBRATORS[candidate.calibrator]
            ),
            nodes_to_exclude=list(exclude_nodes),
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


@dataclass
class QuantAttempt:
    """One quantized model that :func:`auto_quantize` built and measured.

    Attributes:
        label: The candidate's label, plus the excluded node count when any.
        stage: ``"format"`` (a candidate), ``"tail"`` (the decode tail after the last
            convolution left in float), ``"speed"`` (the fastest format with the image
            stem in float), ``"calibrator"`` or ``"exclude"`` (accuracy fallbacks).
        candidate: How it was quantized.
        path: The model file (None when the build failed).
        excluded_nodes: Nodes left in float.
        latency: Its latency; ``fp32_latency`` is the fp32 model's in the same rounds.
        speedup: ``fp32 p50 / p50`` (above 1.0 is faster than fp32).
        metric: The caller's metric in points (None when not evaluated).
        drop: ``fp32 metric - metric`` in points.
        cosine: Mean cosine similarity of the main output to fp32's on a few images.
        accepted: Faster than fp32 and within ``max_drop`` (or not evaluated).
        note: Why it was not evaluated or accepted, or why the build failed.
    """

    label: str
    stage: str
    candidate: QuantCandidate
    path: Path | None = None
    excluded_nodes: tuple[str, ...] = ()
    latency: LatencyStats | None = None
    fp32_latency: LatencyStats | None = None
    speedup: float | None = None
    metric: float | None = None
    drop: float | None = None
    cosine: float | None = None
    accepted: bool = False
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = {key: getattr(self, key) for key in self.__dataclass_fields__}
        data["candidate"] = self.candidate.to_dict()
        data["path"] = str(self.path) if self.path else None
        data["excluded_nodes"] = list(self.excluded_nodes)
        for key in ("latency", "fp32_latency"):
            data[key] = getattr(self, key).to_dict() if getattr(self, key) else None
        return data


@dataclass
class QuantizeReport:
    """What :func:`auto_quantize` measured and chose.

    Attributes:
        fp32_path: The float model.
        fp32_latency: Its latency in the first measurement (all format candidates).
        fp32_metric: Its metric in points (None without ``evaluate``).
        max_drop: The largest accepted metric drop in points.
        attempts: Every model built, in order.
        chosen: The chosen attempt's label, or None when fp32 is kept.
        result: ``out_dir/model.int8.onnx`` when one was chosen, else ``fp32_path``.
        gate_reason: Why fp32 was kept (None when one was chosen).
        machine: CPU model, int8-relevant CPU flags, versions and thread count.
        threads: Intra-op threads of every measurement.
    """

    fp32_path: Path
    fp32_latency: LatencyStats
    fp32_metric: float | None
    max_drop: float
    attempts: list[QuantAttempt]
    chosen: str | None
    result: Path
    gate_reason: str | None
    machine: dict[str, Any]
    threads: int

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-safe dict."""
        return {
            "fp32_path": str(self.fp32_path),
            "fp32_latency": self.fp32_latency.to_dict(),
            "fp32_metric": self.fp32_metric,
            "max_drop": self.max_drop,
            "attempts": [attempt.to_dict() for attempt in self.attempts],
            "chosen": self.chosen,
            "result": str(self.result),
            "gate_reason": self.gate_reason,
            "machine": self.machine,
            "threads": self.threads,
        }


def machine_fingerprint(threads: int) -> dict[str, Any]:
    """CPU model, the CPU flags that decide int8 speed (VNNI, AMX, dot product) and versions."""
    from ubiq.models.compress.report import machine_fingerprint as fingerprint

    return fingerprint(threads)


@dataclass
class _Search:
    """The state of one :func:`auto_quantize` run."""

    fp32_path: Path
    prepared: Path
    out_dir: Path
    calibration: list[Path]
    manifest: ModelManifest
    evaluate: Callable[[Path], float] | None
    max_drop: float
    threads: int
    say: Callable[..., None]
    fp32_metric: float | None = None
    attempts: list[QuantAttempt] = field(default_factory=list)

    def build(
        self, candidate: QuantCandidate, stage: str, exclude: Sequence[str] = ()
    ) -> QuantAttempt:
        plural = "" if len(exclude) == 1 else "s"
        label = candidate.label() + (f" excluding {len(exclude)} node{plural}" if exclude else "")
        suffix = f"-x{len(exclude)}" if exclude else ""
        name = f"{len(self.attempts):02d}-{candidate.file_stem()}{suffix}.onnx"
        path = self.out_dir / "candidates" / name
        attempt = QuantAttempt(label, stage, candidate, excluded_nodes=tuple(exclude))
        self.attempts.append(attempt)
        self.say("quantize: building %s", label)
        try:
            attempt.path = quantize_static(
                self.prepared,
                path,
                self.calibration,
                candidate,
                exclude_nodes=exclude,
                manifest=self.manifest,
                pre_process=False,
            )
            attempt.cosine = fidelity(self.fp32_path, path, self.calibration[:4])["cosine"]
        except ModelError as error:
            attempt.note = f"build failed: {error}"
            logger.warning("quantize: %s: %s", label, attempt.note)
        return attempt

    def measure(self, attempts: Sequence[QuantAttempt]) -> LatencyStats:
        """Times fp32 and ``attempts`` in the same rounds; returns fp32's latency."""
        built = [attempt for attempt in attempts if attempt.path is not None]
        timings = measure_latency(
            [self.fp32_path, *[attempt.path for attempt in built]], threads=self.threads
        )
        base = timings[self.fp32_path]
        for attempt in built:
            attempt.latency, attempt.fp32_latency = timings[attempt.path], base
            attempt.speedup = round(base.p50_ms / attempt.latency.p50_ms, 3)
            self.say("quantize: %s: %.2fx fp32 speed", attempt.label, attempt.speedup)
        return base

    def judge(self, attempt: QuantAttempt) -> bool:
        """Evaluates a faster-than-fp32 attempt and decides whether it is accepted."""
        if attempt.path is None or attempt.speedup is None:
            return False
        if attempt.speedup <= 1.0:
            attempt.note = "slower than fp32; not evaluated"
            return False
        if self.evaluate is None:
            attempt.accepted, attempt.note = True, "no metric given; accepted on speed alone"
            return True
        try:
            attempt.metric = float(self.evaluate(attempt.path))
        except UbiqError as error:
            attempt.note = f"evaluation failed: {error}"
            return False
        attempt.drop = round(self.fp32_metric - attempt.metric, 4)
        attempt.accepted = attempt.drop <= self.max_drop
        if not attempt.accepted:
            attempt.note = f"drop {attempt.drop:.2f} > max_drop {self.max_drop:g}"
        self.say(
            "quantize: %s: metric %.2f (drop %.2f)", attempt.label, attempt.metric, attempt.drop
        )
        return attempt.accepted

    def stem_variant(self, formats: list[QuantAttempt]) -> list[QuantAttempt]:
        """The fastest format with the image-stem convolutions left in float, timed.

        A convolution over the 3-channel image gains nothing from int8 (its GEMM depth is
        27) and needs the full-resolution image quantized first; leaving it in float is
        often faster (and more accurate). Measured like any other attempt.
        """
        built = [a for a in formats if a.speedup is not None]
        stems = stem_convolutions(self.prepared)
        if not built or not stems:
            return []
        best = max(built, key=lambda a: a.speedup)
        attempt = self.build(best.candidate, "speed", stems)
        if attempt.path is not None:
            self.measure([attempt])
        return [attempt]

    def run(self, formats: list[QuantAttempt]) -> list[QuantAttempt]:
        """Scores the faster-than-fp32 attempts, fastest first, with fallbacks for the fastest."""
        faster = sorted(
            (a for a in formats if a.speedup is not None and a.speedup > 1.0),
            key=lambda a: -a.speedup,
        )
        for attempt in formats:
            if attempt not in faster and attempt.path is not None:
                attempt.note = "slower than fp32; not evaluated"
        if faster and self.evaluate is not None:
            self.fp32_metric = float(self.evaluate(self.fp32_path))
            self.say("quantize: fp32 metric %.2f", self.fp32_metric)
        if faster and not self.judge(faster[0]) and self.evaluate is not None:
            self.fallbacks(faster[0])
        for attempt in faster[1:]:
            best = max((a.speedup for a in self.attempts if a.accepted), default=0.0)
            if attempt.speedup > best:
                self.judge(attempt)
            else:
                attempt.note = "slower than an accepted attempt; not evaluated"
        return faster

    def try_fallback(self, candidate: QuantCandidate, stage: str, exclude=()) -> QuantAttempt:
        attempt = self.build(candidate, stage, exclude)
        if attempt.path is not None:
            self.measure([attempt])
            self.judge(attempt)
        return attempt

    def fallbacks(self, base: QuantAttempt) -> None:
        """Other calibrators, then excluding the most sensitive nodes, for ``base``'s format."""
        tried = [base]
        for calibrator in FALLBACK_CALIBRATORS:
            if calibrator != base.candidate.calibrator:
                attempt = self.try_fallback(
                    replace(base.candidate, calibrator=calibrator),
                    "calibrator",
                    base.excluded_nodes,
                )
                if attempt.accepted:
                    return
                tried.append(attempt)
        scored = [a for a in tried if a.path is not None]
        reference = max(scored, key=lambda a: a.metric if a.metric is not None else -1e9)
        # Detector exports often end by joining boxes in pixels and sigmoid scores into one
        # tensor (Ultralytics YOLO): one int8 scale for both zeroes every score. Leaving
        # the decode tail (everything after the last convolution) in float fixes that.
        tail = output_tail(self.prepared)
        if tail:
            names = list(dict.fromkeys([*reference.excluded_nodes, *tail]))
            attempt = self.try_fallback(reference.candidate, "tail", names)
            if attempt.accepted:
                return
            tried.append(attempt)
            scored = [a for a in tried if a.path is not None]
            reference = max(scored, key=lambda a: a.metric if a.metric is not None else -1e9)
        try:
            errors = node_sensitivity(
                self.fp32_path, reference.path, self.calibration, top=max(EXCLUDE_COUNTS)
            )
        except ModelError as error:
            logger.warning("quantize: node sensitivity failed: %s", error)
            return
        self.say("quantize: most sensitive: %s", ", ".join(e.name for e in errors[:4]))
        for count in EXCLUDE_COUNTS:
            if count > len(errors):
                break
            names = [*reference.excluded_nodes, *(e.name for e in errors[:count])]
            exclude = with_producers(self.prepared, list(dict.fromkeys(names)))
            attempt = self.try_fallback(reference.candidate, "exclude", exclude)
            if attempt.accepted:
                return


FALLBACK_CALIBRATORS = ("entropy", "percentile")
EXCLUDE_COUNTS = (2, 4, 8)


def auto_quantize(
    fp32_path: str | Path,
    out_dir: str | Path,
    calibration: Sequence[str | Path],
    *,
    evaluate: Callable[[Path], float] | None = None,
    max_drop: float = 1.0,
    candidates: Sequence[QuantCandidate] | None = None,
    threads: int = 2,
    progress: bool = True,
) -> QuantizeReport:
    """Quantizes to int8 only when it is faster here and accurate enough; else keeps fp32.

    1. Builds every candidate into ``out_dir/candidates/`` and times them with fp32 in
       interleaved rounds (``threads`` intra-op threads); speed-up = fp32 p50 / p50.
       The fastest format is also built with its image-stem convolutions in float
       (stage ``"speed"``) and timed against fp32.
    2. With ``evaluate``, scores fp32 and the attempts faster than fp32, fastest first.
       If the fastest drops more than ``max_drop`` points, tries the other calibrators
       (entropy, percentile) in its format, then leaves the decode tail (everything after
       the last convolutions) in float, then its 2, 4, 8 most sensitive nodes
       (:func:`node_sensitivity`) in float; every fallback is timed against fp32 again.
    3. Chooses the accepted attempt with the highest speed-up and writes it as
       ``out_dir/model.int8.onnx`` with its manifest (the report under ``report``). With
       no accepted attempt faster than fp32 the result is ``fp32_path`` and
       ``gate_reason`` says why. ``out_dir/quantize_report.json`` is written either way.

    Args:
        fp32_path: The float ONNX model (with a manifest).
        out_dir: Output folder.
        calibration: Calibration images.
        evaluate: Returns the metric of a model file in points, higher is better (such as
            mAP50 x 100); None accepts any faster candidate.
        max_drop: Largest accepted metric drop, in points.
        candidates: What to try (default :data:`DEFAULT_CANDIDATES`).
        threads: Intra-op threads for every timing.
        progress: Log each step at INFO level (else DEBUG).

    Returns:
        The report.

    Raises:
        ConfigError: If ``calibration`` is empty, ``max_drop`` < 0 or ``threads`` < 1.
        ModelError: If the fp32 model cannot be loaded or evaluated.
    """
    import json

    if not calibration:
        raise ConfigError("calibration must hold at least one image")
    if max_drop < 0 or threads < 1:
        raise ConfigError(f"max_drop must be >= 0 and threads >= 1, got {max_drop} and {threads}")
    fp32_path, out_dir = Path(fp32_path), Path(out_dir)
    manifest = load_manifest(fp32_path)
    with tempfile.TemporaryDirectory(prefix="ubiq-quantize-") as folder:
        search = _Search(
            fp32_path=fp32_path,
            prepared=prepare_for_quantization(fp32_path, Path(folder) / "prepared.onnx"),
            out_dir=out_dir,
            calibration=[Path(p) for p in calibration],
            manifest=manifest,
            evaluate=evaluate,
            max_drop=max_drop,
            threads=threads,
            say=logger.info if progress else logger.debug,
        )
        formats = [search.build(c, "format") for c in (candidates or DEFAULT_CANDIDATES)]
        fp32_latency = search.measure(formats)
        formats += search.stem_variant(formats)
        faster = search.run(formats)
    accepted = [a for a in search.attempts if a.accepted and (a.speedup or 0.0) > 1.0]
    chosen = max(accepted, key=lambda a: a.speedup) if accepted else None
    report = QuantizeReport(
        fp32_path=fp32_path,
        fp32_latency=fp32_latency,
        fp32_metric=search.fp32_metric,
        max_drop=max_drop,
        attempts=search.attempts,
        chosen=chosen.label if chosen else None,
        result=fp32_path,
        gate_reason=None if chosen else _gate_reason(search, formats, faster),
        machine=machine_fingerprint(threads),
        threads=threads,
    )
    target = out_dir / "model.int8.onnx"
    if chosen is not None:
        report.result = _write_result(chosen, target, report)
    else:  # a result of an earlier run must not pass for this one's
        target.unlink(missing_ok=True)
        manifest_path_for(target).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "quantize_report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    search.say("quantize: %s", f"chose {report.chosen}" if chosen else report.gate_reason)
    return report


def _gate_reason(search: _Search, formats: list[QuantAttempt], faster: list[QuantAttempt]) -> str:
    built = [a for a in formats if a.speedup is not None]
    if not built:
        return "no int8 candidate could be built (see the attempts); keeping fp32"
    if not faster:
        best = max(built, key=lambda a: a.speedup)
        return (
            f"int8 is slower than fp32 on this machine: the fastest candidate, {best.label}, "
            f"runs at {best.speedup:.2f}x fp32 speed ({best.latency.p50_ms:.2f} ms vs "
            f"{best.fp32_latency.p50_ms:.2f} ms p50, {search.threads} threads); keeping fp32"
        )
    scored = [a for a in search.attempts if a.drop is not None]
    if not scored:
        return "no int8 candidate faster than fp32 could be evaluated; keeping fp32"
    best = min(scored, key=lambda a: a.drop)
    return (
        f"every int8 model faster than fp32 drops the metric by more than max_drop="
        f"{search.max_drop:g} points (smallest drop {best.drop:.2f}, {best.label}, after "
        f"{len(search.attempts)} attempts); keeping fp32"
    )


def _write_result(chosen: QuantAttempt, target: Path, report: QuantizeReport) -> Path:
    """Copies the chosen model to ``target`` with the search's summary in its manifest."""
    onnx = require_onnx()
    manifest = ModelManifest.load(manifest_path_for(chosen.path))
    summary = {
        "chosen": chosen.label,
        "speedup": chosen.speedup,
        "p50_ms": chosen.latency.p50_ms,
        "fp32_p50_ms": chosen.fp32_latency.p50_ms,
        "metric": chosen.metric,
        "fp32_metric": report.fp32_metric,
        "drop": chosen.drop,
        "threads": report.threads,
        "machine": report.machine,
    }
    updated = manifest.with_updates(report={**manifest.report, "quantize": summary})
    model = onnx.load(str(chosen.path))
    return _save_with_manifest(model, target, updated, {})
