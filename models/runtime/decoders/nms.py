"""Non-maximum suppression: plain, class-aware (batched) and weighted (blending).

All functions take boxes as ``(N, 4)`` arrays ``x1, y1, x2, y2`` and return results ordered
by descending score (ties keep input order). Plain suppression runs in OpenCV's
``cv2.dnn.NMSBoxes`` (about ten times faster than numpy for tens of boxes) and falls back to
a numpy loop with one vectorised pass per kept box where OpenCV lacks the dnn module.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["batched_nms", "nms", "weighted_nms"]

_CV2_NMS = getattr(getattr(cv2, "dnn", None), "NMSBoxes", None)


def _check(xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float) -> tuple[np.ndarray, ...]:
    boxes = np.asarray(xyxy)
    if boxes.dtype.kind != "f":
        boxes = boxes.astype(np.float32)
    values = np.asarray(scores, dtype=np.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"xyxy must have shape (N, 4), got {boxes.shape}")
    if values.shape != (boxes.shape[0],):
        raise ValueError(f"scores must have shape ({boxes.shape[0]},), got {values.shape}")
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    return boxes, values


def _iou_one_to_many(box: np.ndarray, boxes: np.ndarray, area: float, areas: np.ndarray):
    width = np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])
    height = np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])
    intersection = np.clip(width, 0.0, None) * np.clip(height, 0.0, None)
    union = area + areas - intersection
    return intersection / np.maximum(union, 1e-9)


def _areas(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0.0, None) * np.clip(
        boxes[:, 3] - boxes[:, 1], 0.0, None
    )


def nms(
    xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float, max_detections: int = 300
) -> np.ndarray:
    """Greedy non-maximum suppression.

    A box is dropped when its IoU with a higher-scoring kept box is above ``iou_threshold``.

    Args:
        xyxy: ``(N, 4)`` boxes ``x1, y1, x2, y2``.
        scores: ``(N,)`` scores.
        iou_threshold: IoU above which the lower-scoring box is suppressed, in ``[0, 1]``.
        max_detections: Most indices returned.

    Returns:
        ``(M,)`` int64 indices into ``xyxy`` of the kept boxes, by descending score,
        ``M <= max_detections``.

    Raises:
        ValueError: If a shape or ``iou_threshold`` is invalid.
    """
    boxes, values = _check(xyxy, scores, iou_threshold)
    if boxes.shape[0] == 0 or max_detections <= 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-values, kind="stable")
    if _CV2_NMS is None:
        return _nms_numpy(boxes, order, iou_threshold, max_detections)
    # OpenCV wants x, y, w, h and drops scores <= score_threshold (which must be >= 0), so
    # it gets positive ranks instead of raw scores; the order, ties included, is ours.
    ranks = np.empty(boxes.shape[0], dtype=np.float32)
    ranks[order] = np.arange(boxes.shape[0], 0, -1, dtype=np.float32)
    xywh = boxes.astype(np.float64)
    xywh[:, 2:] -= xywh[:, :2]
    kept = _CV2_NMS(xywh, ranks, 0.0, float(iou_threshold))
    return np.asarray(kept, dtype=np.int64).reshape(-1)[:max_detections]


def _nms_numpy(
    boxes: np.ndarray, order: np.ndarray, iou_threshold: float, max_detections: int
) -> np.ndarray:
    """Reference greedy NMS over ``boxes`` visited in ``order``; returns kept indices."""
    boxes = boxes[order]
    areas = _areas(boxes)
    remaining = np.arange(boxes.shape[0])
    keep: list[int] = []
    while remaining.size:
        first = remaining[0]
        keep.append(first)
        if len(keep) >= max_detections:
            break
        rest = remaining[1:]
        iou = _iou_one_to_many(boxes[first], boxes[rest], areas[first], areas[rest])
        remaining = rest[iou <= iou_threshold]
    return order[np.asarray(keep, dtype=np.int64)]


def batched_nms(
    xyxy: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    iou_threshold: float,
    max_detections: int = 300,
) -> np.ndarray:
    """Class-aware non-maximum suppression: boxes of different classes never suppress each other.

    Boxes are shifted by ``class_id * offset`` (offset larger than any coordinate span) so one
    plain NMS pass handles every class, as Ultralytics does.

    Args:
        xyxy: ``(N, 4)`` boxes ``x1, y1, x2, y2``.
        scores: ``(N,)`` scores.
        class_ids: ``(N,)`` integer class ids.
        iou_threshold: IoU above which the lower-scoring box of the same class is suppressed.
        max_detections: Most indices returned.

    Returns:
        ``(M,)`` int64 indices of the kept boxes, by descending score.

    Raises:
        ValueError: If a shape or ``iou_threshold`` is invalid.
    """
    boxes, values = _check(xyxy, scores, iou_threshold)
    classes = np.asarray(class_ids)
    if classes.shape != values.shape:
        raise ValueError(f"class_ids must have shape {values.shape}, got {classes.shape}")
    if boxes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    # Shift relative to the minimum so the offset stays small (float32 keeps sub-pixel
    # precision) whatever the absolute coordinates are.
    low = float(boxes.min())
    span = float(boxes.max()) - low + 1.0
    ranks = np.unique(classes, return_inverse=True)[1].reshape(-1).astype(np.float64)
    shifted = (boxes - low).astype(np.float64) + (ranks * span)[:, None]
    return nms(shifted, values, iou_threshold, max_detections)


def weighted_nms(
    xyxy: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float,
    max_detections: int = 300,
    keypoints: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Weighted non-maximum suppression ("blending"), as MediaPipe's face detectors use.

    The highest-scoring box and every remaining box overlapping it by more than
    ``iou_threshold`` form a cluster; the cluster becomes one detection whose box (and
    keypoints) are the score-weighted mean of its members and whose score is the top score.

    Args:
        xyxy: ``(N, 4)`` boxes ``x1, y1, x2, y2``.
        scores: ``(N,)`` scores.
        iou_threshold: IoU above which a box joins the cluster of a higher-scoring box.
        max_detections: Most clusters returned.
        keypoints: Optional ``(N, K, 2)`` keypoints blended with the same weights.

    Returns:
        ``(indices, blended_xyxy, blended_keypoints)``: ``(M,)`` int64 indices of each
        cluster's top box (use them for scores and classes), ``(M, 4)`` float32 blended
        boxes, and ``(M, K, 2)`` float32 blended keypoints or ``None``.

    Raises:
        ValueError: If a shape or ``iou_threshold`` is invalid.
    """
    boxes, values = _check(xyxy, scores, iou_threshold)
    points = None
    if keypoints is not None:
        points = np.asarray(keypoints, dtype=np.float32)
        if points.ndim != 3 or points.shape[0] != boxes.shape[0] or points.shape[2] != 2:
            raise ValueError(
                f"keypoints must have shape ({boxes.shape[0]}, K, 2), got {points.shape}"
            )
    order = np.argsort(-values, kind="stable")
    areas = _areas(boxes)
    remaining = order
    indices: list[int] = []
    blended_boxes: list[np.ndarray] = []
    blended_points: list[np.ndarray] = []
    while remaining.size and len(indices) < max_detections:
        first = remaining[0]
        iou = _iou_one_to_many(boxes[first], boxes[remaining], areas[first], areas[remaining])
        in_cluster = iou > iou_threshold
        in_cluster[0] = True  # A degenerate (zero-area) top box still forms its own cluster.
        members = remaining[in_cluster]
        weights = values[members].astype(np.float64)
        total = weights.sum()
        weights = weights / total if total > 0 else np.full(members.size, 1.0 / members.size)
        indices.append(first)
        blended_boxes.append(weights @ boxes[members])
        if points is not None:
            blended_points.append(np.tensordot(weights, points[members], axes=1))
        remaining = remaining[~in_cluster]
    count = len(indices)
    out_boxes = np.asarray(blended_boxes, dtype=np.float32).reshape(count, 4)
    out_points = None
    if points is not None:
        out_points = np.asarray(blended_points, dtype=np.float32).reshape(count, points.shape[1], 2)
    return np.asarray(indices, dtype=np.int64), out_boxes, out_points
