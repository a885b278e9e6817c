"""The detection pipeline: frame in, :class:`~ubiq.types.Detections` out."""

from __future__ import annotations

from ubiq.models.runtime.model import DetectionModel
from ubiq.types import Detections, Frame


class DetectPipeline:
    """Wraps a :class:`DetectionModel` as a runner stage with per-stage timings.

    Args:
        model: The loaded detection model.
    """

    def __init__(self, model: DetectionModel) -> None:
        self.model = model
        self.last_inference_ms: float | None = None

    def __call__(self, frame: Frame) -> Detections:
        detections = self.model(frame.image)
        self.last_inference_ms = self.model.last_times.inference_ms
        return detections
