"""Label PNGs: one class id per pixel, with a colour palette (as PASCAL VOC's
``SegmentationClass`` files), written and read without Pillow.

:func:`write_label_png` writes an 8-bit palette PNG whose pixel values are the class ids
(any PNG reader that keeps palette indices, such as Pillow's ``Image.open(path)``, gives
them back) and whose palette shows each class in its VOC colour. More than 256 classes are
written as 16-bit greyscale. :func:`read_label_png` reads either kind back, and plain 8- or
16-bit greyscale label images too.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

from ubiq.errors import DatasetError, UbiqError

__all__ = ["VOC_PALETTE", "read_label_png", "write_label_png"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _voc_palette() -> np.ndarray:
    """PASCAL VOC's colour map: ``(256, 3)`` uint8 RGB, class 0 black, 1 dark red, ..."""
    palette = np.zeros((256, 3), np.uint8)
    for index in range(256):
        value, red, green, blue = index, 0, 0, 0
        for bit in range(8):
            red |= ((value >> 0) & 1) << (7 - bit)
            green |= ((value >> 1) & 1) << (7 - bit)
            blue |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette[index] = (red, green, blue)
    return palette


VOC_PALETTE = _voc_palette()
"""``(256, 3)`` uint8 RGB colours of class ids 0..255 (255, VOC's "void", is light grey)."""


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def write_label_png(path: str | Path, class_map: np.ndarray, *, compression: int = 1) -> Path:
    """Writes ``class_map`` as a palette PNG (pixel value = class id).

    Args:
        path: The ``.png`` file to write.
        class_map: ``(H, W)`` integer class ids in ``[0, 65535]``.
        compression: zlib level, 0-9 (1: fast, as a per-frame sink wants).

    Returns:
        ``path``.

    Raises:
        ValueError: If ``class_map`` is not 2-D integers within ``[0, 65535]``.
        UbiqError: If the file cannot be written.
    """
    values = np.asarray(class_map)
    if values.ndim != 2 or not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"class_map must be an (H, W) integer array, got {values.shape}")
    path = Path(path)
    high = int(values.max(initial=0))
    if int(values.min(initial=0)) < 0 or high > 65535:
        raise ValueError(f"class ids must be in [0, 65535], got {values.min()}..{high}")
    if high > 255:  # no palette holds that many: 16-bit greyscale
        if not cv2.imwrite(str(path), values.astype(np.uint16)):
            raise UbiqError(f"cannot write {path}")
        return path
    height, width = values.shape
    rows = np.zeros((height, width + 1), np.uint8)  # each row: filter type 0, then the ids
    rows[:, 1:] = values
    header = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)
    data = (
        _SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"PLTE", VOC_PALETTE.tobytes())
        + _chunk(b"IDAT", zlib.compress(rows.tobytes(), compression))
        + _chunk(b"IEND", b"")
    )
    try:
        path.write_bytes(data)
    except OSError as error:
        raise UbiqError(f"cannot write {path}: {error.strerror}") from error
    return path


def _palette_of(data: bytes) -> np.ndarray | None:
    """The ``(N, 3)`` RGB palette of a palette PNG's bytes, else ``None``."""
    if not data.startswith(_SIGNATURE) or len(data) < 33 or data[25] != 3:
        return None  # byte 25: IHDR colour type (3 = palette)
    position = 8
    while position + 8 <= len(data):
        length = struct.unpack(">I", data[position : position + 4])[0]
        kind = data[position + 4 : position + 8]
        if kind == b"PLTE":
            body = data[position + 8 : position + 8 + length]
            return np.frombuffer(body, np.uint8).reshape(-1, 3)
        if kind in (b"IDAT", b"IEND"):
            return None
        position += 12 + length
    return None


def read_label_png(path: str | Path) -> np.ndarray:
    """Reads a label image: a palette PNG's indices, or a greyscale image's values.

    Returns:
        ``(H, W)`` int32 class ids.

    Raises:
        DatasetError: If the file cannot be read, or a palette PNG holds a colour that is not
            in its palette.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DatasetError(f"cannot read label image {path}: {error.strerror}") from error
    palette = _palette_of(data)
    buffer = np.frombuffer(data, np.uint8)
    if palette is None:
        image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
        if image is None:
            raise DatasetError(f"cannot read label image {path}")
        if image.ndim == 3:
            raise DatasetError(
                f"label image {path} has colour pixels but no palette; write class ids as "
                "greyscale or palette values"
            )
        return image.astype(np.int32)
    # OpenCV expands palette PNGs to colours; map each colour back to its (first) index.
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"cannot read label image {path}")
    keys = (
        (image[..., 2].astype(np.int32) << 16)
        | (image[..., 1].astype(np.int32) << 8)
        | image[..., 0]
    )
    palette_keys = (palette[:, 0].astype(np.int32) << 16) | (palette[:, 1].astype(np.int32) << 8)
    palette_keys |= palette[:, 2]
    unique_keys, first = np.unique(palette_keys, return_index=True)
    found, inverse = np.unique(keys, return_inverse=True)
    position = np.searchsorted(unique_keys, found).clip(0, len(unique_keys) - 1)
    if not np.array_equal(unique_keys[position], found):
        raise DatasetError(f"label image {path} holds colours that are not in its palette")
    return first[position][inverse].reshape(keys.shape).astype(np.int32)
