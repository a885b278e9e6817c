"""``load_model``: one entry point that opens any model file or zoo name for its task."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_model(name_or_path: str | Path, **options: Any):
    """Opens a model by zoo name or file (``.onnx``, ``.tflite``) for the runtime.

    Args:
        name_or_path: A zoo name (``"blazeface"``, ``"yolov8n"``) or a model file.
        **options: Passed to the task's loader, e.g. ``device="auto"``,
            ``confidence_threshold=0.3``, ``classes=["person"]``, ``num_threads=2``.

    Returns:
        A :class:`~ubiq.models.runtime.model.DetectionModel` for detection models.

    Raises:
        ModelError: If the file is missing or corrupt, or its task has no runtime here.
        ZooError: If a zoo name is unknown or cannot be fetched.
        ConfigError: If an option is invalid.
    """
    from ubiq.models.runtime.model import DetectionModel

    return DetectionModel.load(name_or_path, **options)
