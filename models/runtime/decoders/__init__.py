"""Output decoders: raw model outputs to boxes, scores, classes and keypoints.

A decoder is a function ``decode(outputs, options) -> RawDetections``. ``outputs`` are the
model's output arrays in the model's output order; ``options`` carries the input size, the
thresholds and the manifest's decoder parameters. Decoders return boxes in model-input
pixels; :class:`ubiq.models.runtime.preprocess.ImageTransform` maps them to the frame.

Decoders are registered by name as ``"module:function"`` strings and imported only when
chosen, so an unused decoder costs nothing.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ubiq.errors import ModelError

__all__ = [
    "DECODERS",
    "DecodeFn",
    "DecodeOptions",
    "RawDetections",
    "get_decoder",
    "guess_decoder",
]


@dataclass(frozen=True)
class RawDetections:
    """Decoded detections in model-input pixels, before mapping to the source frame.

    Attributes:
        xyxy: ``(N, 4)`` float32 boxes ``x1, y1, x2, y2`` in model-input pixels.
        confidence: ``(N,)`` float32 scores.
        class_id: ``(N,)`` int64 class indices.
        keypoints: Optional ``(N, K, 2)`` float32 keypoints ``x, y`` in model-input pixels.

    Raises:
        ValueError: If a shape does not match, naming the field.
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    keypoints: np.ndarray | None = None

    def __post_init__(self) -> None:
        xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        count = xyxy.shape[0]
        confidence = np.asarray(self.confidence, dtype=np.float32)
        class_id = np.asarray(self.class_id, dtype=np.int64)
        if confidence.shape != (count,):
            raise ValueError(f"confidence must have shape ({count},), got {confidence.shape}")
        if class_id.shape != (count,):
            raise ValueError(f"class_id must have shape ({count},), got {class_id.shape}")
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "confidence", confidence)
        object.__setattr__(self, "class_id", class_id)
        if self.keypoints is not None:
            keypoints = np.asarray(self.keypoints, dtype=np.float32)
            if keypoints.ndim != 3 or keypoints.shape[0] != count or keypoints.shape[2] != 2:
                raise ValueError(
                    f"keypoints must have shape ({count}, K, 2), got {keypoints.shape}"
                )
            object.__setattr__(self, "keypoints", keypoints)

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    @classmethod
    def empty(cls, num_keypoints: int | None = None) -> RawDetections:
        """Returns zero detections (with ``(0, K, 2)`` keypoints when ``num_keypoints``)."""
        keypoints = None
        if num_keypoints is not None:
            keypoints = np.zeros((0, num_keypoints, 2), dtype=np.float32)
        return cls(
            xyxy=np.zeros((0, 4), dtype=np.float32),
            confidence=np.zeros(0, dtype=np.float32),
            class_id=np.zeros(0, dtype=np.int64),
            keypoints=keypoints,
        )


@dataclass(frozen=True)
class DecodeOptions:
    """What a decoder needs besides the outputs.

    Attributes:
        input_width: Model input width in pixels.
        input_height: Model input height in pixels.
        confidence_threshold: Scores at or below it are dropped, in ``[0, 1]``.
        iou_threshold: NMS IoU threshold, in ``[0, 1]``.
        class_ids: Keep only these classes (applied before NMS); ``None`` keeps all.
        max_detections: Most detections returned.
        params: The manifest's ``decoder.params``.
        output_names: Names of the outputs, in the same order as the arrays.

    Raises:
        ValueError: If a value is out of range, naming it.
    """

    input_width: int
    input_height: int
    confidence_threshold: float = 0.25
    iou_threshold: float = 0.45
    class_ids: np.ndarray | None = None
    max_detections: int = 300
    params: Mapping[str, Any] = field(default_factory=dict)
    output_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.input_width <= 0 or self.input_height <= 0:
            raise ValueError(
                f"input size must be positive, got {self.input_width}x{self.input_height}"
            )
        for name in ("confidence_threshold", "iou_threshold"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.max_detections <= 0:
            raise ValueError(f"max_detections must be positive, got {self.max_detections}")
        if self.class_ids is not None:
            object.__setattr__(
                self, "class_ids", np.asarray(self.class_ids, dtype=np.int64).reshape(-1)
            )
        object.__setattr__(self, "output_names", tuple(str(n) for n in self.output_names))


DecodeFn = Callable[[Sequence[np.ndarray], DecodeOptions], RawDetections]

DECODERS: dict[str, str] = {
    "yolo": "ubiq.models.runtime.decoders.yolo:decode_yolo",
    "ssd": "ubiq.models.runtime.decoders.ssd:decode_ssd",
    "blazeface": "ubiq.models.runtime.decoders.blazeface:decode_blazeface",
    "blazepose": "ubiq.models.runtime.decoders.blazepose:decode_blazepose",
}


def get_decoder(name: str) -> DecodeFn:
    """Imports and returns the decoder registered as ``name``.

    Raises:
        ModelError: If ``name`` is not registered (listing the known names) or its module
            cannot be imported.
    """
    target = DECODERS.get(name)
    if target is None:
        raise ModelError(f"unknown decoder {name!r} (known: {', '.join(sorted(DECODERS))})")
    module_name, _, function_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, function_name)
    except (ImportError, AttributeError) as error:
        raise ModelError(f"decoder {name!r} cannot be loaded from {target}: {error}") from error


def _dim(value: Any) -> int:
    """An axis length, or -1 when it is dynamic (``None``, a symbolic name, negative)."""
    if isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= 0:
        return int(value)
    return -1


def guess_decoder(
    output_shapes: Sequence[tuple[int, ...]], output_names: Sequence[str] = ()
) -> str | None:
    """Guesses the decoder from the model's output shapes.

    Args:
        output_shapes: Shape of each output, in the model's output order; a dynamic axis may
            be ``-1``, ``None`` or a name.
        output_names: Names of the outputs (unused by the current rules, kept for callers
            that know them).

    Returns:
        ``"yolo"`` for one ``(1, 4 + nc, A)`` or ``(1, A, 4 + nc)`` output with ``A > 4 + nc``;
        ``"blazeface"`` for two outputs ``(1, A, 16)`` and ``(1, A, 1)``; ``"ssd"`` for the
        four TFLite detection post-process outputs (boxes ``(1, N, 4)``, classes and scores
        ``(1, N)``, count ``(1,)``) in any order; ``None`` when nothing fits.
    """
    del output_names  # The shapes alone decide today.
    shapes = [tuple(_dim(v) for v in shape) for shape in output_shapes]
    if len(shapes) == 1 and len(shapes[0]) == 3 and shapes[0][0] in (1, -1):
        small, large = sorted(shapes[0][1:])
        if 5 <= small < large or (small == -1 and large >= 5):  # -1: a dynamic anchor axis
            return "yolo"
    if len(shapes) == 2 and all(len(s) == 3 and s[0] == 1 for s in shapes):
        last_dims = sorted(s[2] for s in shapes)
        if last_dims == [1, 16] and shapes[0][1] == shapes[1][1] and shapes[0][1] > 0:
            return "blazeface"
    if len(shapes) == 4:
        boxes = [s for s in shapes if len(s) == 3 and s[0] == 1 and s[2] == 4]
        counts = [s for s in shapes if len(s) <= 1 and int(np.prod(s)) == 1]
        vectors = [s for s in shapes if len(s) == 2 and s[0] == 1]
        if len(boxes) == 1 and len(counts) == 1 and len(vectors) == 2:
            count = boxes[0][1]
            if vectors[0][1] == count and vectors[1][1] == count:
                return "ssd"
    return None
