"""Segmentation decoders: raw model outputs to class maps and instance masks on the model's
output grid (:mod:`ubiq.models.runtime.segment` maps them to frame pixels).

Three decoders, named in a manifest's ``decoder.name`` or recognised from output shapes by
:func:`guess_segment_decoder`:

* ``label_map``: one ``(1, H, W)`` (or ``(1, H, W, 1)`` integer) output of class ids, as
  DeepLabV3 TFLite models from the TF Lite and Coral zoos give (argmax inside the model);
* ``mask``: one 4-D score output, ``(1, C, H, W)`` or ``(1, H, W, C)``: class logits or
  probabilities (best class wins, background ``params.background``, default 0), or a person
  mask of one channel (foreground where the probability exceeds ``params.threshold``,
  default 0.5, as MediaPipe's selfie segmenter) or two (background, person);
* ``yolo_seg``: Ultralytics ``-seg`` exports, ``(1, 4 + nc + M, A)`` predictions (box, class
  scores, M mask coefficients per anchor) and ``(1, M, h, w)`` prototypes; boxes, classes
  and one mask per instance, cropped to its box.

Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ubiq.errors import ModelError
from ubiq.models.runtime.decoders.nms import batched_nms, nms

__all__ = [
    "SEGMENT_DECODERS",
    "InstanceMasks",
    "best_class",
    "describe_outputs",
    "expected_outputs",
    "guess_segment_decoder",
    "score_layout",
    "split_yolo_seg_outputs",
    "decode_yolo_seg",
]

SEGMENT_DECODERS = ("label_map", "mask", "yolo_seg")
"""The segmentation decoder names a manifest may give."""


def expected_outputs() -> str:
    """What the segmentation decoders understand, for error messages."""
    return (
        "a label map (1, H, W) of class ids, class scores (1, C, H, W) or (1, H, W, C), a "
        "one- or two-channel person mask, or Ultralytics -seg outputs (1, 4 + nc + 32, A) "
        "and (1, 32, h, w)"
    )


def describe_outputs(names: Sequence[str], shapes: Sequence[Sequence[Any]]) -> str:
    """``"out (1, 21, 65, 65), protos (1, 32, 80, 80)"`` for error messages."""
    return ", ".join(f"{name} {tuple(shape)}" for name, shape in zip(names, shapes))


def _dim(value: Any) -> int:
    if isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= 0:
        return int(value)
    return -1


def _is_integer(dtype: str) -> bool:
    return any(dtype.startswith(kind) for kind in ("int", "uint"))


def score_layout(shape: Sequence[int], classes: int | None = None) -> str:
    """``NCHW`` or ``NHWC`` for a 4-D score output.

    The axis whose length equals ``classes`` (when exactly one does) is the channel axis;
    otherwise the shorter of axes 1 and 3 (a class count is smaller than a map side).
    """
    channels_first, channels_last = _dim(shape[1]), _dim(shape[3])
    if classes is not None and (channels_first == classes) != (channels_last == classes):
        return "NCHW" if channels_first == classes else "NHWC"
    if channels_first == -1 or channels_last == -1:
        return "NHWC" if channels_last != -1 and channels_last <= 4 else "NCHW"
    return "NCHW" if channels_first <= channels_last else "NHWC"


def split_yolo_seg_outputs(
    shapes: Sequence[Sequence[Any]],
) -> tuple[int, int] | None:
    """Positions ``(prediction, prototypes)`` of Ultralytics ``-seg`` outputs, else ``None``.

    The prediction is ``(1, 4 + nc + M, A)`` (or transposed) and the prototypes
    ``(1, M, h, w)`` with ``M`` below ``4 + nc + M``.
    """
    if len(shapes) != 2:
        return None
    ranks = [len(shape) for shape in shapes]
    if sorted(ranks) != [3, 4]:
        return None
    prediction, prototypes = (0, 1) if ranks[0] == 3 else (1, 0)
    masks = _dim(shapes[prototypes][1])
    rows, cols = (_dim(v) for v in shapes[prediction][1:])
    channels = min(v for v in (rows, cols) if v > 0) if max(rows, cols) > 0 else -1
    if masks <= 0 or channels <= 4 + masks:
        return None
    return prediction, prototypes


def guess_segment_decoder(
    output_shapes: Sequence[Sequence[Any]], output_dtypes: Sequence[str] = ()
) -> str | None:
    """Recognises a segmentation model's decoder from its output shapes and types.

    Args:
        output_shapes: Shape of each output, in model order (dynamic axes as ``-1``,
            ``None`` or a name).
        output_dtypes: Numpy dtype names of the outputs (``"int64"``, ``"float32"``).

    Returns:
        ``"yolo_seg"`` for a ``(1, 4 + nc + M, A)`` prediction beside ``(1, M, h, w)``
        prototypes; ``"label_map"`` for one ``(1, H, W)`` output, or ``(1, H, W, 1)`` of
        integers; ``"mask"`` for one other 4-D output with batch 1; ``None`` otherwise.
    """
    shapes = [tuple(_dim(v) for v in shape) for shape in output_shapes]
    dtypes = list(output_dtypes) + ["float32"] * (len(shapes) - len(output_dtypes))
    if split_yolo_seg_outputs(shapes) is not None:
        return "yolo_seg"
    if len(shapes) != 1 or not shapes[0] or shapes[0][0] not in (1, -1):
        return None
    shape = shapes[0]
    if len(shape) == 3 and min(shape[1:]) != 0:
        return "label_map"
    if len(shape) == 4 and shape[3] == 1 and _is_integer(dtypes[0]):
        return "label_map"
    if len(shape) == 4:
        return "mask"
    return None


def best_class(maps: np.ndarray) -> np.ndarray:
    """``(h, w)`` int32 index of the highest of ``(C, h, w)`` score maps (the first on ties),
    as ``maps.argmax(0)``.

    A running maximum over the classes reads each map once in memory order, where
    ``argmax(0)`` strides across them; OpenCV's compare, max and masked copy do it in SIMD
    without the branch mispredictions of a numpy masked write (ubiq-seg-mnv2's 7 classes at
    256x192: 0.12 ms against 1.0 ms for numpy and 1.9 ms for ``argmax(0)`` on noisy scores).
    Maps OpenCV cannot take (not float32, over 255 classes) go to ``argmax(0)``; a NaN
    score's class is undefined.
    """
    if len(maps) > 255 or maps.dtype != np.float32 or maps.strides[2] != maps.itemsize:
        return maps.argmax(0).astype(np.int32)
    best = maps[0].copy()
    class_ids = np.zeros(best.shape, np.uint8)
    fill = np.empty(best.shape, np.uint8)
    for class_id in range(1, len(maps)):
        higher = cv2.compare(maps[class_id], best, cv2.CMP_GT)
        fill.fill(class_id)
        cv2.copyTo(fill, higher, class_ids)
        cv2.max(best, maps[class_id], dst=best)
    return class_ids.astype(np.int32)


@dataclass(frozen=True)
class InstanceMasks:
    """Decoded instances in model-input pixels, before mapping to the frame.

    Attributes:
        xyxy: ``(N, 4)`` float32 boxes in model-input pixels.
        confidence: ``(N,)`` float32 scores.
        class_id: ``(N,)`` int64 class ids.
        probabilities: ``(N, h, w)`` float32 mask probabilities on the prototype grid (the
            whole grid: the crop to each box happens in frame pixels).
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    probabilities: np.ndarray

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])


def _sigmoid(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(values, -50.0, 50.0)))


def decode_yolo_seg(
    outputs: Sequence[np.ndarray],
    *,
    input_width: int,
    input_height: int,
    confidence_threshold: float,
    iou_threshold: float,
    max_detections: int,
    params: Mapping[str, Any],
    class_ids: np.ndarray | None = None,
) -> InstanceMasks:
    """Decodes an Ultralytics ``-seg`` export (YOLOv8-seg, YOLO11-seg).

    Boxes pass the confidence threshold on their best class, then class-aware NMS (or
    class-agnostic with ``params.agnostic_nms``); each kept box's coefficients times the
    prototypes, sigmoided, give its mask probabilities.

    Args:
        outputs: The two outputs in model order (prediction and prototypes, either order).
        input_width: Model input width in pixels.
        input_height: Model input height in pixels.
        confidence_threshold: Lowest best-class score kept, in ``[0, 1]``.
        iou_threshold: NMS IoU threshold, in ``[0, 1]``.
        max_detections: Most instances returned.
        params: Decoder params: ``num_classes`` (default: channels - 4 - M), ``agnostic_nms``.
        class_ids: Keep only these classes; ``None`` keeps all.

    Returns:
        The instances by descending confidence.

    Raises:
        ModelError: If the outputs are not a prediction and prototypes, naming their shapes.
    """
    shapes = [np.shape(output) for output in outputs]
    positions = split_yolo_seg_outputs(shapes)
    if positions is None:
        raise ModelError(
            f"yolo_seg decoder needs (1, 4 + nc + M, A) and (1, M, h, w) outputs, got {shapes}"
        )
    prediction = np.asarray(outputs[positions[0]])[0]
    prototypes = np.asarray(outputs[positions[1]], np.float32)[0]
    num_masks, proto_height, proto_width = prototypes.shape
    num_classes = params.get("num_classes")
    rows, cols = prediction.shape
    if num_classes is not None:
        needed = 4 + int(num_classes) + num_masks
        if rows != needed and cols == needed:
            prediction = prediction.T
        elif rows != needed:
            raise ModelError(
                f"yolo_seg output {prediction.shape} does not hold 4 + {num_classes} classes "
                f"+ {num_masks} mask coefficients per anchor"
            )
        num_classes = int(num_classes)
    else:
        if rows > cols:
            prediction = prediction.T
        num_classes = prediction.shape[0] - 4 - num_masks
    scores = prediction[4 : 4 + num_classes]
    best = scores.max(axis=0)
    candidates = np.flatnonzero(best > confidence_threshold)
    class_id = scores[:, candidates].argmax(axis=0)
    if class_ids is not None:
        wanted = np.isin(class_id, class_ids)
        candidates, class_id = candidates[wanted], class_id[wanted]
    empty = InstanceMasks(
        np.zeros((0, 4), np.float32),
        np.zeros(0, np.float32),
        np.zeros(0, np.int64),
        np.zeros((0, proto_height, proto_width), np.float32),
    )
    if candidates.size == 0:
        return empty
    confidence = best[candidates].astype(np.float32)
    cx, cy, width, height = prediction[:4, candidates].astype(np.float32)
    xyxy = np.stack([cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2], axis=1)
    if params.get("agnostic_nms", False):
        keep = nms(xyxy, confidence, iou_threshold, max_detections)
    else:
        keep = batched_nms(xyxy, confidence, class_id, iou_threshold, max_detections)
    xyxy, confidence, class_id = xyxy[keep], confidence[keep], class_id[keep]
    coefficients = prediction[4 + num_classes : 4 + num_classes + num_masks, candidates[keep]]
    logits = coefficients.T.astype(np.float32) @ prototypes.reshape(num_masks, -1)
    probabilities = _sigmoid(logits).reshape(-1, proto_height, proto_width)
    return InstanceMasks(
        xyxy.astype(np.float32), confidence, class_id.astype(np.int64), probabilities
    )
