"""Drawing detections on a frame."""

from __future__ import annotations

import cv2
import numpy as np

from ubiq.types import Detections

_PALETTE = np.array(
    [
        (56, 56, 255),
        (151, 157, 255),
        (31, 112, 255),
        (29, 178, 255),
        (49, 210, 207),
        (10, 249, 72),
        (23, 204, 146),
        (134, 219, 61),
        (52, 147, 26),
        (187, 212, 0),
        (168, 153, 44),
        (255, 194, 0),
        (147, 69, 52),
        (255, 115, 100),
        (236, 24, 0),
        (255, 56, 132),
        (133, 0, 82),
        (255, 56, 203),
        (200, 149, 255),
        (199, 55, 255),
    ],
    dtype=np.uint8,
)


def color_for(class_id: int) -> tuple[int, int, int]:
    """Returns a stable BGR colour for a class id."""
    b, g, r = _PALETTE[int(class_id) % len(_PALETTE)]
    return int(b), int(g), int(r)


def annotate(image: np.ndarray, detections: Detections, *, copy: bool = True) -> np.ndarray:
    """Draws boxes, labels, scores and keypoints.

    Args:
        image: ``(H, W, 3)`` uint8 BGR frame.
        detections: What to draw, in frame pixels.
        copy: Draw on a copy (``True``) or in place.

    Returns:
        The annotated ``(H, W, 3)`` uint8 BGR image.
    """
    canvas = image.copy() if copy else image
    thickness = max(1, round(min(canvas.shape[:2]) / 320))
    for row in range(len(detections)):
        x1, y1, x2, y2 = (int(round(float(v))) for v in detections.xyxy[row])
        class_id = int(detections.class_id[row])
        color = color_for(class_id)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
        text = f"{detections.label(class_id)} {detections.confidence[row]:.2f}"
        if detections.tracker_id is not None:
            text = f"#{int(detections.tracker_id[row])} {text}"
        (text_width, text_height), baseline = cv2.getTextSize(
            text, cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thickness, 1
        )
        top = max(y1 - text_height - baseline - 2, 0)
        cv2.rectangle(
            canvas, (x1, top), (x1 + text_width + 2, top + text_height + baseline + 2), color, -1
        )
        cv2.putText(
            canvas,
            text,
            (x1 + 1, top + text_height + 1),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4 * thickness,
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
        if detections.keypoints is not None:
            for x, y in detections.keypoints[row]:
                cv2.circle(canvas, (int(x), int(y)), thickness + 1, color, -1, cv2.LINE_AA)
    return canvas
