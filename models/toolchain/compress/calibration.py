"""Calibration input for compressing a model: which images, and the tensors they become.

:func:`calibration_images` picks the images; :func:`image_tensor` feeds each through the
model's deployment preprocessing (read from :func:`load_manifest`);
:class:`CalibrationReader` hands them to onnxruntime's quantizer one at a time.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ubiq.errors import ConfigError, DatasetError, ModelError
from ubiq.manifest import ModelManifest

__all__ = [
    "IMAGE_SUFFIXES",
    "CalibrationReader",
    "calibration_images",
    "image_tensor",
    "load_manifest",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
"""Image files a calibration folder or glob is searched for (lower case)."""


def load_manifest(model_path: str | Path) -> ModelManifest:
    """Returns the manifest of an ONNX model (sidecar, ``ubiq.manifest`` metadata, or derived).

    Raises:
        ModelError: If the file is missing or corrupt, or no manifest can be found.
    """
    from ubiq.models.runtime.model import find_manifest
    from ubiq.models.runtime.onnxruntime_backend import OnnxRuntimeBackend

    path = Path(model_path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    return find_manifest(path, OnnxRuntimeBackend(path, num_threads=1, device="cpu"))


def image_tensor(image_path: str | Path, manifest: ModelManifest) -> np.ndarray:
    """Reads a BGR image and turns it into the model's exact input tensor.

    Returns:
        The input tensor, shape and dtype of ``manifest.input`` (batch 1).

    Raises:
        ConfigError: If the image cannot be read.
    """
    import cv2

    from ubiq.models.runtime.preprocess import prepare_input

    image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
    if image is None:
        raise ConfigError(f"cannot read calibration image {image_path}")
    tensor, _ = prepare_input(image, manifest.preprocess, manifest.input)
    return tensor


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def _split_images(data_yaml: Path, split: str) -> list[Path]:
    """Returns the images of one split of a YOLO ``data.yaml`` (labels are not needed).

    Raises:
        DatasetError: If the yaml is invalid, has no such split, or the split is missing or
            empty.
    """
    from ubiq.models.datasets.yolo import load_data_yaml

    data, root, _ = load_data_yaml(data_yaml)
    if split not in data or data[split] in (None, ""):
        raise DatasetError(f"{data_yaml}: no {split!r} split (keys: {', '.join(map(str, data))})")
    entries = data[split] if isinstance(data[split], list) else [data[split]]
    images: list[Path] = []
    for entry in entries:
        folder = Path(str(entry)).expanduser()
        folder = folder if folder.is_absolute() else root / folder
        if folder.is_dir():
            images.extend(_image_files(folder))
        elif folder.is_file() and folder.suffix == ".txt":
            lines = [line.strip() for line in folder.read_text(encoding="utf-8").splitlines()]
            listed = [Path(line) for line in lines if line]
            images.extend(p if p.is_absolute() else folder.parent / p for p in listed)
        else:
            raise DatasetError(f"{data_yaml}: {split} folder not found: {folder}")
    if not images:
        raise DatasetError(f"{data_yaml}: {split} split has no images")
    return images


def calibration_images(source: str | Path, count: int = 64, split: str = "train") -> list[Path]:
    """Picks calibration images, spread evenly over the sorted list of a source.

    Args:
        source: A YOLO ``data.yaml`` (its ``split``), an image folder (searched
            recursively), a glob pattern or one image file.
        count: Most images to return.
        split: The ``data.yaml`` split to read.

    Returns:
        Up to ``count`` image paths in sorted order. Their size does not matter: the
        model's preprocessing resizes them.

    Raises:
        ConfigError: If ``count`` < 1, the source does not exist, holds or matches no
            images, or a picked image is not a readable image file.
        DatasetError: If a ``data.yaml`` is invalid or has no such split.
    """
    if count < 1:
        raise ConfigError(f"count must be >= 1, got {count}")
    text = str(source)
    path = Path(text).expanduser()
    if path.suffix.lower() in (".yaml", ".yml"):
        found = sorted(_split_images(path, split))
    elif path.is_dir():
        found = _image_files(path)
        if not found:
            raise ConfigError(f"calib {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    elif path.is_file():
        found = [path]
    elif any(character in text for character in "*?["):
        matches = glob.glob(str(path), recursive=True)
        found = sorted(Path(p) for p in matches if Path(p).suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise ConfigError(f"calib {text} matches no images")
    else:
        raise ConfigError(
            f"calib {text} not found (expected a data.yaml, an image folder or a glob)"
        )
    if len(found) > count:
        picks = np.unique(np.linspace(0, len(found) - 1, count).round().astype(int))
        found = [found[index] for index in picks]
    import cv2

    for image_path in found:
        if not cv2.haveImageReader(str(image_path)):
            raise ConfigError(f"calib: {image_path} is not a readable image")
    return found


class CalibrationReader:
    """onnxruntime's ``CalibrationDataReader`` protocol over images, one tensor at a time.

    ``len()`` and ``set_range()`` let onnxruntime calibrate in chunks (its
    ``CalibStridedMinMax`` option): it then keeps the intermediate tensors of one chunk at a
    time, not of every image."""

    def __init__(self, images: Sequence[Path], manifest: ModelManifest) -> None:
        self._images = list(images)
        self._manifest = manifest
        self._index = 0
        self._end = len(self._images)

    def __len__(self) -> int:
        return len(self._images)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._index, self._end = start_index, min(end_index, len(self._images))

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._index >= self._end:
            return None
        tensor = image_tensor(self._images[self._index], self._manifest)
        self._index += 1
        return {self._manifest.input.name: tensor}

    def rewind(self) -> None:
        self._index, self._end = 0, len(self._images)
