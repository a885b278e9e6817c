"""The report every ``ubiq compress`` step writes: one row per artifact, measured here.

Per artifact: file size, parameters and MACs (from the torch side when known), latency
p50 and p90 on onnxruntime with fixed threads after warm-up and, where OpenVINO is
installed, its p50 on OpenVINO at the CPU's default precision (all artifacts and runtimes
timed in interleaved rounds, so a shared machine's load falls on all alike), peak RSS
(each artifact in a fresh process, through
:func:`~ubiq.models.runtime.isolated.bench_in_child`), the task metric and its change from
the fp32 model, and fidelity to the fp32 model: for detectors the mAP50 of the artifact's
detections scored against the fp32 model's detections on the validation images. Written
as ``report.json``, ``report.md`` and ``report.png`` (metric against latency for every
artifact so far).
"""

from __future__ import annotations

import contextlib
import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ArtifactRow", "detection_agreement", "machine_fingerprint", "peak_rss_mb", "write"]


@dataclass
class ArtifactRow:
    """One artifact of a compression run and what was measured on it."""

    name: str
    step: str
    path: str
    size_bytes: int
    params: int | None = None
    macs: int | None = None
    latency_p50_ms: float | None = None
    latency_p90_ms: float | None = None
    openvino_p50_ms: float | None = None
    peak_rss_mb: float | None = None
    metric_name: str | None = None
    metric: float | None = None
    metric_change: float | None = None
    fidelity: dict[str, float] = field(default_factory=dict)
    accepted: bool = True
    notes: list[str] = field(default_factory=list)


def machine_fingerprint(threads: int) -> dict[str, Any]:
    """CPU model, the flags that decide int8 speed, and runtime versions."""
    flags: set[str] = set()
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("flags", "Features") and not flags:
                flags = set(value.split())
            elif key in ("model name", "Model", "Hardware") and value.strip():
                model = value.strip()
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")
    versions = {}
    for package in ("onnxruntime", "openvino", "ai_edge_litert", "torch", "numpy"):
        try:
            module = __import__(package)
            versions[package] = getattr(module, "__version__", "?")
        except ImportError:
            continue
    return {
        "cpu": model,
        "machine": platform.machine(),
        "int8_flags": sorted(f for f in wanted if f in flags),
        "cores": _cores(),
        "threads": threads,
        "python": platform.python_version(),
        "versions": versions,
    }


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def peak_rss_mb(path: Path, threads: int, runs: int = 20) -> float | None:
    """Peak RSS of a fresh process that loads and runs ``path``, or None if that fails.

    The model is timed by :func:`~ubiq.models.runtime.isolated.bench_in_child`, so the
    high-water mark is the model's and the runtime's alone.
    """
    from ubiq.errors import UbiqError
    from ubiq.models.runtime.isolated import bench_in_child

    try:
        result = bench_in_child(str(path), runs=runs, warmup=3, threads=threads)
    except UbiqError:
        return None
    return float(result["peak_rss_mb"])


def detection_agreement(
    reference: Path, candidate: Path, images: list[Path], confidence: float = 0.25
) -> float:
    """mAP50 of ``candidate``'s detections scored against ``reference``'s, in [0, 1].

    The fp32 model's detections (at ``confidence``) are the ground truth; 1.0 means the
    compressed model finds the same objects in the same places.
    """
    import cv2

    from ubiq.models.runtime.metrics import MapAccumulator
    from ubiq.models.runtime.model import DetectionModel

    truth_model = DetectionModel.load(reference, confidence_threshold=confidence)
    model = DetectionModel.load(candidate, confidence_threshold=0.001)
    accumulator = MapAccumulator(len(truth_model.labels) or None)
    for path in images:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            continue
        truth = truth_model(image)
        found = model(image)
        accumulator.add(found.xyxy, found.confidence, found.class_id, truth.xyxy, truth.class_id)
    metrics = accumulator.compute()
    return float(metrics.map50)


def write(
    out_dir: Path,
    rows: list[ArtifactRow],
    *,
    fingerprint: dict[str, Any],
    result: str,
    gates: list[str],
    extra: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Writes ``report.json``, ``report.md`` and ``report.png`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = {
        "result": result,
        "gates": gates,
        "artifacts": [asdict(row) for row in rows],
        "machine": fingerprint,
        **(extra or {}),
    }
    paths = {"json": out_dir / "report.json", "md": out_dir / "report.md"}
    paths["json"].write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    paths["md"].write_text(_markdown(rows, fingerprint, result, gates), encoding="utf-8")
    with contextlib.suppress(ImportError):
        paths["png"] = _plot(out_dir / "report.png", rows)
    return paths


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _markdown(
    rows: list[ArtifactRow], fingerprint: dict[str, Any], result: str, gates: list[str]
) -> str:
    metric_name = next((r.metric_name for r in rows if r.metric_name), "metric")
    lines = [
        "# ubiq compress report",
        "",
        f"Result: `{result}`",
        "",
        f"| artifact | step | size MB | params | MMACs | p50 ms | p90 ms | OpenVINO p50 ms "
        f"| peak RSS MB | {metric_name} | change | fidelity | accepted | notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        fidelity = ", ".join(f"{k} {v:.3f}" for k, v in row.fidelity.items()) or "-"
        change = "-" if row.metric_change is None else f"{row.metric_change:+.2f}"
        lines.append(
            f"| {row.name} | {row.step} | {row.size_bytes / 1e6:.2f} "
            f"| {'-' if row.params is None else f'{row.params / 1e6:.2f}M'} "
            f"| {'-' if row.macs is None else f'{row.macs / 1e6:.1f}'} "
            f"| {_fmt(row.latency_p50_ms)} | {_fmt(row.latency_p90_ms)} "
            f"| {_fmt(row.openvino_p50_ms)} | {_fmt(row.peak_rss_mb, 0)} | {_fmt(row.metric)} "
            f"| {change} | {fidelity} "
            f"| {'yes' if row.accepted else 'no'} | {'; '.join(row.notes)} |"
        )
    lines += ["", "## Gates", ""]
    lines += [f"- {gate}" for gate in gates] or ["- every step passed"]
    lines += ["", "## Machine", "", "```", json.dumps(fingerprint, indent=2), "```", ""]
    return "\n".join(lines)


def _plot(path: Path, rows: list[ArtifactRow]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for row in rows:
        if row.latency_p50_ms is None or row.metric is None:
            continue
        marker = "o" if row.accepted else "x"
        axis.scatter(row.latency_p50_ms, row.metric, marker=marker, s=60)
        axis.annotate(
            row.name,
            (row.latency_p50_ms, row.metric),
            fontsize=8,
            xytext=(4, 4),
            textcoords="offset points",
        )
    axis.set_xlabel("latency p50 (ms)")
    axis.set_ylabel(next((r.metric_name for r in rows if r.metric_name), "metric"))
    axis.set_title("accuracy against latency (x: rejected by a gate)")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
