"""Draws each track's recent path (``result.data["trails"]``, set by the tracking stage)."""

from __future__ import annotations

import cv2
import numpy as np

from ubiq.pipelines.sinks.annotate import color_for, line_thickness
from ubiq.types import FrameResult


class TrailAnnotator:
    """A fading polyline through each visible track's last centres, in its class colour."""

    def __call__(self, canvas: np.ndarray, result: FrameResult) -> np.ndarray:
        trails = result.data.get("trails")
        detections = result.detections
        if not trails or detections is None or detections.tracker_id is None:
            return canvas
        thickness = line_thickness(canvas)
        classes = dict(
            zip(detections.tracker_id.tolist(), detections.class_id.tolist(), strict=True)
        )
        for track_id, points in trails.items():
            if len(points) < 2:
                continue
            color = color_for(classes.get(track_id, 0))
            path = np.round(np.asarray(points)).astype(np.int32)
            for step in range(1, len(path)):
                weight = max(1, round(thickness * step / len(path)))
                cv2.line(
                    canvas, tuple(path[step - 1]), tuple(path[step]), color, weight, cv2.LINE_AA
                )
        return canvas
