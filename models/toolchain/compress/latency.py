"""Timing ONNX models against each other on the onnxruntime CPU backend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ubiq.errors import ConfigError, ModelError

__all__ = ["LatencyStats", "measure_latency"]


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one model over interleaved rounds, in milliseconds."""

    p50_ms: float
    p90_ms: float
    mean_ms: float

    @classmethod
    def from_times(cls, times_ms: Sequence[float]) -> LatencyStats:
        values = np.asarray(times_ms, dtype=np.float64)
        return cls(
            p50_ms=round(float(np.percentile(values, 50)), 4),
            p90_ms=round(float(np.percentile(values, 90)), 4),
            mean_ms=round(float(values.mean()), 4),
        )

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _random_feeds(path: Path, backend: Any) -> dict[str, np.ndarray]:
    """Random input of the manifest's (or, without one, the session's) shape and dtype."""
    from ubiq.models.runtime.model import find_manifest

    generator = np.random.default_rng(0)
    try:
        spec = find_manifest(path, backend).input
        tensors = [(spec.name, spec.shape, spec.dtype)]
    except ModelError:
        tensors = [(t.name, t.shape, t.dtype) for t in backend.inputs]
    feeds = {}
    for name, shape, dtype in tensors:
        shape = tuple(1 if axis < 1 else axis for axis in shape)
        if np.issubdtype(np.dtype(dtype), np.integer):
            feeds[name] = generator.integers(0, 128, shape).astype(dtype)
        else:
            feeds[name] = generator.random(shape, dtype=np.float32).astype(dtype)
    return feeds


def measure_latency(
    paths: Sequence[str | Path], *, threads: int = 2, warmup: int = 10, runs: int = 50
) -> dict[Path, LatencyStats]:
    """Times models against each other in interleaved rounds on the onnxruntime CPU backend.

    Every model is loaded first; then each round runs every model once (rotating the
    order), so load from other processes and CPU clock changes hit all of them alike.
    Compare the ratios of models measured in the same call, not absolute numbers.

    Args:
        paths: ONNX models.
        threads: Intra-op threads of every session (inter-op is 1).
        warmup: Untimed rounds first.
        runs: Timed rounds.

    Returns:
        Latency of each model, keyed by its path.

    Raises:
        ConfigError: If ``paths`` is empty, ``threads`` or ``runs`` < 1 or ``warmup`` < 0.
        ModelError: If a model cannot be loaded or run.
    """
    from ubiq.models.runtime.onnxruntime_backend import OnnxRuntimeBackend

    if not paths or threads < 1 or runs < 1 or warmup < 0:
        raise ConfigError(
            f"measure_latency needs paths, threads >= 1, runs >= 1 and warmup >= 0, got "
            f"{len(paths)} paths, threads={threads}, runs={runs}, warmup={warmup}"
        )
    import time

    models = [Path(p) for p in paths]
    backends = {p: OnnxRuntimeBackend(p, num_threads=threads, device="cpu") for p in models}
    feeds = {p: _random_feeds(p, backend) for p, backend in backends.items()}
    times: dict[Path, list[float]] = {p: [] for p in models}
    for round_index in range(warmup + runs):
        shift = round_index % len(models)
        for model in models[shift:] + models[:shift]:
            start = time.perf_counter()
            backends[model].run(feeds[model])
            if round_index >= warmup:
                times[model].append((time.perf_counter() - start) * 1e3)
    return {model: LatencyStats.from_times(times[model]) for model in models}
