"""Inference-only latency and memory of a model file on this machine.

Timing is of the backend call alone on a real, preprocessed image, after warm-up, with
the thread count fixed. Peak RSS is the process's high-water mark (``VmHWM``), so measure
each model in a fresh process (``ubiq bench A B`` does) to compare them.
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from ubiq.errors import ConfigError, ModelError
from ubiq.hardware.accelerators import DeviceSpec
from ubiq.models.runtime.backend import load_backend
from ubiq.models.runtime.model import find_manifest, resolve_model_path
from ubiq.models.runtime.preprocess import prepare_input
from ubiq.resources import peak_rss_mb


@dataclass(frozen=True)
class BenchResult:
    """Latency and memory of one model."""

    model: str
    backend: str
    device: str
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


def sample_image() -> np.ndarray:
    """A real photograph (BGR) to feed the model."""
    from ubiq import __file__ as package_file

    path = Path(package_file).parent / "data" / "astronaut.jpg"
    image = cv2.imread(str(path))
    if image is None:
        raise ConfigError(f"sample image missing: {path}")
    return cv2.resize(image, (640, 480))


def _bench_inputs(path, runtime) -> dict[str, np.ndarray]:
    try:
        manifest = find_manifest(path, runtime)
    except ModelError:
        manifest = None
    if manifest is not None:
        tensor, _ = prepare_input(sample_image(), manifest.preprocess, manifest.input)
        return {manifest.input.name: tensor}
    generator = np.random.default_rng(0)
    feeds = {}
    for tensor in runtime.inputs:
        shape = tuple(1 if axis < 1 else axis for axis in tensor.shape)
        dtype = np.dtype(tensor.dtype)
        if np.issubdtype(dtype, np.integer):
            feeds[tensor.name] = generator.integers(0, 128, shape).astype(dtype)
        else:
            feeds[tensor.name] = generator.random(shape).astype(dtype)
    return feeds


def bench_model(
    name_or_path: str,
    *,
    runs: int = 200,
    warmup: int = 20,
    threads: int | None = None,
    backend: str | None = None,
    device: str | DeviceSpec = "auto",
) -> BenchResult:
    """Times the backend call of a model of any task.

    The input is a real photograph through the model's own preprocessing when its
    manifest is known, else random values of the input's shape and type. ``device`` is as
    for :func:`~ubiq.models.runtime.backend.load_backend`.

    Raises:
        ConfigError: If ``runs``, ``warmup`` or ``device`` is out of range.
        ModelError: If the model is missing, corrupt, or fails to run.
        BackendUnavailable: If the backend or the device is missing.
    """
    if runs < 1 or warmup < 0:
        raise ConfigError(f"runs must be >= 1 and warmup >= 0, got runs={runs} warmup={warmup}")
    path = resolve_model_path(name_or_path)
    runtime = load_backend(path, backend, num_threads=threads, device=device)
    feeds = _bench_inputs(path, runtime)
    for _ in range(warmup):
        runtime.run(feeds)
    times_ms = np.empty(runs)
    for run in range(runs):
        start = time.perf_counter()
        runtime.run(feeds)
        times_ms[run] = (time.perf_counter() - start) * 1e3
    tensor = next(iter(feeds.values()))
    return BenchResult(
        model=str(path),
        backend=runtime.name,
        device=str(getattr(runtime, "device", "cpu")),
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
