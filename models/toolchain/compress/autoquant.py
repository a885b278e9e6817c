""":func:`auto_quantize`: build int8 candidates, time them against fp32 on this machine,
check accuracy, fall back, and hand over the fastest accurate one (or keep fp32).

The single-model conversions it uses live in :mod:`ubiq.models.toolchain.compress.quantize`.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ubiq.errors import ConfigError, ModelError, UbiqError
from ubiq.manifest import ModelManifest, manifest_path_for
from ubiq.models.toolchain.compress.quantize import (
    DEFAULT_CANDIDATES,
    QuantCandidate,
    _save_with_manifest,
    prepare_for_quantization,
    quantize_static,
)
from ubiq.models.toolchain.compress.sensitivity import (
    LatencyStats,
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

__all__ = ["QuantAttempt", "QuantizeReport", "auto_quantize", "machine_fingerprint"]


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
        sensitive_nodes: The nodes the exclusion fallback ranked (worst own SQNR first,
            with total and own SQNR in dB); empty when it did not run.
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
    sensitive_nodes: list[dict[str, Any]] = field(default_factory=list)

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
            "sensitive_nodes": self.sensitive_nodes,
        }


def machine_fingerprint(threads: int) -> dict[str, Any]:
    """CPU model, the CPU flags that decide int8 speed (VNNI, AMX, dot product) and versions."""
    from ubiq.models.toolchain.compress.report import machine_fingerprint as fingerprint

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
    sensitive: list[dict[str, Any]] = field(default_factory=list)

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
                # this run's prepared model and images (its temporary folder): one
                # calibration per calibrator for every candidate
                calibration_cache=self.prepared.parent / f"calibration-{candidate.calibrator}.json",
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
        self.sensitive = [error.to_dict() for error in errors]
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
        sensitive_nodes=search.sensitive,
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
