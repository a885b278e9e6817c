"""The inference backend interface and its registry.

A backend runs one model file: ``run({input_name: array}) -> {output_name: array}``. The
registry maps names to ``"module:Class"`` strings and imports only the chosen one, so a
missing library raises :class:`~ubiq.errors.BackendUnavailable` when that backend is
chosen, never at import time.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ubiq.errors import BackendUnavailable, ConfigError, ModelError
from ubiq.hardware.accelerators import ONNXRUNTIME_DEVICES, DeviceSpec, parse_device

logger = logging.getLogger(__name__)

BACKENDS: dict[str, str] = {
    "onnxruntime": "ubiq.models.runtime.onnxruntime_backend:OnnxRuntimeBackend",
    "litert": "ubiq.models.runtime.litert_backend:LiteRTBackend",
    "openvino": "ubiq.models.runtime.openvino_backend:OpenVinoBackend",
}

SUFFIX_TO_BACKEND = {".onnx": "onnxruntime", ".tflite": "litert", ".xml": "openvino"}


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape (``-1`` for dynamic axes) and numpy dtype name of a model tensor."""

    name: str
    shape: tuple[int, ...]
    dtype: str


@runtime_checkable
class Backend(Protocol):
    """What every backend offers."""

    name: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    metadata: dict[str, str]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs the model on ``feeds`` and returns every output by name."""
        ...


def backend_for_path(path: str | Path) -> str:
    """Returns the backend name that runs a model file, chosen by its suffix.

    Raises:
        ModelError: If the suffix is not a known model format.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIX_TO_BACKEND:
        raise ModelError(
            f"unknown model format {suffix or '(no suffix)'!r} for {path}: "
            f"expected one of {', '.join(SUFFIX_TO_BACKEND)}"
        )
    return SUFFIX_TO_BACKEND[suffix]


def load_backend(
    path: str | Path,
    backend: str | None = None,
    *,
    num_threads: int | None = None,
    device: str | DeviceSpec = "auto",
    streams: int = 1,
) -> Backend:
    """Opens ``path`` with the named backend, or the one its suffix implies.

    With ``device="auto"``, the backend and device that ``ubiq bench MODEL --devices all``
    recorded as the fastest agreeing one for this model on this machine are used (the
    backend's ``device_reason`` says so); without a record, or when it fails to open,
    today's order applies (each backend's own ``auto``).

    Args:
        path: The model file.
        backend: A key of ``BACKENDS``; ``None`` picks by file suffix, except that a device
            ``openvino:TARGET`` means ``openvino`` (``coral`` needs a ``.tflite`` file,
            ``cuda``/``tensorrt``/``openvino`` an ``.onnx`` one).
        num_threads: Intra-op threads; ``None`` lets the runtime decide.
        device: ``auto``, ``cpu``, ``cuda``, ``tensorrt``, ``openvino``,
            ``openvino:CPU|GPU|NPU|AUTO[:bf16|f16|f32]`` or ``coral[:usb|usb:N|pci|pci:N]``
            (see :mod:`ubiq.hardware.accelerators`). The backend records what ``auto`` chose
            and why in ``device`` and ``device_reason``.
        streams: Frames the caller may run at once from several threads (see
            :func:`choose_streams`); backends that cannot (LiteRT, a GPU provider) open
            with one, and every backend's ``streams`` attribute says what it took.

    Raises:
        ConfigError: If ``backend`` or ``device`` is not a known name, or the device does not
            run this model format.
        ModelError: If the file is missing, corrupt or truncated.
        BackendUnavailable: If the backend's library is not installed, or the device (its
            execution provider, libedgetpu, the Edge TPU or the OpenVINO device) is missing.
    """
    path = Path(path)
    spec = parse_device(device)
    if backend is not None and backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    if num_threads is not None and num_threads < 1:
        raise ConfigError(f"threads must be >= 1, got {num_threads}")
    if not isinstance(streams, int) or streams < 1:
        raise ConfigError(f"streams must be an integer >= 1, got {streams!r}")
    if spec.kind == "auto":
        recorded = _open_recorded(path, backend, num_threads, streams)
        if recorded is not None:
            return recorded
    name = backend or _backend_for(path, spec)
    _check_device_runs_on(name, spec, path)
    return _open(name, path, num_threads, spec, streams)


def _backend_for(path: Path, spec: DeviceSpec) -> str:
    if spec.kind == "openvino" and spec.target is not None:
        return "openvino"
    return backend_for_path(path)


def _check_device_runs_on(name: str, spec: DeviceSpec, path: Path) -> None:
    """Raises if the device cannot run on backend ``name``."""
    if spec.kind == "coral":
        wanted = ("litert",)
    elif spec.kind == "openvino":
        wanted = ("onnxruntime", "openvino")
    elif spec.kind in ONNXRUNTIME_DEVICES:
        wanted = ("onnxruntime",)
    else:
        return
    if name not in wanted:
        raise ConfigError(
            f"device {spec} runs on {' or '.join(wanted)}, but {path.name} opens with {name}: "
            f"use a {'.tflite' if wanted == ('litert',) else '.onnx'} model or device cpu"
        )


def _open(
    name: str, path: Path, num_threads: int | None, spec: DeviceSpec, streams: int = 1
) -> Backend:
    module_name, class_name = BACKENDS[name].split(":")
    try:
        backend_class = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise BackendUnavailable(name, missing=BACKENDS[name], hint=str(error)) from error
    if streams > 1 and getattr(backend_class, "supports_streams", False):
        runtime = backend_class(path, num_threads=num_threads, device=spec, streams=streams)
    else:
        runtime = backend_class(path, num_threads=num_threads, device=spec)
    if not hasattr(runtime, "streams"):
        runtime.streams = 1
    return runtime


def choose_streams(
    all_files: bool, num_threads: int | None, requested: int | None, sources: int = 1
) -> int:
    """How many frames to run at once: ``requested`` when given; else, without
    ``num_threads``, one per core (at most 4) when every source is a file (its next frames
    are known ahead) and one per source (at most one per core) for several cameras, because
    one frame per core beats one frame on all cores when the same cores also decode
    (measured on YOLOv8n-320, 2 cores: 1.13x alone, 1.5x beside a decoder); else 1 (one
    camera's frame must not wait behind older ones)."""
    if requested is not None:
        return requested
    if num_threads is not None:
        return 1
    cores = max(1, min(os.cpu_count() or 1, 4))
    return cores if all_files else max(1, min(sources, cores))


def _open_recorded(
    path: Path, backend: str | None, num_threads: int | None, streams: int = 1
) -> Backend | None:
    """Opens the recorded winner of ``ubiq bench --devices all``, or returns ``None``."""
    from ubiq.models.runtime.winners import recorded_winner

    winner = recorded_winner(path)
    if winner is None or winner.get("backend") not in BACKENDS:
        return None
    if backend is not None and winner["backend"] != backend:
        return None
    try:
        spec = parse_device(winner["device"])
        runtime = _open(winner["backend"], path, num_threads, spec, streams)
    except (BackendUnavailable, ConfigError, ModelError) as error:
        logger.warning(
            "device auto: the recorded winner %s %s failed (%s); using the default order",
            winner["backend"],
            winner.get("device"),
            error,
        )
        return None
    measured = winner.get("latency_p50_ms")
    detail = f": {measured:.2f} ms p50" if isinstance(measured, (int, float)) else ""
    chosen = str(spec) if str(spec).startswith(winner["backend"]) else f"{winner['backend']} {spec}"
    runtime.device_reason = (
        f"device auto: {chosen} (fastest agreeing in ubiq bench --devices all{detail}; "
        f"runs on {getattr(runtime, 'device', spec)})"
    )
    logger.info("%s", runtime.device_reason)
    return runtime
