"""The inference backend interface and its registry.

A backend runs one model file: ``run({input_name: array}) -> {output_name: array}``. The
registry maps names to ``"module:Class"`` strings and imports only the chosen one, so a
missing library raises :class:`~ubiq.errors.BackendUnavailable` when that backend is
chosen, never at import time.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ubiq.errors import ConfigError, ModelError
from ubiq.hardware.accelerators import ONNXRUNTIME_DEVICES, DeviceSpec, parse_device

BACKENDS: dict[str, str] = {
    "onnxruntime": "ubiq.models.runtime.onnxruntime_backend:OnnxRuntimeBackend",
    "litert": "ubiq.models.runtime.litert_backend:LiteRTBackend",
}

SUFFIX_TO_BACKEND = {".onnx": "onnxruntime", ".tflite": "litert"}


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
) -> Backend:
    """Opens ``path`` with the named backend, or the one its suffix implies.

    Args:
        path: The model file.
        backend: A key of ``BACKENDS``; ``None`` picks by file suffix (and ``device``: a
            ``coral`` device means ``litert``, ``cuda``/``tensorrt``/``openvino`` mean
            ``onnxruntime``).
        num_threads: Intra-op threads; ``None`` lets the runtime decide.
        device: ``auto``, ``cpu``, ``cuda``, ``tensorrt``, ``openvino`` or
            ``coral[:usb|usb:N|pci|pci:N]`` (see :mod:`ubiq.hardware.accelerators`).
            The backend records what ``auto`` chose and why in ``device`` and
            ``device_reason``.

    Raises:
        ConfigError: If ``backend`` or ``device`` is not a known name, or the device does not
            run this model format.
        ModelError: If the file is missing, corrupt or truncated.
        BackendUnavailable: If the backend's library is not installed, or the device (its
            execution provider, libedgetpu or the Edge TPU itself) is missing.
    """
    path = Path(path)
    spec = parse_device(device)
    name = backend or backend_for_path(path)
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}: expected one of {', '.join(BACKENDS)}")
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    if num_threads is not None and num_threads < 1:
        raise ConfigError(f"threads must be >= 1, got {num_threads}")
    wanted = "litert" if spec.kind == "coral" else "onnxruntime"
    if (spec.kind == "coral" or spec.kind in ONNXRUNTIME_DEVICES) and name != wanted:
        raise ConfigError(
            f"device {spec} runs on {wanted}, but {path.name} opens with {name}: "
            f"use a {'.tflite' if wanted == 'litert' else '.onnx'} model or device cpu"
        )
    module_name, class_name = BACKENDS[name].split(":")
    backend_class = getattr(importlib.import_module(module_name), class_name)
    return backend_class(path, num_threads=num_threads, device=spec)
