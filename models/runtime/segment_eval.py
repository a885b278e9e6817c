"""Scores a segmenter on a folder of images and label PNGs through the deployment runtime.

The folder holds ``images/`` and ``labels/`` (or ``masks/``) with one label PNG per image
of the same stem, optionally under a split (``ROOT/val/images``), or PASCAL VOC's
``JPEGImages/`` and ``SegmentationClass/`` (only images that have a label are scored).
Label pixels are class ids (palette indices or greyscale values) indexing the model's
labels; 255 (VOC's "void" border) is not scored. Each image runs exactly as ``ubiq segment``
runs it (manifest preprocessing, decoder, backend) and is scored at its own resolution.
Nothing here imports torch.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ubiq.errors import DatasetError

__all__ = ["IGNORE_INDEX", "evaluate_segment_folder", "segment_folder_pairs"]

IGNORE_INDEX = 255
"""Label value left out of scoring (VOC's object borders and unlabelled pixels)."""

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_LAYOUTS = (("images", "labels"), ("images", "masks"), ("JPEGImages", "SegmentationClass"))


def segment_folder_pairs(root: str | Path, split: str = "val") -> list[tuple[Path, Path]]:
    """``(image, label)`` paths of a segmentation folder, sorted by image name.

    Raises:
        DatasetError: If no known layout is found, or an image of ``images/`` has no label.
    """
    root = Path(root)
    for base in (root / split, root):
        for image_name, label_name in _LAYOUTS:
            images, labels = base / image_name, base / label_name
            if not (images.is_dir() and labels.is_dir()):
                continue
            pairs = []
            for image in sorted(images.iterdir()):
                if image.suffix.lower() not in _IMAGE_SUFFIXES:
                    continue
                label = labels / f"{image.stem}.png"
                if label.is_file():
                    pairs.append((image, label))
                elif image_name == "images":
                    raise DatasetError(f"{image} has no label {label}")
            if not pairs:
                raise DatasetError(f"{base} holds no images with labels")
            return pairs
    raise DatasetError(
        f"{root} is not a segmentation folder: expected images/ and labels/ (or masks/), "
        f"optionally under {split}/, or JPEGImages/ and SegmentationClass/"
    )


def evaluate_segment_folder(
    model: str | Path,
    root: str | Path,
    split: str = "val",
    *,
    backend: str | None = None,
    num_threads: int | None = None,
) -> dict[str, Any]:
    """mIoU and per-class IoU of a segmenter on a folder of images and label PNGs.

    Returns:
        ``model``, ``data``, ``split``, ``images``, ``miou`` (mean over the classes present
        in truth or prediction), ``per_class_iou`` (label to IoU, those classes) and
        ``seconds``.

    Raises:
        DatasetError: If the folder is malformed, a file unreadable, a label's size differs
            from its image's, or a label value is not a class of the model.
        ModelError: If the model cannot be loaded or is not a segmenter.
    """
    from ubiq.models.runtime.label_png import read_label_png
    from ubiq.models.runtime.metrics import confusion_matrix
    from ubiq.models.runtime.segment import Segmenter

    pairs = segment_folder_pairs(root, split)
    segmenter = Segmenter.load(model, backend=backend, num_threads=num_threads)
    labels = segmenter.labels
    count = len(labels)
    matrix = np.zeros((count, count), np.int64)
    started = time.perf_counter()
    for image_path, label_path in pairs:
        image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
        if image is None:
            raise DatasetError(f"cannot read image {image_path}")
        truth = read_label_png(label_path)
        if truth.shape != image.shape[:2]:
            raise DatasetError(
                f"label {label_path} is {truth.shape[1]}x{truth.shape[0]} but its image is "
                f"{image.shape[1]}x{image.shape[0]}"
            )
        scored = truth != IGNORE_INDEX
        high = int(truth[scored].max(initial=0))
        if high >= count:
            raise DatasetError(
                f"label {label_path} holds class {high}, but {segmenter.path.name} has "
                f"{count} classes ({', '.join(labels)})"
            )
        predicted = segmenter(image).class_map
        matrix += confusion_matrix(predicted[scored], truth[scored], count)
    intersection = np.diag(matrix).astype(np.float64)
    union = matrix.sum(0) + matrix.sum(1) - intersection
    per_class = {labels[k]: float(intersection[k] / union[k]) for k in range(count) if union[k] > 0}
    return {
        "model": str(segmenter.path),
        "data": str(root),
        "split": split,
        "images": len(pairs),
        "miou": float(np.mean(list(per_class.values()))) if per_class else float("nan"),
        "per_class_iou": per_class,
        "seconds": time.perf_counter() - started,
    }
