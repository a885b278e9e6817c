"""Inference-only latency and memory of a model file on this machine.

Timing is of the backend call alone on a real, preprocessed image, after warm-up, with
the thread count fixed. Peak RSS is the process's high-water mark (``VmHWM``), so measure
each model in a fresh process (``ubiq bench A B`` does) to compare them.
"""

from __future__ import annotations

import platform
import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from ubiq.errors import ConfigError
from ubiq.models.runtime.model import DetectionModel


@dataclass(frozen=True)
class BenchResult:
    """Latency and memory of one model."""

    model: str
    backend: str
    input_shape: tuple[int, ...]
    threads: int | None
    runs: int
    warmup: int
    latency_p50_ms: float
    latency_p90_ms: float
    latency_mean_ms: float
    fps: float
    peak_rss_mb: float
    machine: str

    def to_dict(self) -> dict:
        return asdict(self)


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB.

    On Linux this is ``VmHWM`` from ``/proc/self/status``: ``ru_maxrss`` survives ``exec``
    and would report the parent's peak for a child started by a large process.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / 2**20


def sample_image() -> np.ndarray:
    """A real photograph (BGR) to feed the model."""
    from ubiq import __file__ as package_file

    path = Path(package_file).parent / "data" / "astronaut.jpg"
    image = cv2.imread(str(path))
    if image is None:
        raise ConfigError(f"sample image missing: {path}")
    return cv2.resize(image, (640, 480))


def bench_model(
    name_or_path: str,
    *,
    runs: int = 200,
    warmup: int = 20,
    threads: int | None = None,
    backend: str | None = None,
) -> BenchResult:
    """Times the backend call of a model.

    Raises:
        ConfigError: If ``runs`` or ``warmup`` is out of range.
    """
    if runs < 1 or warmup < 0:
        raise ConfigError(f"runs must be >= 1 and warmup >= 0, got runs={runs} warmup={warmup}")
    model = DetectionModel.load(name_or_path, backend=backend, num_threads=threads)
    tensor, _ = model.prepare(sample_image())
    for _ in range(warmup):
        model.infer(tensor)
    times_ms = np.empty(runs)
    for run in range(runs):
        start = time.perf_counter()
        model.infer(tensor)
        times_ms[run] = (time.perf_counter() - start) * 1e3
    return BenchResult(
        model=str(model.path),
        backend=model.backend.name,
        input_shape=tuple(tensor.shape),
        threads=threads,
        runs=runs,
        warmup=warmup,
        latency_p50_ms=round(float(np.percentile(times_ms, 50)), 3),
        latency_p90_ms=round(float(np.percentile(times_ms, 90)), 3),
        latency_mean_ms=round(float(times_ms.mean()), 3),
        fps=round(1000.0 / float(times_ms.mean()), 2),  # throughput, like a run's FPS
        peak_rss_mb=round(peak_rss_mb(), 1),
        machine=f"{platform.machine()} {platform.processor() or ''}".strip(),
    )
