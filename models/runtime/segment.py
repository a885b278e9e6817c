"""Segmentation: a BGR frame in, a class id per frame pixel (and instance masks) out.

``Segmenter.load("selfie-seg")(frame)`` runs a segmentation model (manifest task
``segment``) through the manifest's preprocessing, decodes its outputs on the model's grid
with the manifest's decoder (see :mod:`ubiq.models.runtime.decoders.segment`: ``label_map``,
``mask`` or ``yolo_seg``; recognised from the output shapes when the manifest names none of
them) and maps the result to the frame once, letterbox padding undone exactly, as a
:class:`Segmentation`.

Every frame pixel takes the grid cell its centre falls in (``nearest``), or the scores
interpolated bilinearly at its centre before the best class is taken (``linear``), through
one affine map from frame pixels to the output grid: no intermediate resize. The map is
axis-aligned, so ``nearest`` is two gathers (a grid column per frame column, then a grid
row per frame row), under half the cost of a general warp.

Nothing here imports torch.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ubiq.errors import ConfigError, ModelError
from ubiq.hardware.accelerators import DeviceSpec
from ubiq.manifest import ModelManifest, Preprocess
from ubiq.models.runtime.backend import Backend
from ubiq.models.runtime.decoders.segment import (
    SEGMENT_DECODERS,
    best_class,
    decode_yolo_seg,
    describe_outputs,
    expected_outputs,
    guess_segment_decoder,
    score_layout,
)
from ubiq.models.runtime.preprocess import ImageTransform, prepare_input
from ubiq.models.runtime.tasks import open_task_model
from ubiq.types import Detections

__all__ = ["INTERPOLATIONS", "Segmentation", "Segmenter", "frame_affine"]

INTERPOLATIONS = ("nearest", "linear")
"""How the output grid reaches frame size: ``nearest`` takes the class of the cell under each
frame pixel (cheap), ``linear`` interpolates the scores before taking the best class
(smoother edges)."""


@dataclass(frozen=True)
class Segmentation:
    """The class of every pixel of one frame, and the instances of an instance model.

    Attributes:
        class_map: ``(H, W)`` int32 class ids in frame pixels, indexing ``labels``.
        labels: Class names indexed by class id.
        background: The class id of the background, or ``None`` when no class is.
        instances: For instance models, the instances with ``(N, H, W)`` masks (their
            ``class_id`` index the model's labels, which are ``labels[1:]``); else ``None``.

    Raises:
        ValueError: If ``class_map`` is not a 2-D integer array.
    """

    class_map: np.ndarray
    labels: tuple[str, ...] = ()
    background: int | None = 0
    instances: Detections | None = None

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

    def fractions(self) -> dict[str, float]:
        """The fraction of the frame's pixels of each class present, by label (or id)."""
        counts = np.bincount(self.class_map.reshape(-1))
        total = max(1, self.class_map.size)
        return {
            (self.labels[i] if i < len(self.labels) else str(i)): round(int(c) / total, 6)
            for i, c in enumerate(counts)
            if c
        }


def frame_affine(
    transform: ImageTransform, preprocess: Preprocess, grid_width: int, grid_height: int
) -> np.ndarray:
    """The ``(2, 3)`` affine map from frame pixel coordinates to output grid coordinates.

    A frame pixel's centre ``x + 0.5`` is ``(x + 0.5) * scale_x + pad_x`` in the model input
    and that times ``grid_width / preprocess.width`` in grid cells, whose centres sit at
    ``i + 0.5``; the map gives the grid coordinate with cell centres at integers, as
    ``cv2.warpAffine`` with ``WARP_INVERSE_MAP`` samples it.
    """
    cell_x = grid_width / preprocess.width
    cell_y = grid_height / preprocess.height
    offset_x = (0.5 * transform.scale_x + transform.pad_x) * cell_x - 0.5
    offset_y = (0.5 * transform.scale_y + transform.pad_y) * cell_y - 0.5
    return np.array(
        [[transform.scale_x * cell_x, 0.0, offset_x], [0.0, transform.scale_y * cell_y, offset_y]],
        np.float64,
    )


def _warp(grid: np.ndarray, matrix: np.ndarray, size: tuple[int, int], linear: bool):
    """Samples ``(h, w[, c<=4])`` ``grid`` at every frame pixel (``size`` is ``(W, H)``)."""
    flags = (cv2.INTER_LINEAR if linear else cv2.INTER_NEAREST) | cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(grid, matrix, size, flags=flags, borderMode=cv2.BORDER_REPLICATE)


_WARP_FRACTION_BITS = 10
"""Fraction bits of the fixed-point coordinates of ``cv2.warpAffine`` (``AB_BITS``)."""


def _nearest(grid: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Samples ``(h, w)`` ``grid`` (any dtype) at every frame pixel by nearest cell.

    :func:`frame_affine` maps frame columns to grid columns and rows to rows independently,
    so each frame column takes one grid column and each row one grid row (see
    :func:`_nearest_cells`); the result equals ``cv2.warpAffine``'s nearest warp exactly.

    Args:
        grid: ``(h, w)`` map on the output grid.
        matrix: ``(2, 3)`` axis-aligned map from frame pixels to grid cells.
        size: ``(W, H)`` of the frame.

    Returns:
        ``(H, W)`` array of ``grid``'s dtype.
    """
    cells = _cells_of(matrix, size, grid.shape)
    if cells is None:
        return _warp(grid, matrix, size, False)
    return _gather(grid, *cells)


def _cells_of(
    matrix: np.ndarray, size: tuple[int, int], grid_shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`_nearest_cells` of a ``(2, 3)`` map and an ``(h, w)`` grid, or ``None`` when
    the map is not axis-aligned (no separable shortcut)."""
    if matrix[0, 1] or matrix[1, 0]:
        return None
    return _nearest_cells(
        (float(matrix[0, 0]), float(matrix[0, 2]), float(matrix[1, 1]), float(matrix[1, 2])),
        (int(size[0]), int(size[1])),
        (int(grid_shape[-1]), int(grid_shape[-2])),
    )


def _gather(grid: np.ndarray, columns: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``grid[rows][:, columns]``, the smaller intermediate first."""
    grid_height, grid_width = grid.shape
    if grid_height * len(columns) <= len(rows) * grid_width:
        return grid.take(columns, axis=1).take(rows, axis=0)
    return grid.take(rows, axis=0).take(columns, axis=1)


@functools.lru_cache(maxsize=16)
def _nearest_cells(
    scale_offset: tuple[float, float, float, float],
    size: tuple[int, int],
    grid_size: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """The grid column of every frame column and the grid row of every frame row (cached:
    a stream's frames share one transform).

    Each is the cell whose centre is nearest, the edge cells repeated beyond the grid
    (``BORDER_REPLICATE``), computed as ``cv2.warpAffine`` computes it (fixed point, 10
    fraction bits, half a cell added), so a pixel centre on a cell border goes the same way.
    Both are non-decreasing (the scales are positive).

    Args:
        scale_offset: ``(scale_x, offset_x, scale_y, offset_y)`` of the map to grid cells.
        size: ``(W, H)`` of the frame.
        grid_size: ``(w, h)`` of the grid.

    Returns:
        ``(columns (W,), rows (H,))`` read-only ``intp`` indices.
    """
    scale_x, offset_x, scale_y, offset_y = scale_offset
    one = 1 << _WARP_FRACTION_BITS
    columns = np.rint(np.arange(size[0]) * (scale_x * one)) + np.rint(offset_x * one)
    rows = np.rint((np.arange(size[1]) * scale_y + offset_y) * one)
    cells = []
    for values, count in ((columns, grid_size[0]), (rows, grid_size[1])):
        index = (values.astype(np.int64) + one // 2) >> _WARP_FRACTION_BITS
        index = np.clip(index, 0, count - 1).astype(np.intp)
        index.flags.writeable = False
        cells.append(index)
    return cells[0], cells[1]


def _warp_channels(maps: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear ``(C, h, w)`` float32 maps at every frame pixel: ``(H, W, C)``."""
    channels_last = np.ascontiguousarray(maps.transpose(1, 2, 0))
    parts = [
        _warp(channels_last[..., start : start + 4], matrix, size, True).reshape(
            size[1], size[0], -1
        )
        for start in range(0, channels_last.shape[2], 4)
    ]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=2)


@dataclass
class SegmentTimes:
    """Milliseconds spent in each step of the last call."""

    preprocess_ms: float = 0.0
    inference_ms: float = 0.0
    postprocess_ms: float = 0.0


@dataclass
class Segmenter:
    """Runs a segmentation model on BGR frames.

    Use :meth:`load`; call the instance on an ``(H, W, 3)`` uint8 BGR image, or use
    :meth:`prepare`, :meth:`infer` and :meth:`decode` as the pipeline's ``Segment`` stage does.

    Attributes:
        path: The model file.
        backend: The opened backend.
        manifest: The model's manifest.
        decoder: ``label_map``, ``mask`` or ``yolo_seg``.
        labels: Class names of the class map indexed by class id (a person mask model and an
            instance model get ``background`` first).
        background: The background class id, or ``None``.
        threshold: The probability above which a one-map model's pixel is foreground, and an
            instance mask's pixel is inside it.
        interpolation: One of :data:`INTERPOLATIONS`.
        single_map: The model outputs one probability map (foreground against background).
        confidence_threshold: Lowest instance score kept (instance models).
        iou_threshold: NMS IoU threshold (instance models).
        max_detections: Most instances kept per frame (instance models).
        last_times: Step times of the last call.
    """

    path: Path
    backend: Backend
    manifest: ModelManifest
    decoder: str = "mask"
    labels: tuple[str, ...] = ()
    background: int | None = 0
    threshold: float = 0.5
    interpolation: str = "nearest"
    single_map: bool = False
    confidence_threshold: float = 0.25
    iou_threshold: float = 0.45
    max_detections: int = 100
    last_times: SegmentTimes = field(default_factory=SegmentTimes)

    @classmethod
    def load(
        cls,
        name_or_path: str | Path,
        *,
        backend: str | None = None,
        num_threads: int | None = None,
        device: str | DeviceSpec = "auto",
        interpolation: str = "nearest",
        confidence_threshold: float = 0.25,
        iou_threshold: float = 0.45,
        max_detections: int = 100,
        streams: int = 1,
    ) -> Segmenter:
        """Opens a segmentation model by path or zoo name (``streams`` as for
        :meth:`~ubiq.models.runtime.model.DetectionModel.load`).

        Raises:
            ConfigError: If ``interpolation`` is not one of :data:`INTERPOLATIONS` or a
                threshold is outside ``[0, 1]``.
            ModelError: If the file is missing or corrupt, not a segmenter, or no decoder
                understands its outputs (the message names the shapes it saw).
            BackendUnavailable: If the backend's library or the device is missing.
        """
        if interpolation not in INTERPOLATIONS:
            raise ConfigError(
                f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}"
            )
        for name, value in (
            ("confidence_threshold", confidence_threshold),
            ("iou_threshold", iou_threshold),
        ):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be between 0 and 1, got {value}")
        if max_detections < 1:
            raise ConfigError(f"max_detections must be >= 1, got {max_detections}")
        path, runtime, manifest = open_task_model(
            name_or_path,
            "segment",
            backend=backend,
            num_threads=num_threads,
            device=device,
            streams=streams,
        )
        decoder = _decoder_for(path, runtime, manifest)
        params = dict(manifest.decoder.params)
        labels = tuple(manifest.labels)
        background = params.get("background", 0)
        single_map = False
        if decoder == "mask":
            shape = runtime.outputs[0].shape
            channels = shape[1] if score_layout(shape, len(labels) or None) == "NCHW" else shape[3]
            single_map = channels == 1
            if channels in (1, 2) and len(labels) <= 1:  # a person mask: background first
                labels = ("background", *(labels or ("foreground",)))
                background = 0
        elif decoder == "yolo_seg":
            labels = ("background", *labels)
            background = 0
        threshold = float(params.get("threshold", 0.5))
        if not 0.0 <= threshold <= 1.0:
            raise ModelError(f"{path.name}: decoder threshold must be in [0, 1], got {threshold}")
        model = cls(
            path=path,
            backend=runtime,
            manifest=manifest,
            decoder=decoder,
            labels=labels,
            background=None if background is None else int(background),
            threshold=threshold,
            interpolation=interpolation,
            single_map=single_map,
            confidence_threshold=confidence_threshold,
            iou_threshold=iou_threshold,
            max_detections=max_detections,
        )
        width, height = manifest.preprocess.width, manifest.preprocess.height
        try:
            model(np.zeros((height, width, 3), np.uint8))  # warm up, and check the decoder
        except (ValueError, IndexError) as error:
            raise ModelError(
                f"decoder {decoder!r} cannot decode the outputs of {path.name} "
                f"({_outputs_text(runtime)}): {error}"
            ) from error
        return model

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.backend.outputs)

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, ImageTransform]:
        """Preprocesses a BGR image; returns the input tensor and its transform.

        Raises:
            ValueError: If ``image`` is not an ``(H, W, 3)`` uint8 array.
        """
        return prepare_input(image, self.manifest.preprocess, self.manifest.input)

    def infer(self, tensor: np.ndarray) -> list[np.ndarray]:
        """Runs the backend on a prepared tensor; returns the outputs in model order."""
        outputs = self.backend.run({self.manifest.input.name: tensor})
        return [np.asarray(outputs[name]) for name in self.output_names]

    def scores(self, tensor: np.ndarray) -> np.ndarray:
        """The model's scores for a prepared tensor as ``(C, h, w)`` float32 (``mask``
        decoder only).

        A one-map model gives ``(2, h, w)``: the threshold and the probability ``p``, so the
        best class is the foreground exactly where ``p > threshold``.

        Raises:
            ModelError: If the model is not a score-map model or its output is not 4-D.
        """
        return self._score_maps(self.infer(tensor)[0])

    def _score_maps(self, output: np.ndarray) -> np.ndarray:
        maps = self._model_maps(output)
        if self.single_map:
            probability = maps[0]
            return np.stack([np.full_like(probability, self.threshold), probability])
        return maps

    def _model_maps(self, output: np.ndarray) -> np.ndarray:
        """The output's ``(C, h, w)`` float32 maps as the model gives them (one for a
        one-map model)."""
        if self.decoder != "mask":
            raise ModelError(f"{self.path.name} gives no score maps (decoder {self.decoder!r})")
        if output.ndim != 4:
            raise ModelError(
                f"{self.path.name}: output {self.output_names[0]} has shape {output.shape}, not 4-D"
            )
        channels = 1 if self.single_map else (len(self.labels) or None)
        layout = score_layout(output.shape, channels)
        maps = output[0] if layout == "NCHW" else output[0].transpose(2, 0, 1)
        return maps.astype(np.float32, copy=False)

    def _label_grid(self, output: np.ndarray) -> np.ndarray:
        """``(h, w)`` class ids of a ``label_map`` output."""
        grid = output.reshape(output.shape[1], output.shape[2]) if output.ndim in (3, 4) else None
        if grid is None or output.shape[0] != 1 or (output.ndim == 4 and output.shape[3] != 1):
            raise ValueError(f"a label map must be (1, H, W), got {output.shape}")
        return grid

    def class_map_at_input(self, image: np.ndarray) -> tuple[np.ndarray, ImageTransform]:
        """The best class per cell of the model's output grid, padding included.

        This is the map training and ``ubiq val`` on a YOLO-layout split score (in the
        letterboxed input); the transform maps model-input pixels back to ``image``.

        Returns:
            ``(class_map, transform)``: ``(h, w)`` int64 class ids and the transform.

        Raises:
            ModelError: For an instance model (it has no class map of its own).
        """
        tensor, transform = self.prepare(image)
        outputs = self.infer(tensor)
        if self.decoder == "label_map":
            return self._label_grid(outputs[0]).astype(np.int64), transform
        return best_class(self._score_maps(outputs[0])).astype(np.int64), transform

    def decode(self, outputs: list[np.ndarray], transform: ImageTransform) -> Segmentation:
        """Decodes the outputs of one frame and maps them to its pixels.

        Raises:
            ModelError: If the outputs do not fit the decoder, naming their shapes.
        """
        size = (transform.source_width, transform.source_height)
        preprocess = self.manifest.preprocess
        try:
            if self.decoder == "yolo_seg":
                return self._decode_instances(outputs, transform)
            if self.decoder == "label_map":
                grid = self._label_grid(outputs[0])
                matrix = frame_affine(transform, preprocess, grid.shape[1], grid.shape[0])
                class_map = _nearest(grid.astype(np.int32, copy=False), matrix, size)
                return Segmentation(class_map, self.labels, self.background)
            maps = self._model_maps(outputs[0])
        except (ValueError, IndexError) as error:
            shapes = [tuple(np.shape(o)) for o in outputs]
            raise ModelError(
                f"decoder {self.decoder!r} cannot decode the outputs of {self.path.name} "
                f"({describe_outputs(self.output_names, shapes)}): {error}"
            ) from error
        matrix = frame_affine(transform, preprocess, maps.shape[2], maps.shape[1])
        if self.single_map:
            probability = maps[0]
            if self.interpolation == "linear":
                probability = _warp(probability, matrix, size, True)
                return Segmentation((probability > self.threshold).astype(np.int32), self.labels)
            grid = (probability > self.threshold).astype(np.int32)
            return Segmentation(_nearest(grid, matrix, size), self.labels)
        if self.interpolation == "linear":
            class_map = _warp_channels(maps, matrix, size).argmax(2)
        else:
            cells = _cells_of(matrix, size, maps.shape)
            if cells is None:
                class_map = _nearest(best_class(maps), matrix, size)
            else:
                # Only the cells some frame pixel takes are compared: a letterbox band is not.
                columns, rows = cells
                left, top = int(columns[0]), int(rows[0])
                best = best_class(maps[:, top : int(rows[-1]) + 1, left : int(columns[-1]) + 1])
                class_map = _gather(best, columns - left, rows - top)
        return Segmentation(class_map, self.labels, self.background)

    def _decode_instances(
        self, outputs: list[np.ndarray], transform: ImageTransform
    ) -> Segmentation:
        """Instances with masks in frame pixels, and the class map they paint (best on top)."""
        preprocess = self.manifest.preprocess
        raw = decode_yolo_seg(
            outputs,
            input_width=preprocess.width,
            input_height=preprocess.height,
            confidence_threshold=self.confidence_threshold,
            iou_threshold=self.iou_threshold,
            max_detections=self.max_detections,
            params=self.manifest.decoder.params,
        )
        width, height = transform.source_width, transform.source_height
        xyxy = transform.to_source(raw.xyxy)
        masks = np.zeros((len(raw), height, width), bool)
        class_map = np.zeros((height, width), np.uint8 if len(self.labels) <= 256 else np.uint16)
        if len(raw):
            grid_height, grid_width = raw.probabilities.shape[1:]
            matrix = frame_affine(transform, preprocess, grid_width, grid_height)
            linear = self.interpolation == "linear"
            for row in range(len(raw) - 1, -1, -1):  # lowest score first: the best paints last
                x1, y1, x2, y2 = np.round(xyxy[row]).astype(int)
                if x2 <= x1 or y2 <= y1:
                    continue
                # Only the box is sampled: shift the map so the warp starts at its corner.
                shifted = matrix.copy()
                shifted[:, 2] += matrix[:, :2] @ np.array([x1, y1], np.float64)
                inside = _warp(raw.probabilities[row], shifted, (x2 - x1, y2 - y1), linear)
                masks[row, y1:y2, x1:x2] = inside > self.threshold
                class_map[masks[row]] = raw.class_id[row] + 1
        instances = Detections(
            xyxy=xyxy,
            confidence=raw.confidence,
            class_id=raw.class_id,
            mask=masks,
            labels=self.labels[1:],
        )
        return Segmentation(class_map, self.labels, 0, instances)

    def __call__(self, image: np.ndarray) -> Segmentation:
        """Segments one ``(H, W, 3)`` uint8 BGR image.

        Raises:
            ValueError: If ``image`` is not an ``(H, W, 3)`` uint8 array.
            ModelError: If the backend fails to run or the outputs do not fit the decoder.
        """
        start = time.perf_counter()
        tensor, transform = self.prepare(image)
        prepared = time.perf_counter()
        outputs = self.infer(tensor)
        inferred = time.perf_counter()
        segmentation = self.decode(outputs, transform)
        done = time.perf_counter()
        self.last_times = SegmentTimes(
            (prepared - start) * 1e3, (inferred - prepared) * 1e3, (done - inferred) * 1e3
        )
        return segmentation


def _outputs_text(runtime: Backend) -> str:
    return describe_outputs([t.name for t in runtime.outputs], [t.shape for t in runtime.outputs])


def _decoder_for(path: Path, runtime: Backend, manifest: ModelManifest) -> str:
    """The manifest's segmentation decoder, or the one the output shapes call for.

    Raises:
        ModelError: If the manifest names an unknown decoder, or nothing fits the outputs.
    """
    name = manifest.decoder.name
    shapes = [t.shape for t in runtime.outputs]
    guessed = guess_segment_decoder(shapes, [t.dtype for t in runtime.outputs])
    if name in SEGMENT_DECODERS:
        if name == "mask" and guessed == "label_map" and len(shapes[0]) == 3:
            return "label_map"  # an older manifest's generic name for any mask output
        if name != guessed and not (name == "label_map" and guessed == "mask"):
            raise ModelError(
                f"{path.name}: decoder {name!r} does not fit its outputs "
                f"({_outputs_text(runtime)}); expected {expected_outputs()}"
            )
        return name
    if guessed is None:
        raise ModelError(
            f"no segmentation decoder understands the outputs of {path.name} "
            f"({_outputs_text(runtime)}); expected {expected_outputs()}"
        )
    if name not in ("", "auto"):
        raise ModelError(
            f"{path.name}: unknown segmentation decoder {name!r} "
            f"(known: {', '.join(SEGMENT_DECODERS)})"
        )
    return guessed
