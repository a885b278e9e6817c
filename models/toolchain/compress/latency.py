"""Timing ONNX models against each other on the CPU: onnxruntime, and OpenVINO where it is
installed (the compress report's second latency column)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ubiq.errors import ConfigError, ModelError

__all__ = ["LatencyStats", "RUNTIMES", "measure_latency", "measure_runtimes", "openvino_available"]

# Runtime name -> how the CPU backend is opened (``--device`` form).
RUNTIMES = {"onnxruntime": "cpu", "openvino": "openvino:CPU"}


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


def openvino_available() -> bool:
    """True when OpenVINO is installed (``ubiq[openvino]``); imports nothing heavy."""
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


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
    timed = measure_runtimes(paths, ("onnxruntime",), threads=threads, warmup=warmup, runs=runs)
    return {path: stats for (_, path), stats in timed.items()}


def measure_runtimes(
    paths: Sequence[str | Path],
    runtimes: Sequence[str],
    *,
    threads: int = 2,
    warmup: int = 10,
    runs: int = 50,
    failed: dict[tuple[str, Path], str] | None = None,
) -> dict[tuple[str, Path], LatencyStats]:
    """Times every model on every runtime of :data:`RUNTIMES`, all in the same interleaved
    rounds (as :func:`measure_latency`), one frame at a time with ``threads`` threads.
    With a ``failed`` dict, a model a runtime cannot load is left out and the reason put
    in ``failed[(runtime, path)]`` (a QOperator int8 model on OpenVINO), instead of raising.

    OpenVINO runs at its default precision for this CPU (bf16 where the CPU has it, int8
    kernels for the QDQ models ``ubiq compress`` writes).

    Returns:
        Latency keyed by ``(runtime, path)``.

    Raises:
        ConfigError: If an argument is out of range or a runtime is unknown.
        ModelError: If a model cannot be run, or loaded (without ``failed``).
        BackendUnavailable: If a runtime's package is not installed.
    """
    from ubiq.models.runtime.backend import load_backend

    if not paths or threads < 1 or runs < 1 or warmup < 0:
        raise ConfigError(
            f"measure_latency needs paths, threads >= 1, runs >= 1 and warmup >= 0, got "
            f"{len(paths)} paths, threads={threads}, runs={runs}, warmup={warmup}"
        )
    unknown = [name for name in runtimes if name not in RUNTIMES]
    if unknown or not runtimes:
        raise ConfigError(f"runtimes must be among {', '.join(RUNTIMES)}, got {list(runtimes)}")
    import time

    backends = {}
    for key in [(runtime, Path(p)) for runtime in runtimes for p in paths]:
        try:
            backends[key] = load_backend(
                key[1], key[0], num_threads=threads, device=RUNTIMES[key[0]]
            )
        except ModelError as error:
            if failed is None:
                raise
            failed[key] = str(error)
    keys = list(backends)
    if not keys:
        return {}
    feeds = {key: _random_feeds(key[1], backend) for key, backend in backends.items()}
    times: dict[tuple[str, Path], list[float]] = {key: [] for key in keys}
    for round_index in range(warmup + runs):
        shift = round_index % len(keys)
        for key in keys[shift:] + keys[:shift]:
            start = time.perf_counter()
            backends[key].run(feeds[key])
            if round_index >= warmup:
                times[key].append((time.perf_counter() - start) * 1e3)
    return {key: LatencyStats.from_times(times[key]) for key in keys}
