"""Decoder for Ultralytics YOLO detection exports (YOLOv8, YOLO11 and kin).

The ONNX/TFLite export has one prediction output of shape ``(1, 4 + nc, A)`` (or its
transpose ``(1, A, 4 + nc)``): per anchor ``cx, cy, w, h`` in input pixels followed by
``nc`` class scores that are already sigmoided. Pose exports append ``K * 3`` keypoint
values (``x, y, visibility``) per anchor; segmentation exports append mask coefficients
and a second (prototype) output, which this decoder ignores.

Decoder params (all optional):
    num_classes: Number of class scores; required for pose and segmentation exports,
        otherwise inferred as ``channels - 4``.
    num_keypoints: Keypoints per anchor after the class scores (pose exports), default 0.
    keypoint_dims: Values per keypoint, default 3 (``x, y, visibility``).
    agnostic_nms: Suppress across classes, default ``False``.
    max_candidates: Most boxes entering NMS (highest scores first), default 30000.
    normalized: Boxes are fractions of the input width and height (as in Ultralytics
        TFLite exports and ubiq's own detectors) instead of input pixels, default ``False``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ubiq.errors import ModelError
from ubiq.models.runtime.decoders import DecodeOptions, RawDetections
from ubiq.models.runtime.decoders.nms import batched_nms, nms

__all__ = ["decode_yolo"]


def _prediction(outputs: Sequence[np.ndarray]) -> np.ndarray:
    """Returns the ``(rows, cols)`` prediction matrix (batch 1) among the outputs."""
    for output in outputs:
        array = np.asarray(output)
        if array.ndim == 3 and array.shape[0] == 1:
            return array[0]
        if array.ndim == 2:
            return array
    shapes = [tuple(np.shape(output)) for output in outputs]
    raise ModelError(f"yolo decoder needs a (1, 4 + nc, anchors) output, got shapes {shapes}")


def _channels_first(
    prediction: np.ndarray, num_classes: int | None, extra: int
) -> tuple[np.ndarray, int]:
    """Returns the prediction as ``(channels, anchors)`` and the number of classes."""
    rows, cols = prediction.shape
    if num_classes is None:
        channels_first = rows <= cols
        channels = rows if channels_first else cols
        num_classes = channels - 4 - extra
        if num_classes < 1:
            raise ModelError(
                f"yolo output {prediction.shape} leaves {num_classes} class scores "
                f"after 4 box values and {extra} keypoint values"
            )
    else:
        needed = 4 + num_classes + extra
        fits_rows, fits_cols = rows >= needed, cols >= needed
        if not (fits_rows or fits_cols):
            raise ModelError(
                f"yolo output {prediction.shape} is too small for {num_classes} classes "
                f"(needs {needed} channels)"
            )
        channels_first = rows <= cols if fits_rows and fits_cols else fits_rows
    return (prediction if channels_first else prediction.T), num_classes


def _decode_end_to_end(prediction: np.ndarray, options: DecodeOptions) -> RawDetections:
    """Decodes an NMS-free export: ``(1, N, 6)`` rows of ``x1, y1, x2, y2, score, class``.

    Raises:
        ModelError: If the rows do not have at least 6 values.
    """
    rows = prediction.reshape(-1, prediction.shape[-1])
    if rows.shape[1] < 6:
        raise ModelError(
            f"end-to-end yolo output must have rows of x1, y1, x2, y2, score, class; "
            f"got shape {prediction.shape}"
        )
    keep = rows[:, 4] > options.confidence_threshold
    if options.class_ids is not None:
        keep &= np.isin(rows[:, 5].astype(np.int64), options.class_ids)
    rows = rows[keep]
    rows = rows[np.argsort(-rows[:, 4], kind="stable")[: options.max_detections]]
    return RawDetections(
        xyxy=rows[:, :4].astype(np.float32),
        confidence=rows[:, 4].astype(np.float32),
        class_id=rows[:, 5].astype(np.int64),
        keypoints=None,
    )


def decode_yolo(outputs: Sequence[np.ndarray], options: DecodeOptions) -> RawDetections:
    """Decodes an Ultralytics detection (or pose) export.

    Boxes are thresholded on their best class score first, so only the few passing anchors
    are converted; then class-aware NMS keeps at most ``options.max_detections``.

    Args:
        outputs: The model outputs; the first 3-D output with batch 1 is the prediction,
            ``(1, 4 + nc [+ K * dims], A)`` or transposed.
        options: Thresholds, class filter and params (see the module docstring).

    Returns:
        Detections in input pixels, by descending confidence; keypoints ``(N, K, 2)`` for
        pose exports, otherwise ``None``.

    Raises:
        ModelError: If no output has a usable shape.
    """
    params = options.params
    if params.get("end2end"):
        return _decode_end_to_end(_prediction(outputs), options)
    num_classes = params.get("num_classes")
    num_keypoints = int(params.get("num_keypoints", 0))
    keypoint_dims = int(params.get("keypoint_dims", 3))
    extra = num_keypoints * keypoint_dims
    prediction, num_classes = _channels_first(
        _prediction(outputs), None if num_classes is None else int(num_classes), extra
    )
    scores = prediction[4 : 4 + num_classes]
    best = scores.max(axis=0)
    candidates = np.flatnonzero(best > options.confidence_threshold)
    empty = RawDetections.empty(num_keypoints if num_keypoints else None)
    if candidates.size == 0:
        return empty
    class_id = scores[:, candidates].argmax(axis=0)
    if options.class_ids is not None:
        wanted = np.isin(class_id, options.class_ids)
        candidates, class_id = candidates[wanted], class_id[wanted]
        if candidates.size == 0:
            return empty
    confidence = best[candidates].astype(np.float32)
    max_candidates = int(params.get("max_candidates", 30000))
    if candidates.size > max_candidates:
        top = np.argpartition(-confidence, max_candidates)[:max_candidates]
        candidates, class_id, confidence = candidates[top], class_id[top], confidence[top]
    cx, cy, width, height = prediction[:4, candidates].astype(np.float32)
    if params.get("normalized", False):
        cx, width = cx * options.input_width, width * options.input_width
        cy, height = cy * options.input_height, height * options.input_height
    half_w, half_h = width / 2, height / 2
    xyxy = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)
    if params.get("agnostic_nms", False):
        keep = nms(xyxy, confidence, options.iou_threshold, options.max_detections)
    else:
        keep = batched_nms(
            xyxy, confidence, class_id, options.iou_threshold, options.max_detections
        )
    keypoints = None
    if num_keypoints:
        start = 4 + num_classes
        values = prediction[start : start + extra, candidates[keep]].astype(np.float32)
        keypoints = values.reshape(num_keypoints, keypoint_dims, -1).transpose(2, 0, 1)[..., :2]
    return RawDetections(
        xyxy=xyxy[keep],
        confidence=confidence[keep],
        class_id=class_id[keep],
        keypoints=keypoints,
    )
