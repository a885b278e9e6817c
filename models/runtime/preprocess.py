"""From a BGR frame to a model input tensor, and from model-input pixels back to the frame.

:func:`prepare_input` resizes (letterbox as Ultralytics does, or stretch), reorders
channels, normalises ``(pixel - mean) / std`` per channel or quantizes, and lays the result
out as NCHW or NHWC with batch 1 in exactly the input dtype. The returned
:class:`ImageTransform` maps decoded boxes and keypoints back to frame pixels.

This runs once per frame, so each step is one pass: ``cv2.resize`` straight into a
pre-filled canvas for the geometry, then one ``cv2.addWeighted`` per channel plane (NCHW),
one numpy multiply-add over interleaved rows (NHWC) or one ``cv2.LUT`` (8-bit inputs) for
the values.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from ubiq.errors import ModelError
from ubiq.manifest import InputSpec, Preprocess

__all__ = ["ImageTransform", "prepare_input"]

_INT_RANGES = {"uint8": (0, 255), "int8": (-128, 127)}


@dataclass(frozen=True)
class ImageTransform:
    """Maps model-input pixels to source-frame pixels: ``source = (model - pad) / scale``.

    Attributes:
        scale_x: Model-input pixels per source pixel along x.
        scale_y: Model-input pixels per source pixel along y.
        pad_x: Left border added by letterboxing, in model-input pixels.
        pad_y: Top border added by letterboxing, in model-input pixels.
        source_width: Width of the source frame in pixels.
        source_height: Height of the source frame in pixels.
    """

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float
    source_width: int
    source_height: int

    def to_source(self, xyxy: np.ndarray) -> np.ndarray:
        """Maps boxes from model-input pixels to the source frame, clipped to the frame.

        Args:
            xyxy: ``(N, 4)`` boxes ``x1, y1, x2, y2`` in model-input pixels.

        Returns:
            ``(N, 4)`` float32 boxes in source-frame pixels within
            ``[0, source_width] x [0, source_height]``.

        Raises:
            ValueError: If ``xyxy`` is not ``(N, 4)``.
        """
        boxes = np.asarray(xyxy, dtype=np.float32)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"xyxy must have shape (N, 4), got {boxes.shape}")
        out = (boxes - self._pad()) / self._scale()
        np.clip(out[:, 0::2], 0.0, self.source_width, out=out[:, 0::2])
        np.clip(out[:, 1::2], 0.0, self.source_height, out=out[:, 1::2])
        return out

    def points_to_source(self, points: np.ndarray) -> np.ndarray:
        """Maps points from model-input pixels to the source frame (not clipped).

        Args:
            points: ``(..., 2)`` points ``x, y`` in model-input pixels.

        Returns:
            ``(..., 2)`` float32 points in source-frame pixels.

        Raises:
            ValueError: If the last axis of ``points`` is not 2.
        """
        values = np.asarray(points, dtype=np.float32)
        if values.ndim == 0 or values.shape[-1] != 2:
            raise ValueError(f"points must have shape (..., 2), got {values.shape}")
        return (values - self._pad()[:2]) / self._scale()[:2]

    def to_model(self, xyxy: np.ndarray) -> np.ndarray:
        """Maps boxes from source-frame pixels to model-input pixels (the forward mapping).

        Args:
            xyxy: ``(N, 4)`` boxes in source-frame pixels.

        Returns:
            ``(N, 4)`` float32 boxes in model-input pixels.

        Raises:
            ValueError: If ``xyxy`` is not ``(N, 4)``.
        """
        boxes = np.asarray(xyxy, dtype=np.float32)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"xyxy must have shape (N, 4), got {boxes.shape}")
        return boxes * self._scale() + self._pad()

    def _scale(self) -> np.ndarray:
        return np.array([self.scale_x, self.scale_y] * 2, dtype=np.float32)

    def _pad(self) -> np.ndarray:
        return np.array([self.pad_x, self.pad_y] * 2, dtype=np.float32)


def _resize(image: np.ndarray, preprocess: Preprocess) -> tuple[np.ndarray, ImageTransform]:
    """Letterboxes or stretches ``image`` to the preprocess size; returns it and the transform."""
    height, width = image.shape[:2]
    target_w, target_h = preprocess.width, preprocess.height
    if preprocess.resize == "stretch":
        if (width, height) != (target_w, target_h):
            image = cv2.resize(image, (target_w, target_h), interpolation=cv2.INTER_LINEAR)
        return image, ImageTransform(target_w / width, target_h / height, 0.0, 0.0, width, height)
    # Letterbox, rounding exactly as Ultralytics' LetterBox (scale up or down, centred).
    ratio = min(target_w / width, target_h / height)
    new_w, new_h = round(width * ratio), round(height * ratio)
    half_dw, half_dh = (target_w - new_w) / 2, (target_h - new_h) / 2
    top, bottom = round(half_dh - 0.1), round(half_dh + 0.1)
    left, right = round(half_dw - 0.1), round(half_dw + 0.1)
    transform = ImageTransform(
        new_w / width, new_h / height, float(left), float(top), width, height
    )
    if not (top or bottom or left or right):
        if (width, height) != (new_w, new_h):
            image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        return image, transform
    # Resizing straight into the padded canvas saves a copy (and copyMakeBorder's pass).
    canvas = np.full((target_h, target_w, 3), preprocess.pad_value, dtype=np.uint8)
    inner = canvas[top : top + new_h, left : left + new_w]
    if (width, height) != (new_w, new_h):
        cv2.resize(image, (new_w, new_h), dst=inner, interpolation=cv2.INTER_LINEAR)
    else:
        inner[...] = image
    return canvas, transform


@functools.lru_cache(maxsize=32)
def _affine(preprocess: Preprocess) -> tuple[tuple[int, ...], np.ndarray, np.ndarray]:
    """Per tensor channel: the BGR source channel, the gain and the offset (float64)."""
    source = (2, 1, 0) if preprocess.channel_order == "rgb" else (0, 1, 2)
    gain = 1.0 / np.asarray(preprocess.std, dtype=np.float64)
    offset = -np.asarray(preprocess.mean, dtype=np.float64) * gain
    return source, gain, offset


@functools.lru_cache(maxsize=32)
def _lookup_table(preprocess: Preprocess, dtype: str) -> np.ndarray | None:
    """``(1, 256, 3)`` table from a pixel value to the 8-bit tensor value per tensor channel.

    Returns ``None`` when the table is the identity (raw uint8 pixels).
    """
    low, high = _INT_RANGES[dtype]
    pixels = np.arange(256, dtype=np.float64)
    if preprocess.quantization is None:
        if dtype == "uint8":
            return None
        # int8 without quantization parameters: pixels shifted into the int8 range.
        values = np.repeat((pixels - 128.0)[:, None], 3, axis=1)
    else:
        scale, zero_point = preprocess.quantization
        if scale <= 0:
            raise ModelError(f"preprocess quantization scale must be positive, got {scale}")
        _, gain, offset = _affine(preprocess)
        normalised = pixels[:, None] * gain[None, :] + offset[None, :]
        values = np.round(normalised / scale + zero_point)
    return np.clip(values, low, high).astype(dtype).reshape(1, 256, 3)


def _check_shape(preprocess: Preprocess, input_spec: InputSpec) -> None:
    if input_spec.layout == "NCHW":
        _, channels, height, width = input_spec.shape
    else:
        _, height, width, channels = input_spec.shape
    if channels not in (3, -1):
        raise ModelError(f"input {input_spec.name!r} must have 3 channels, got {input_spec.shape}")
    if (height > 0 and height != preprocess.height) or (width > 0 and width != preprocess.width):
        raise ModelError(
            f"preprocess size {preprocess.width}x{preprocess.height} does not match input "
            f"{input_spec.name!r} shape {input_spec.shape} ({input_spec.layout})"
        )


@functools.lru_cache(maxsize=32)
def _affine_rows(preprocess: Preprocess, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Gain and offset tiled along one ``(W * 3,)`` row of an interleaved RGB/BGR image."""
    _, gain, offset = _affine(preprocess)
    return np.tile(gain.astype(np.float32), width), np.tile(offset.astype(np.float32), width)


def _float_tensor(image: np.ndarray, preprocess: Preprocess, layout: str) -> np.ndarray:
    height, width = image.shape[:2]
    if layout == "NHWC":
        # Interleaved rows with tiled gains keep numpy's inner loop long (W * 3, not 3)
        # and need no float temporary besides the output.
        if preprocess.channel_order == "rgb":
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        out = np.empty((1, height, width, 3), dtype=np.float32)
        rows = out.reshape(height, width * 3)
        gain_row, offset_row = _affine_rows(preprocess, width)
        np.multiply(image.reshape(height, width * 3), gain_row, out=rows, casting="unsafe")
        np.add(rows, offset_row, out=rows)
        return out
    out = np.empty((1, 3, height, width), dtype=np.float32)
    planes = cv2.split(image)
    source, gain, offset = _affine(preprocess)
    for channel in range(3):
        plane = planes[source[channel]]
        cv2.addWeighted(
            plane,
            float(gain[channel]),
            plane,
            0.0,
            float(offset[channel]),
            dst=out[0, channel],
            dtype=cv2.CV_32F,
        )
    return out


def _integer_tensor(
    image: np.ndarray, preprocess: Preprocess, dtype: str, layout: str
) -> np.ndarray:
    table = _lookup_table(preprocess, dtype)
    source = _affine(preprocess)[0]
    if layout == "NHWC":
        if preprocess.channel_order == "rgb":
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        if table is not None:
            image = cv2.LUT(image, table)
        return np.ascontiguousarray(image[None])
    if table is not None:
        # The table is in tensor channel order; the image is still BGR.
        image = cv2.LUT(image, np.ascontiguousarray(table[..., list(source)]))
    out = np.empty((1, 3, *image.shape[:2]), dtype=dtype)
    # Split each BGR plane straight into its tensor channel (``source`` is its own inverse).
    cv2.split(image, [out[0, source[channel]] for channel in range(3)])
    return out


def _to_float16(tensor: np.ndarray) -> np.ndarray:
    convert = getattr(cv2, "convertFp16", None)  # About 20x faster than numpy's astype.
    if convert is None:
        return tensor.astype(np.float16)
    flat = convert(tensor.reshape(-1, tensor.shape[-1]))
    return flat.view(np.float16).reshape(tensor.shape)


def prepare_input(
    image_bgr: np.ndarray, preprocess: Preprocess, input_spec: InputSpec
) -> tuple[np.ndarray, ImageTransform]:
    """Turns a BGR frame into the model's input tensor.

    Float inputs get ``(pixel - mean) / std`` per tensor channel. 8-bit inputs get
    ``round(((pixel - mean) / std) / scale + zero_point)`` when ``preprocess.quantization``
    is set; otherwise raw pixels (uint8) or ``pixel - 128`` (int8).

    Args:
        image_bgr: ``(H, W, 3)`` uint8 frame in BGR order.
        preprocess: Size, resize mode, padding, mean/std, channel order and quantization.
        input_spec: The input tensor's shape, dtype and layout (``NCHW`` or ``NHWC``).

    Returns:
        ``(tensor, transform)``: a C-contiguous ``(1, 3, h, w)`` or ``(1, h, w, 3)`` array of
        exactly ``input_spec.dtype`` (``h, w`` = ``preprocess.height, width``), and the
        transform from model-input pixels back to ``image_bgr`` pixels.

    Raises:
        ValueError: If ``image_bgr`` is not an ``(H, W, 3)`` uint8 array.
        ModelError: If the preprocess size or channels disagree with ``input_spec.shape``.
    """
    if not isinstance(image_bgr, np.ndarray):
        raise ValueError(f"image_bgr must be a numpy array, got {type(image_bgr).__name__}")
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
        raise ValueError(
            f"image_bgr must be an (H, W, 3) uint8 array, got {image_bgr.shape} {image_bgr.dtype}"
        )
    if image_bgr.shape[0] == 0 or image_bgr.shape[1] == 0:
        raise ValueError(f"image_bgr must not be empty, got shape {image_bgr.shape}")
    _check_shape(preprocess, input_spec)
    resized, transform = _resize(image_bgr, preprocess)
    dtype = input_spec.dtype
    if dtype in _INT_RANGES:
        tensor = _integer_tensor(resized, preprocess, dtype, input_spec.layout)
    else:
        tensor = _float_tensor(resized, preprocess, input_spec.layout)
        if dtype == "float16":
            tensor = _to_float16(tensor)
    if np.may_share_memory(tensor, image_bgr):
        tensor = tensor.copy()  # Raw uint8 of a frame already at size: never alias it.
    return tensor, transform


def letterbox_mask(
    mask: np.ndarray, transform: ImageTransform, height: int, width: int
) -> np.ndarray:
    """Places a class-id mask of the source frame as :func:`prepare_input` placed the frame:
    resized by nearest neighbour and padded with 0 (background) to ``(height, width)``."""
    new_w = round(transform.source_width * transform.scale_x)
    new_h = round(transform.source_height * transform.scale_y)
    resized = cv2.resize(mask, (new_w, new_h), interpolation=cv2.INTER_NEAREST)
    canvas = np.zeros((height, width), np.uint8)
    top, left = int(transform.pad_y), int(transform.pad_x)
    canvas[top : top + new_h, left : left + new_w] = resized[: height - top, : width - left]
    return canvas
