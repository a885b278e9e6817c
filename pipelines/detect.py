"""The detection pipeline: frame in, :class:`~ubiq.types.Detections` out."""

from __future__ import annotations

import time

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

    def prepare(self, frame: Frame) -> tuple:
        """The part of the work that needs only the frame (runs ahead in the prefetch thread)."""
        return self.model.prepare(frame.image)

    def complete(self, frame: Frame, prepared: tuple) -> Detections:
        """Inference and decoding of a frame that :meth:`prepare` already turned into a tensor."""
        tensor, transform = prepared
        start = time.perf_counter()
        outputs = self.model.infer(tensor)
        self.last_inference_ms = (time.perf_counter() - start) * 1e3
        return self.model.decode(outputs, transform)
