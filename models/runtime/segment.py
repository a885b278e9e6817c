"""Semantic segmentation: a BGR frame in, a class id per frame pixel out.

``Segmenter.load("selfie-seg")(frame)`` runs a segmentation model (manifest task
``segment``, decoder ``mask``) through the manifest's preprocessing and maps the model's
output grid back to the frame, letterbox padding removed, as a :class:`Segmentation`.

Two output kinds are understood:

* one score map per class, ``(1, C, h, w)`` or ``(1, h, w, C)`` (``ubiq train --task
  segment`` exports logits with class 0 the background, decoder params ``background: 0``);
* one probability map, ``(1, h, w, 1)`` or ``(1, 1, h, w)`` (MediaPipe's selfie segmenter),
  thresholded at the decoder's ``threshold`` (default 0.5): class 0 is the background and
  class 1 the manifest's one label.

Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ubiq.errors import ConfigError, ModelError
from ubiq.hardware.accelerators import DeviceSpec
from ubiq.manifest import ModelManifest
from ubiq.models.runtime.backend import Backend
from ubiq.models.runtime.preprocess import ImageTransform, prepare_input
from ubiq.models.runtime.tasks import open_task_model

__all__ = ["INTERPOLATIONS", "Segmentation", "Segmenter"]

INTERPOLATIONS = ("nearest", "linear")
"""How the output grid reaches frame size: ``nearest`` resizes the class map (cheap),
``linear`` resizes the scores bilinearly before taking the best class (smoother edges)."""


@dataclass(frozen=True)
class Segmentation:
    """The class of every pixel of one frame.

    Attributes:
        class_map: ``(H, W)`` int32 class ids in frame pixels, indexing ``labels``.
        labels: Class names indexed by class id.
        background: The class id of the background, or ``None`` when no class is.

    Raises:
        ValueError: If ``class_map`` is not a 2-D integer array.
    """

    class_map: np.ndarray
    labels: tuple[str, ...] = ()
    background: int | None = 0

    def __post_init__(self) -> None:
        class_map = np.asarray(self.class_map)
        if class_map.ndim != 2 or not np.issubdtype(class_map.dtype, np.integer):
            raise ValueError(
                f"class_map must be an (H, W) integer array, got {class_map.shape} "
                f"{class_map.dtype}"
            )
        object.__setattr__(self, "class_map", class_map.astype(np.int32, copy=False))
        object.__setattr__(self, "labels", tuple(self.labels))

    def class_id_of(self, class_name_or_id: str | int) -> int:
        """The id of a class given by name or id.

        Raises:
            ConfigError: If the name is not one of ``labels``.
        """
        if isinstance(class_name_or_id, (int, np.integer)):
            return int(class_name_or_id)
        if class_name_or_id not in self.labels:
            raise ConfigError(
                f"class {class_name_or_id!r} is not one of the labels {list(self.labels)}"
            )
        return self.labels.index(class_name_or_id)

    def mask(self, class_name_or_id: str | int) -> np.ndarray:
        """``(H, W)`` bool: the pixels of one class (by name or id).

        Raises:
            ConfigError: If a name is not one of ``labels``.
        """
        return self.class_map == self.class_id_of(class_name_or_id)

    def foreground(self) -> np.ndarray:
        """``(H, W)`` bool: every pixel not of the background class."""
        if self.background is None:
            return np.ones(self.class_map.shape, bool)
        return self.class_map != self.background

    def masks(self) -> tuple[np.ndarray, np.ndarray]:
        """One mask per class present in the frame, background left out.

        Returns:
            ``(class_ids, masks)``: ``(K,)`` int64 ids in increasing order and ``(K, H, W)``
            bool masks.
        """
        ids = np.unique(self.class_map).astype(np.int64)
        if self.background is not None:
            ids = ids[ids != self.background]
        masks = self.class_map[None] == ids[:, None, None].astype(np.int32)
        return ids, masks


def _output_layout(shape: tuple[int, ...], classes: int | None, input_layout: str) -> str:
    """``NCHW`` or ``NHWC`` for a 4-D score output, from the class count when it decides."""
    if classes is not None and shape[1] == classes and shape[3] != classes:
        return "NCHW"
    if classes is not None and shape[3] == classes and shape[1] != classes:
        return "NHWC"
    return input_layout


@dataclass
class Segmenter:
    """Runs a semantic segmentation model on BGR frames.

    Use :meth:`load`; call the instance on an ``(H, W, 3)`` uint8 BGR image.

    Attributes:
        path: The model file.
        backend: The opened backend.
        manifest: The model's manifest.
        labels: Class names indexed by class id (a one-map model gets ``background`` first).
        background: The background class id, or ``None``.
        threshold: The probability above which a one-map model's pixel is foreground.
        interpolation: One of :data:`INTERPOLATIONS`.
        single_map: The model outputs one probability map (foreground against background).
    """

    path: Path
    backend: Backend
    manifest: ModelManifest
    labels: tuple[str, ...] = ()
    background: int | None = 0
    threshold: float = 0.5
    interpolation: str = "nearest"
    single_map: bool = False

    @classmethod
    def load(
        cls,
        name_or_path: str | Path,
        *,
        backend: str | None = None,
        num_threads: int | None = None,
        device: str | DeviceSpec = "auto",
        interpolation: str = "nearest",
    ) -> Segmenter:
        """Opens a segmentation model by path or zoo name.

        Raises:
            ConfigError: If ``interpolation`` is not one of :data:`INTERPOLATIONS`.
            ModelError: If the file is missing or corrupt, not a segmenter, or its output is
                not a 4-D score map.
            BackendUnavailable: If the backend's library or the device is missing.
        """
        if interpolation not in INTERPOLATIONS:
            raise ConfigError(
                f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}"
            )
        path, runtime, manifest = open_task_model(
            name_or_path, "segment", backend=backend, num_threads=num_threads, device=device
        )
        shape = runtime.outputs[0].shape
        if len(shape) != 4:
            raise ModelError(
                f"{path.name}: expected a 4-D score map output, got "
                f"{runtime.outputs[0].name} with shape {shape}"
            )
        params = dict(manifest.decoder.params)
        labels = tuple(manifest.labels)
        background = params.get("background", 0)
        single_map = 1 in (shape[1], shape[3]) and len(labels) <= 1
        if single_map:  # one probability map: background, then the one label
            labels = ("background", *(labels or ("foreground",)))
            background = 0
        threshold = float(params.get("threshold", 0.5))
        if not 0.0 <= threshold <= 1.0:
            raise ModelError(f"{path.name}: decoder threshold must be in [0, 1], got {threshold}")
        return cls(
            path=path,
            backend=runtime,
            manifest=manifest,
            labels=labels,
            background=None if background is None else int(background),
            threshold=threshold,
            interpolation=interpolation,
            single_map=single_map,
        )

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, ImageTransform]:
        """Preprocesses a BGR image; returns the input tensor and its transform.

        Raises:
            ValueError: If ``image`` is not an ``(H, W, 3)`` uint8 array.
        """
        return prepare_input(image, self.manifest.preprocess, self.manifest.input)

    def scores(self, tensor: np.ndarray) -> np.ndarray:
        """The model's scores for a prepared tensor as ``(C, h, w)`` float32.

        A one-map model gives ``(2, h, w)``: the threshold and the probability ``p``, so the
        best class is the foreground exactly where ``p > threshold``.

        Raises:
            ModelError: If the backend fails to run or the output is not a 4-D score map.
        """
        name = self.backend.outputs[0].name
        output = np.asarray(self.backend.run({self.manifest.input.name: tensor})[name])
        if output.ndim != 4:
            raise ModelError(f"{self.path.name}: output {name} has shape {output.shape}, not 4-D")
        channels = 1 if self.single_map else (len(self.labels) or None)
        layout = _output_layout(output.shape, channels, self.manifest.input.layout)
        maps = output[0] if layout == "NCHW" else output[0].transpose(2, 0, 1)
        maps = maps.astype(np.float32, copy=False)
        if self.single_map:
            probability = maps[0]
            return np.stack([np.full_like(probability, self.threshold), probability])
        return maps

    def class_map_at_input(self, image: np.ndarray) -> tuple[np.ndarray, ImageTransform]:
        """The best class per cell of the model's output grid, padding included.

        This is the map training and ``ubiq val`` score (in the letterboxed input); the
        transform maps model-input pixels back to ``image``.

        Returns:
            ``(class_map, transform)``: ``(h, w)`` int64 class ids and the transform.
        """
        tensor, transform = self.prepare(image)
        return self.scores(tensor).argmax(0), transform

    def __call__(self, image: np.ndarray) -> Segmentation:
        """Segments one ``(H, W, 3)`` uint8 BGR image into a class id per frame pixel.

        Raises:
            ValueError: If ``image`` is not an ``(H, W, 3)`` uint8 array.
            ModelError: If the backend fails to run.
        """
        tensor, transform = self.prepare(image)
        maps = self.scores(tensor)
        maps = _crop_to_frame(maps, transform, self.manifest.preprocess)
        size = (transform.source_width, transform.source_height)
        if self.interpolation == "linear":
            channels_last = np.ascontiguousarray(maps.transpose(1, 2, 0))
            resized = cv2.resize(channels_last, size, interpolation=cv2.INTER_LINEAR)
            class_map = resized.reshape(size[1], size[0], -1).argmax(2)
        else:
            best = maps.argmax(0).astype(np.int32)
            class_map = cv2.resize(best, size, interpolation=cv2.INTER_NEAREST)
        return Segmentation(class_map.astype(np.int32), self.labels, self.background)


def _crop_to_frame(maps: np.ndarray, transform: ImageTransform, preprocess) -> np.ndarray:
    """The part of ``(C, h, w)`` output maps that covers the frame (letterbox bars cut)."""
    _, height, width = maps.shape
    cell_x, cell_y = width / preprocess.width, height / preprocess.height
    left = transform.pad_x * cell_x
    top = transform.pad_y * cell_y
    right = left + transform.source_width * transform.scale_x * cell_x
    bottom = top + transform.source_height * transform.scale_y * cell_y
    x0, y0 = int(round(left)), int(round(top))
    x1 = max(x0 + 1, min(width, int(round(right))))
    y1 = max(y0 + 1, min(height, int(round(bottom))))
    return maps[:, y0:y1, x0:x1]
