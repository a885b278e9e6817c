"""``load_model``: one entry point that opens any model file or zoo name for its task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ubiq.errors import ConfigError, ModelError, WrongTaskError

TASKS = ("detect", "segment", "classify", "embed", "kws")


def load_model(name_or_path: str | Path, *, task: str | None = None, **options: Any):
    """Opens a model by zoo name or file (``.onnx``, ``.tflite``) for the runtime.

    Args:
        name_or_path: A zoo name (``"blazeface"``, ``"selfie-seg"``) or a model file.
        task: ``"detect"``, ``"segment"``, ``"classify"``, ``"embed"`` or ``"kws"``;
            ``None`` takes the task the model's manifest names.
        **options: Passed to the task's loader, e.g. ``device="auto"``, ``num_threads=2``;
            detection also takes ``confidence_threshold``, ``iou_threshold``, ``classes``;
            detection and segmentation take ``streams`` (frames inferred at once).

    Returns:
        A ``DetectionModel``, ``Segmenter``, ``Classifier`` (an imprinted one for a
        ``ubiq learn`` folder), ``Embedder`` or ``KeywordModel``.

    Raises:
        ConfigError: If ``task`` or an option is invalid.
        ModelError: If the file is missing or corrupt, or its task has no runtime here.
        ZooError: If a zoo name is unknown or cannot be fetched.
    """
    from ubiq.models.runtime.model import DetectionModel

    if task is not None and task not in TASKS:
        raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if task in (None, "detect"):
        try:
            return DetectionModel.load(name_or_path, **options)
        except WrongTaskError as error:
            if task == "detect":
                raise
            task = error.task
    if task == "segment":
        from ubiq.models.runtime.segment import Segmenter

        return Segmenter.load(name_or_path, **options)
    from ubiq.models.runtime.tasks import Classifier, KeywordModel

    if task == "classify":
        return Classifier.load(name_or_path, **options)
    if task == "kws":
        return KeywordModel.load(name_or_path, **options)
    if task == "embed":
        from ubiq.models.runtime.embed import Embedder

        return Embedder.load(name_or_path, **options)
    raise ModelError(f"{name_or_path} is a {task!r} model; ubiq has no runtime for that task")
