"""Decoder for MediaPipe's BlazePose person detector (``pose_detection.tflite``).

The model takes a 224x224 RGB image in ``[-1, 1]`` (letterboxed, black borders) and emits
regressors ``(1, 2254, 12)`` and classificators ``(1, 2254, 1)`` (logits). Each anchor
regresses a box ``dx, dy, w, h`` and four alignment keypoints ``dx, dy``:

0. mid-hip centre;
1. a point whose distance from the mid-hip is the radius of the circle around the whole
   body (Leonardo's Vitruvian man) and whose direction is the body's "up";
2. mid-shoulder centre;
3. the same kind of point for the circle around the upper body.

The box is what MediaPipe calls the face box, but in this model its width and height are
constant (a fifth of the input side, 44.8 of 224 pixels, on every photo tried here) and
it sits over the lower face and neck: it is not a useful box. The person box therefore follows
from keypoints 0 and 1, as MediaPipe's pose landmark graph derives its region of interest.

Decoding is BlazeFace's (``TensorsToDetectionsCalculator`` then weighted NMS on the face
boxes, which blends the keypoints too); only the anchors, the keypoint count and the box
differ. The constants below were read from the graphs compiled into the
``mediapipe==0.10.14`` wheel (``PoseDetectionCpu`` and ``PoseDetectionToRoi``, parsed with
the wheel's own protobuf descriptors) and match ``pose_detection_cpu.pbtxt`` and
``tasks/cc/vision/pose_detector/pose_detector_graph.cc`` in google-ai-edge/mediapipe; run
on the same 224x224 input, MediaPipe 0.10.14's own graph gave the scores, keypoints, face
boxes and regions of interest this decoder gives to within 1e-4 pixels (the test records
its numbers):

- ``ImageToTensorCalculator``: 224x224, ``keep_aspect_ratio``, range ``[-1, 1]``,
  ``BORDER_ZERO`` (black padding, so -1 in the tensor);
- ``SsdAnchorsCalculator``: 5 layers, strides 8, 16, 32, 32, 32, aspect ratio 1.0,
  ``fixed_anchor_size``, offset 0.5 (2 anchors per cell and layer: 28*28*2 + 14*14*2 +
  7*7*6 = 2254);
- ``TensorsToDetectionsCalculator``: 12 coords, box offset 0, keypoint offset 4, 4
  keypoints, ``reverse_output_order`` (x before y), x/y/w/h scale 224, sigmoid scores,
  score clipping 100, ``min_score_thresh`` 0.5 in the wheel's graph (0.2 in another
  version of ``pose_detection_cpu.pbtxt``; here the caller's ``confidence_threshold``
  decides);
- ``NonMaxSuppressionCalculator``: weighted, IoU 0.3, on the face boxes (here too, as
  decoder param ``face_iou_threshold``);
- ``AlignmentPointsRectsCalculator``: centre keypoint 0, scale keypoint 1, a square of
  side twice their distance, rotated so that 0->1 points up (target angle 90 degrees);
- ``RectTransformationCalculator``: scale 1.25 in x and y, ``square_long``.

Boxes (decoder param ``box``):
    ``"body"`` (default): the rectangle from the feet to the head along the body axis,
        ``2 r`` long (``r`` = distance of keypoint 1 from keypoint 0, so keypoint 1 is
        the top of the head and its mirror image the feet), ``body_width_ratio * 2 r``
        wide across it, and the axis-aligned box around it. The default ratio 0.41 is
        **not** a MediaPipe constant: it is the width-to-height ratio pedestrian
        benchmarks (Caltech, CityPersons) fix for standing people. Arms held out from the
        body fall outside it.
    ``"roi"``: the axis-aligned box around MediaPipe's region of interest for its pose
        landmark model (the rotated square of side ``2 r * 1.25``): generous, square,
        holds arms and legs in any pose; suits blurring.
    ``"face"``: the model's own box, decoded as MediaPipe does (see above).

The caller's ``iou_threshold`` then applies plain NMS to the boxes returned, the meaning
it has for every other detector. MediaPipe's 0.3 on the face boxes is kept apart from it
because the face boxes all have the same size, so their IoU measures only how far apart
two faces are; with a looser 0.45 (``ubiq detect``'s default) the same person came out
twice in 16 of the 150 demo frames, with 0.3 in none.

Keypoints: the four alignment keypoints above, ``(N, 4, 2)``, in every mode. A person
whose hips are out of the frame still gets a box (clipped to the frame by the caller).

Decoder params (all optional):
    box: ``"body"``, ``"roi"`` or ``"face"``, default ``"body"``.
    body_width_ratio: Width of a ``"body"`` box across the body axis over its length,
        default 0.41.
    roi_scale: Scale of MediaPipe's region of interest, default 1.25.
    face_iou_threshold: Weighted-NMS IoU threshold on the face boxes, default 0.3.
    input_size, strides, num_anchors_per_layer, anchor_offset, x_scale, y_scale,
        w_scale, h_scale, score_clipping, nms: As for the BlazeFace decoder, with the
        defaults above.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from ubiq.errors import ModelError
from ubiq.models.runtime.decoders import DecodeOptions, RawDetections
from ubiq.models.runtime.decoders.blazeface import decode_blazeface
from ubiq.models.runtime.decoders.nms import nms

__all__ = ["BOX_MODES", "decode_blazepose", "person_boxes"]

STRIDES = (8, 16, 32, 32, 32)
ANCHORS_PER_LAYER = 2
NUM_KEYPOINTS = 4
CENTRE_KEYPOINT = 0  # mid-hip
SCALE_KEYPOINT = 1  # full-body circle: size and "up"
ROI_SCALE = 1.25
FACE_IOU_THRESHOLD = 0.3
BODY_WIDTH_RATIO = 0.41  # not MediaPipe's: the pedestrian-benchmark aspect ratio
BOX_MODES = ("body", "roi", "face")


def person_boxes(
    keypoints: np.ndarray,
    box: str = "body",
    body_width_ratio: float = BODY_WIDTH_RATIO,
    roi_scale: float = ROI_SCALE,
) -> np.ndarray:
    """Axis-aligned person boxes from BlazePose's alignment keypoints.

    Args:
        keypoints: ``(N, K, 2)`` keypoints ``x, y`` in pixels with ``K >= 2``: keypoint 0
            the mid-hip, keypoint 1 the full-body scale point.
        box: ``"body"`` (the body's rectangle, ``2 r`` along the axis and
            ``body_width_ratio * 2 r`` across) or ``"roi"`` (MediaPipe's square region of
            interest of side ``2 r * roi_scale``), where ``r`` is the distance from
            keypoint 0 to keypoint 1.
        body_width_ratio: Width over length of a ``"body"`` rectangle.
        roi_scale: Side of the ``"roi"`` square over ``2 r``.

    Returns:
        ``(N, 4)`` float32 boxes ``x1, y1, x2, y2`` in the same pixels, not clipped.

    Raises:
        ValueError: If ``keypoints`` has the wrong shape or ``box`` is not ``"body"`` or
            ``"roi"``.
    """
    points = np.asarray(keypoints, dtype=np.float64)
    if points.ndim != 3 or points.shape[1] < 2 or points.shape[2] != 2:
        raise ValueError(f"keypoints must have shape (N, K >= 2, 2), got {points.shape}")
    centre = points[:, CENTRE_KEYPOINT]
    axis = points[:, SCALE_KEYPOINT] - centre
    radius = np.hypot(axis[:, 0], axis[:, 1])
    if box == "body":
        half_length, half_width = radius, body_width_ratio * radius
    elif box == "roi":
        half_length = half_width = roi_scale * radius
    else:
        raise ValueError(f"box must be 'body' or 'roi', got {box!r}")
    # Unit vector along the body (0 -> 1); a zero radius gives a zero-size box either way.
    safe = np.where(radius > 0, radius, 1.0)
    cos, sin = np.abs(axis[:, 0]) / safe, np.abs(axis[:, 1]) / safe
    # Half extents of the rotated rectangle: along-axis and across-axis parts on x and y.
    extent_x = cos * half_length + sin * half_width
    extent_y = sin * half_length + cos * half_width
    extent = np.stack([extent_x, extent_y], axis=1)
    return np.concatenate([centre - extent, centre + extent], axis=1).astype(np.float32)


def _number(params: dict, name: str, default: float, *, at_most: float | None = None) -> float:
    """Pops ``params[name]`` (default ``default``): a number above 0 (and ``<= at_most``)."""
    value = params.pop(name, default)
    valid = not isinstance(value, bool) and isinstance(value, int | float) and value > 0
    if not valid or (at_most is not None and value > at_most):
        bound = f" and at most {at_most:g}" if at_most is not None else ""
        raise ModelError(f"blazepose param {name} must be a number above 0{bound}, got {value!r}")
    return float(value)


def decode_blazepose(outputs: Sequence[np.ndarray], options: DecodeOptions) -> RawDetections:
    """Decodes BlazePose detector outputs into person boxes with alignment keypoints.

    Args:
        outputs: Regressors ``(1, A, 12)`` and classificators ``(1, A, 1)``, in any order.
        options: Input size, thresholds (MediaPipe keeps scores above 0.5; the IoU
            threshold applies to the boxes returned, after MediaPipe's weighted NMS on the
            face boxes), class filter (people are class 0) and params (see the module
            docstring).

    Returns:
        People in input pixels with ``(N, 4, 2)`` keypoints (mid-hip, full-body scale
        point, mid-shoulder, upper-body scale point), by descending confidence.

    Raises:
        ModelError: If the outputs do not fit the anchors or a param is invalid.
    """
    params = dict(options.params)
    box = params.pop("box", "body")
    if box not in BOX_MODES:
        raise ModelError(f"blazepose param box must be one of {', '.join(BOX_MODES)}, got {box!r}")
    body_width_ratio = _number(params, "body_width_ratio", BODY_WIDTH_RATIO)
    roi_scale = _number(params, "roi_scale", ROI_SCALE)
    face_iou = _number(params, "face_iou_threshold", FACE_IOU_THRESHOLD, at_most=1.0)
    face_params = {
        "strides": list(STRIDES),
        "num_anchors_per_layer": ANCHORS_PER_LAYER,
        "num_keypoints": NUM_KEYPOINTS,
        **params,
    }
    faces = decode_blazeface(outputs, replace(options, iou_threshold=face_iou, params=face_params))
    if len(faces) == 0:
        return faces
    xyxy = faces.xyxy
    if box != "face":
        xyxy = person_boxes(faces.keypoints, box, body_width_ratio, roi_scale)
    keep = nms(xyxy, faces.confidence, options.iou_threshold, options.max_detections)
    return RawDetections(
        xyxy=xyxy[keep],
        confidence=faces.confidence[keep],
        class_id=faces.class_id[keep],
        keypoints=faces.keypoints[keep],
    )
