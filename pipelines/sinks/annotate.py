"""Drawing a frame's results: small annotators that the video, the window, saved images
and a web view share.

An annotator is a callable ``annotator(canvas, result) -> canvas`` that draws in place on
the ``(H, W, 3)`` uint8 BGR ``canvas``. :func:`draw` copies the frame and applies a list
of them in order (by default masks first, then boxes, so labels stay readable).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

from ubiq.types import Detections, Frame, FrameResult

Annotator = Callable[[np.ndarray, FrameResult], np.ndarray]

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


def line_thickness(canvas: np.ndarray) -> int:
    """Line width that reads well at the canvas size (1 px at 320, 2 px at 640, ...)."""
    return max(1, round(min(canvas.shape[:2]) / 320))


def draw_label(
    canvas: np.ndarray, text: str, origin: tuple[int, int], color: tuple[int, int, int]
) -> None:
    """Draws ``text`` in white on a filled ``color`` tag whose bottom-left is ``origin``."""
    thickness = line_thickness(canvas)
    (text_width, text_height), baseline = cv2.getTextSize(
        text, cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thickness, 1
    )
    x, y = origin
    top = max(y - text_height - baseline - 2, 0)
    cv2.rectangle(
        canvas, (x, top), (x + text_width + 2, top + text_height + baseline + 2), color, -1
    )
    cv2.putText(
        canvas,
        text,
        (x + 1, top + text_height + 1),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.4 * thickness,
        (255, 255, 255),
        1,
        cv2.LINE_AA,
    )


class BoxAnnotator:
    """Boxes with ``#id label score`` tags, and keypoints when the model gives them.

    Args:
        show_confidence: Add the score to the tag.
    """

    def __init__(self, *, show_confidence: bool = True) -> None:
        self.show_confidence = show_confidence

    def __call__(self, canvas: np.ndarray, result: FrameResult) -> np.ndarray:
        detections = result.detections
        if detections is None:
            return canvas
        thickness = line_thickness(canvas)
        for row in range(len(detections)):
            x1, y1, x2, y2 = (int(round(float(v))) for v in detections.xyxy[row])
            class_id = int(detections.class_id[row])
            color = color_for(class_id)
            cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
            text = detections.label(class_id)
            if self.show_confidence:
                text = f"{text} {detections.confidence[row]:.2f}"
            if detections.tracker_id is not None:
                text = f"#{int(detections.tracker_id[row])} {text}"
            draw_label(canvas, text, (x1, y1), color)
            if detections.keypoints is not None:
                for x, y in detections.keypoints[row]:
                    cv2.circle(canvas, (int(x), int(y)), thickness + 1, color, -1, cv2.LINE_AA)
        return canvas


class MaskAnnotator:
    """Tints each class of ``result.class_map`` and each instance mask in its colour.

    Args:
        opacity: How strongly masks cover the frame, in ``[0, 1]``.
        background_class: Class id left untinted in a class map (``None``: tint all).

    Raises:
        ValueError: If ``opacity`` is outside ``[0, 1]``.
    """

    def __init__(self, *, opacity: float = 0.45, background_class: int | None = 0) -> None:
        if not 0.0 <= opacity <= 1.0:
            raise ValueError(f"opacity must be in [0, 1], got {opacity}")
        self.opacity = opacity
        self.background_class = background_class

    def __call__(self, canvas: np.ndarray, result: FrameResult) -> np.ndarray:
        colors = np.zeros_like(canvas)
        covered = np.zeros(canvas.shape[:2], bool)
        class_map = result.class_map
        if class_map is not None and class_map.shape == canvas.shape[:2]:
            for class_id in np.unique(class_map):
                if class_id == self.background_class:
                    continue
                where = class_map == class_id
                colors[where] = color_for(int(class_id))
                covered |= where
        detections = result.detections
        if detections is not None and detections.mask is not None:
            for row in range(len(detections)):
                where = detections.mask[row]
                if where.shape != covered.shape:
                    continue
                colors[where] = color_for(int(detections.class_id[row]))
                covered |= where
        if covered.any():
            blended = cv2.addWeighted(canvas, 1.0 - self.opacity, colors, self.opacity, 0.0)
            canvas[covered] = blended[covered]
        return canvas


def default_annotators() -> list[Annotator]:
    """Masks, then track trails, then boxes."""
    from ubiq.pipelines.sinks.trail import TrailAnnotator

    return [MaskAnnotator(), TrailAnnotator(), BoxAnnotator()]


def draw(result: FrameResult, annotators: Sequence[Annotator] | None = None) -> np.ndarray:
    """Returns a copy of the result's frame with every annotator applied in order.

    Args:
        result: The finished frame result.
        annotators: What to draw (default: :func:`default_annotators`).
    """
    canvas = result.frame.image.copy()
    for annotator in default_annotators() if annotators is None else annotators:
        canvas = annotator(canvas, result)
    return canvas


def annotate(image: np.ndarray, detections: Detections, *, copy: bool = True) -> np.ndarray:
    """Draws boxes, labels, scores and keypoints on one image.

    Args:
        image: ``(H, W, 3)`` uint8 BGR frame.
        detections: What to draw, in frame pixels.
        copy: Draw on a copy (``True``) or in place.

    Returns:
        The annotated ``(H, W, 3)`` uint8 BGR image.
    """
    canvas = image.copy() if copy else image
    return BoxAnnotator()(canvas, FrameResult(Frame(canvas, 0, 0), detections))
