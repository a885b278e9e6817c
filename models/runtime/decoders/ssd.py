"""Decoder for TFLite detection post-process outputs (SSD MobileNet, EfficientDet-Lite).

Such models end in ``TFLite_Detection_PostProcess`` and emit four outputs whose order
differs between exporters: boxes ``(1, N, 4)`` as normalised ``ymin, xmin, ymax, xmax``,
classes ``(1, N)`` as float class indices, scores ``(1, N)`` and count ``(1,)``. They are
told apart by shape (boxes: last axis 4; count: one value) and, for classes vs scores, by
name (``"class"``/``"score"``) or else by which one holds only whole numbers.

Decoder params (all optional):
    label_offset: Added to every class index (for label files with a background entry),
        default 0.
    nms: Run class-aware NMS again with ``options.iou_threshold``, default ``False`` (the
        model has already done it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ubiq.errors import ModelError
from ubiq.models.runtime.decoders import DecodeOptions, RawDetections
from ubiq.models.runtime.decoders.nms import batched_nms

__all__ = ["decode_ssd", "split_ssd_outputs"]


def _is_whole(values: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(values)) and np.all(values == np.round(values)))


def split_ssd_outputs(
    outputs: Sequence[np.ndarray], output_names: Sequence[str] = ()
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Identifies the four post-process outputs, whatever their order.

    Args:
        outputs: The four output arrays.
        output_names: Their names, or empty.

    Returns:
        ``(boxes (N, 4), classes (N,), scores (N,), count)``; ``count`` is clipped to ``N``.

    Raises:
        ModelError: If the outputs are not four arrays of the expected shapes.
    """
    shapes = [tuple(np.shape(output)) for output in outputs]
    if len(outputs) != 4:
        raise ModelError(
            f"ssd decoder needs 4 outputs (boxes, classes, scores, count), got {shapes}"
        )
    arrays = [np.asarray(output) for output in outputs]
    names = [name.lower() for name in output_names] if len(output_names) == 4 else [""] * 4
    box_index = [i for i, a in enumerate(arrays) if a.ndim == 3 and a.shape[-1] == 4]
    count_index = [i for i, a in enumerate(arrays) if a.ndim <= 1 and a.size == 1]
    if len(box_index) != 1 or len(count_index) != 1:
        raise ModelError(
            f"ssd decoder needs one (1, N, 4) boxes output and one count output, got {shapes}"
        )
    boxes = arrays[box_index[0]].reshape(-1, 4)
    rest = [i for i in range(4) if i not in (box_index[0], count_index[0])]
    vectors = [arrays[i].reshape(-1) for i in rest]
    if any(v.shape[0] != boxes.shape[0] for v in vectors):
        raise ModelError(
            f"ssd classes and scores must have {boxes.shape[0]} values like the boxes, got {shapes}"
        )
    count = int(np.asarray(arrays[count_index[0]]).reshape(-1)[0])
    count = max(0, min(count, boxes.shape[0]))
    first, second = (names[i] for i in rest)
    if "class" in first or "score" in second:
        classes, scores = vectors
    elif "class" in second or "score" in first:
        scores, classes = vectors
    else:
        valid = [v[:count] for v in vectors]  # Entries past count may be stale.
        whole = [_is_whole(v) for v in valid]
        if whole[1] and not whole[0]:
            scores, classes = vectors
        elif (
            whole[0] and whole[1] and np.max(valid[1], initial=0) > 1 >= np.max(valid[0], initial=0)
        ):
            # Both whole-valued (scores all 0 or 1): the one above 1 holds classes.
            scores, classes = vectors
        else:
            classes, scores = vectors  # The TFLite post-process order.
    return boxes, classes, scores, count


def decode_ssd(outputs: Sequence[np.ndarray], options: DecodeOptions) -> RawDetections:
    """Decodes TFLite detection post-process outputs.

    Args:
        outputs: Boxes, classes, scores and count, in any order (see the module docstring).
        options: Input size, threshold, class filter; params ``label_offset`` and ``nms``.

    Returns:
        Detections in input pixels, by descending confidence, at most
        ``options.max_detections``.

    Raises:
        ModelError: If the outputs cannot be identified.
    """
    boxes, classes, scores, count = split_ssd_outputs(outputs, options.output_names)
    boxes, classes, scores = boxes[:count], classes[:count], scores[:count]
    class_id = np.round(classes).astype(np.int64) + int(options.params.get("label_offset", 0))
    keep = scores > options.confidence_threshold
    if options.class_ids is not None:
        keep &= np.isin(class_id, options.class_ids)
    boxes, class_id = boxes[keep].astype(np.float32), class_id[keep]
    confidence = scores[keep].astype(np.float32)
    xyxy = boxes[:, [1, 0, 3, 2]] * np.array(
        [options.input_width, options.input_height] * 2, dtype=np.float32
    )
    if options.params.get("nms", False):
        order = batched_nms(
            xyxy, confidence, class_id, options.iou_threshold, options.max_detections
        )
    else:
        order = np.argsort(-confidence, kind="stable")[: options.max_detections]
    return RawDetections(xyxy=xyxy[order], confidence=confidence[order], class_id=class_id[order])
