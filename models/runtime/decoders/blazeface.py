"""Decoder for MediaPipe BlazeFace face detectors.

The model emits regressors ``(1, A, 4 + 2K)`` (box ``dx, dy, w, h`` then ``K`` keypoints
``dx, dy``, relative to SSD anchors) and classificators ``(1, A, 1)`` (logits). The short
range model takes 128x128 inputs and has 896 anchors: 2 per cell of a 16x16 grid
(stride 8) and 6 per cell of an 8x8 grid (strides 16, 16, 16 merged), as MediaPipe's
``SsdAnchorsCalculator`` generates them with a fixed anchor size of 1. Decoding follows
MediaPipe's ``TensorsToDetectionsCalculator``; overlapping faces are merged with weighted
NMS ("blending") as MediaPipe's face detection graph does.

Decoder params (all optional):
    input_size: Anchor grid input size, an int or ``[width, height]``; default the model
        input size.
    strides: Stride of each SSD layer, default ``[8, 16, 16, 16]`` (short range), or ``[4]``
        when the model has 2304 anchors (full range, 192x192 inputs).
    num_anchors_per_layer: Anchors per cell per layer, an int or one per layer, default 2
        (MediaPipe's aspect ratio 1.0 plus the interpolated scale); 1 for full range.
    anchor_offset: Cell offset of anchor centres, default 0.5.
    x_scale, y_scale, w_scale, h_scale: Regressor divisors, default the input size.
    num_keypoints: Keypoints per face, default 6 (eyes, nose tip, mouth, ear tragions).
    score_clipping: Logits are clipped to ``[-score_clipping, score_clipping]``, default 100.
    nms: ``"weighted"`` (default) or ``"plain"``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

from ubiq.errors import ModelError
from ubiq.models.runtime.decoders import DecodeOptions, RawDetections
from ubiq.models.runtime.decoders.nms import nms, weighted_nms

__all__ = ["decode_blazeface", "ssd_anchors"]

DEFAULT_STRIDES = (8, 16, 16, 16)
DEFAULT_ANCHORS_PER_LAYER = 2
# Anchor layouts of MediaPipe's full range model (192x192, one 48x48 layer), used when the
# params name no strides and the anchor count says full range.
FULL_RANGE_ANCHORS = 2304
FULL_RANGE_STRIDES = (4,)
FULL_RANGE_ANCHORS_PER_LAYER = 1


@functools.lru_cache(maxsize=16)
def ssd_anchors(
    input_width: int,
    input_height: int,
    strides: tuple[int, ...] = DEFAULT_STRIDES,
    anchors_per_layer: tuple[int, ...] = (DEFAULT_ANCHORS_PER_LAYER,) * 4,
    anchor_offset: float = 0.5,
) -> np.ndarray:
    """Anchor centres of MediaPipe's SSD anchor scheme with fixed anchor size.

    Consecutive layers with the same stride share one grid; their anchors per cell add up.
    Anchors run layer group by group, then row by row, column by column, anchor by anchor.

    Args:
        input_width: Input width in pixels.
        input_height: Input height in pixels.
        strides: Stride of each layer.
        anchors_per_layer: Anchors per cell for each layer (same length as ``strides``).
        anchor_offset: Offset of the centre inside its cell, in cells.

    Returns:
        ``(A, 2)`` float32 read-only anchor centres ``x, y`` normalised to ``[0, 1]``
        (anchor width and height are 1). The result is cached per argument set.

    Raises:
        ValueError: If ``strides`` and ``anchors_per_layer`` differ in length or hold
            non-positive values.
    """
    if len(strides) != len(anchors_per_layer) or not strides:
        raise ValueError(
            f"strides and anchors_per_layer must be non-empty and of equal length, "
            f"got {strides} and {anchors_per_layer}"
        )
    if min(strides) <= 0 or min(anchors_per_layer) <= 0:
        raise ValueError(
            f"strides and anchors_per_layer must be positive, got {strides} and {anchors_per_layer}"
        )
    groups: list[np.ndarray] = []
    layer = 0
    while layer < len(strides):
        stride = strides[layer]
        per_cell = 0
        while layer < len(strides) and strides[layer] == stride:
            per_cell += anchors_per_layer[layer]
            layer += 1
        grid_width = math.ceil(input_width / stride)
        grid_height = math.ceil(input_height / stride)
        xs = (np.arange(grid_width, dtype=np.float64) + anchor_offset) / grid_width
        ys = (np.arange(grid_height, dtype=np.float64) + anchor_offset) / grid_height
        grid_x, grid_y = np.meshgrid(xs, ys)
        centres = np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)
        groups.append(np.repeat(centres, per_cell, axis=0))
    anchors = np.concatenate(groups).astype(np.float32)
    anchors.setflags(write=False)
    return anchors


def _pair(value: object, name: str) -> tuple[int, int]:
    if isinstance(value, int | float):
        return int(value), int(value)
    if isinstance(value, Sequence) and len(value) == 2:
        return int(value[0]), int(value[1])
    raise ModelError(f"blazeface param {name} must be an int or [width, height], got {value!r}")


def _anchors_for(options: DecodeOptions, count: int) -> tuple[np.ndarray, int, int]:
    params = options.params
    width, height = _pair(
        params.get("input_size", (options.input_width, options.input_height)), "input_size"
    )
    strides, per_layer = DEFAULT_STRIDES, DEFAULT_ANCHORS_PER_LAYER
    if "strides" not in params and count == FULL_RANGE_ANCHORS:
        strides, per_layer = FULL_RANGE_STRIDES, FULL_RANGE_ANCHORS_PER_LAYER
    strides = tuple(int(s) for s in params.get("strides", strides))
    per_layer = params.get("num_anchors_per_layer", per_layer)
    if isinstance(per_layer, int | float):
        per_layer = (int(per_layer),) * len(strides)
    try:
        anchors = ssd_anchors(
            width,
            height,
            strides,
            tuple(int(n) for n in per_layer),
            float(params.get("anchor_offset", 0.5)),
        )
    except ValueError as error:
        raise ModelError(f"blazeface anchor params are invalid: {error}") from error
    return anchors, width, height


def _split_outputs(outputs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    arrays = [np.asarray(output) for output in outputs]
    shapes = [a.shape for a in arrays]
    scores = [a for a in arrays if a.ndim >= 2 and a.shape[-1] == 1]
    boxes = [a for a in arrays if a.ndim >= 2 and a.shape[-1] >= 4]
    if len(arrays) != 2 or len(scores) != 1 or len(boxes) != 1:
        raise ModelError(
            f"blazeface decoder needs regressors (1, A, 16) and classificators (1, A, 1), "
            f"got shapes {shapes}"
        )
    regressors = boxes[0].reshape(-1, boxes[0].shape[-1])
    logits = scores[0].reshape(-1)
    if regressors.shape[0] != logits.shape[0]:
        raise ModelError(
            f"blazeface regressors and classificators disagree on the anchor count, "
            f"got shapes {shapes}"
        )
    return regressors, logits


def decode_blazeface(outputs: Sequence[np.ndarray], options: DecodeOptions) -> RawDetections:
    """Decodes BlazeFace regressors and classificators into faces with keypoints.

    Args:
        outputs: Regressors ``(1, A, 4 + 2K)`` and classificators ``(1, A, 1)``, in any order.
        options: Input size, thresholds (MediaPipe uses 0.5 confidence and 0.3 IoU), class
            filter (faces are class 0) and params (see the module docstring).

    Returns:
        Faces in input pixels with ``(N, K, 2)`` keypoints, by descending confidence.

    Raises:
        ModelError: If the outputs or the anchor params do not fit each other.
    """
    params = options.params
    regressors, logits = _split_outputs(outputs)
    anchors, width, height = _anchors_for(options, regressors.shape[0])
    if anchors.shape[0] != regressors.shape[0]:
        raise ModelError(
            f"blazeface model has {regressors.shape[0]} anchors but the anchor params "
            f"(input {width}x{height}, strides {params.get('strides', DEFAULT_STRIDES)}) "
            f"give {anchors.shape[0]}; set decoder params strides/num_anchors_per_layer"
        )
    num_keypoints = int(params.get("num_keypoints", 6))
    if regressors.shape[1] < 4 + 2 * num_keypoints:
        raise ModelError(
            f"blazeface regressors have {regressors.shape[1]} values per anchor, "
            f"fewer than 4 + 2 * {num_keypoints} keypoints"
        )
    empty = RawDetections.empty(num_keypoints)
    if options.class_ids is not None and 0 not in options.class_ids:
        return empty
    clip = float(params.get("score_clipping", 100.0))
    # float64: exp(100) overflows float32.
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -clip, clip)))
    candidates = np.flatnonzero(scores > options.confidence_threshold)
    if candidates.size == 0:
        return empty
    x_scale = float(params.get("x_scale", width))
    y_scale = float(params.get("y_scale", height))
    w_scale = float(params.get("w_scale", width))
    h_scale = float(params.get("h_scale", height))
    raw = regressors[candidates].astype(np.float32)
    centre = anchors[candidates]  # Anchor width and height are 1.
    x_centre = raw[:, 0] / x_scale + centre[:, 0]
    y_centre = raw[:, 1] / y_scale + centre[:, 1]
    half_w = raw[:, 2] / w_scale / 2
    half_h = raw[:, 3] / h_scale / 2
    pixels = np.array([options.input_width, options.input_height], dtype=np.float32)
    xyxy = np.stack(
        [x_centre - half_w, y_centre - half_h, x_centre + half_w, y_centre + half_h], axis=1
    ) * np.tile(pixels, 2)
    offsets = raw[:, 4 : 4 + 2 * num_keypoints].reshape(-1, num_keypoints, 2)
    divisors = np.array([x_scale, y_scale], dtype=np.float32)
    keypoints = (offsets / divisors + centre[:, None, :]) * pixels
    confidence = scores[candidates].astype(np.float32)
    method = params.get("nms", "weighted")
    if method == "weighted":
        keep, xyxy, keypoints = weighted_nms(
            xyxy, confidence, options.iou_threshold, options.max_detections, keypoints
        )
    elif method == "plain":
        keep = nms(xyxy, confidence, options.iou_threshold, options.max_detections)
        xyxy, keypoints = xyxy[keep], keypoints[keep]
    else:
        raise ModelError(f"blazeface param nms must be 'weighted' or 'plain', got {method!r}")
    return RawDetections(
        xyxy=xyxy,
        confidence=confidence[keep],
        class_id=np.zeros(keep.shape[0], dtype=np.int64),
        keypoints=keypoints,
    )
