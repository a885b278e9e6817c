"""Segmentation stages: ``Segment`` runs a segmenter on each frame, ``Blur`` blurs part of it.

```python
import ubiq
from ubiq.pipelines.segment import Blur, Segment

model = ubiq.load_model("selfie-seg")
pipeline = ubiq.Pipeline([Segment(model), Blur("background")])
result = pipeline.process(image)        # result.frame.image: the background blurred
```

``Segment`` sets ``result.class_map`` and ``result.class_labels`` (and, for an instance model,
``result.detections`` with their masks); the :class:`~ubiq.models.runtime.segment.
Segmentation` is in ``result.data["segmentation"]``. ``Blur`` replaces ``result.frame`` by a
copy whose chosen pixels are blurred (the background, a class such as ``person``, or the
faces a face detector finds), so every sink after it sees only the blurred frame.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import cv2
import numpy as np

from ubiq.errors import ConfigError
from ubiq.pipelines.stage import ModelStage
from ubiq.types import FrameResult

__all__ = ["Blur", "Segment", "blur_pixels"]


class Segment(ModelStage):
    """Runs a segmentation model on each frame and sets ``result.class_map``.

    Args:
        model: A loaded :class:`~ubiq.models.runtime.segment.Segmenter` (or anything with
            its ``prepare(image)``, ``infer(tensor)`` and ``decode(outputs, transform)``).
        name: Stage name in summaries (default ``"segment"``).

    Raises:
        ConfigError: If ``model`` lacks ``prepare``, ``infer`` or ``decode``.
    """

    def __init__(self, model: Any, *, name: str = "segment") -> None:
        super().__init__(model, name=name, kind="a segmentation model")

    def __call__(self, result: FrameResult) -> FrameResult:
        segmentation = self.run_model(result)
        result.class_map = segmentation.class_map
        result.class_labels = segmentation.labels
        if segmentation.instances is not None:
            result.detections = segmentation.instances
        result.data["segmentation"] = segmentation
        return result


def blur_pixels(image: np.ndarray, where: np.ndarray, *, strength: int = 8) -> np.ndarray:
    """A copy of ``image`` blurred where ``where`` is true.

    The blur is a box filter on a copy shrunk ``strength`` times, scaled back up: as strong
    as a wide Gaussian at a fraction of its cost.

    Args:
        image: ``(H, W, 3)`` uint8 BGR frame.
        where: ``(H, W)`` bool (or 0/1 uint8) pixels to blur.
        strength: How many times the copy is shrunk before blurring, at least 2.

    Returns:
        The ``(H, W, 3)`` uint8 blurred copy.

    Raises:
        ValueError: If the shapes differ or ``strength`` is below 2.
    """
    if strength < 2:
        raise ValueError(f"strength must be >= 2, got {strength}")
    height, width = image.shape[:2]
    if where.shape != (height, width):
        raise ValueError(f"where must have shape {(height, width)}, got {where.shape}")
    out = image.copy()
    if not where.any():
        return out
    small = cv2.resize(
        image, (max(1, width // strength), max(1, height // strength)), interpolation=cv2.INTER_AREA
    )
    small = cv2.blur(small, (5, 5))
    blurred = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    cv2.copyTo(blurred, where.view(np.uint8) if where.dtype == bool else where, out)
    return out


class Blur:
    """Blurs part of each frame: privacy masking and virtual backgrounds.

    Args:
        target: ``"background"`` (every pixel not of the segmenter's background class is
            kept), ``"faces"`` (the boxes ``detector`` finds, as ellipses), or a class name
            or id of the segmenter's labels (``"person"``) whose pixels are blurred.
        labels: The segmenter's class names, to check a class ``target`` up front (give
            ``model.labels``); ``None`` checks it on the first frame.
        detector: For ``"faces"``: a loaded face detection model (``load_model("blazeface")``).
        strength: How strongly to blur (see :func:`blur_pixels`).
        name: Stage name in summaries (default ``"blur"``).

    Raises:
        ConfigError: If a class ``target`` is not one of ``labels``, ``"faces"`` comes
            without a detector, or ``strength`` is below 2.
    """

    def __init__(
        self,
        target: str | int = "background",
        *,
        labels: tuple[str, ...] | None = None,
        detector: Any = None,
        strength: int = 8,
        name: str = "blur",
    ) -> None:
        if strength < 2:
            raise ConfigError(f"strength must be >= 2, got {strength}")
        if target == "faces" and detector is None:
            raise ConfigError("target 'faces' needs a face detector (detector=...)")
        self.target = target
        self.detector = detector
        self.strength = strength
        self.name = name
        self.class_id: int | None = None
        if labels is not None and target not in ("background", "faces"):
            self.class_id = self._class_id(tuple(labels))

    def _class_id(self, labels: tuple[str, ...]) -> int:
        text = str(self.target)
        if text in labels:
            return labels.index(text)
        if text.isdigit() and int(text) < len(labels):
            return int(text)
        raise ConfigError(
            f"target {text!r} is not a class of the model (classes: {', '.join(labels)}); "
            "give one of them, background or faces"
        )

    def _where(self, result: FrameResult) -> np.ndarray:
        image = result.frame.image
        if self.target == "faces":
            where = np.zeros(image.shape[:2], np.uint8)
            for x1, y1, x2, y2 in self.detector(image).xyxy:
                center = (int(round((x1 + x2) / 2)), int(round((y1 + y2) / 2)))
                axes = (int(round((x2 - x1) * 0.6)), int(round((y2 - y1) * 0.7)))
                cv2.ellipse(where, center, axes, 0, 0, 360, 1, thickness=-1)
            return where
        if result.class_map is None:
            raise ConfigError(f"blur {self.target!r} needs a Segment stage before it")
        if self.target == "background":
            segmentation = result.data.get("segmentation")
            background = 0 if segmentation is None else segmentation.background
            if background is None:
                return np.zeros(result.class_map.shape, np.uint8)
            return (result.class_map == background).view(np.uint8)
        if self.class_id is None:
            self.class_id = self._class_id(tuple(result.class_labels))
        return (result.class_map == self.class_id).view(np.uint8)

    def __call__(self, result: FrameResult) -> FrameResult:
        if result.final:
            return result
        began = time.perf_counter()
        image = blur_pixels(result.frame.image, self._where(result), strength=self.strength)
        result.frame = replace(result.frame, image=image)
        result.timings_ms[f"{self.name}.blur"] = (time.perf_counter() - began) * 1e3
        return result
