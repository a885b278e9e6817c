"""In-memory training data for each task, prepared exactly as the runtime prepares frames.

Images go through :func:`ubiq.models.runtime.preprocess.prepare_input` (letterbox or
stretch, RGB) with a uint8 NCHW input spec, so training sees the same pixels ``ubiq
detect`` feeds the exported model; the model divides by 255 itself in :func:`to_float`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from ubiq.errors import DatasetError
from ubiq.manifest import InputSpec, Preprocess
from ubiq.models.runtime.preprocess import letterbox_mask

__all__ = ["ClassifyData", "DetectData", "SegmentData", "image_preprocess", "to_float"]


def image_preprocess(imgsz: tuple[int, int], resize: str = "letterbox") -> Preprocess:
    """The preprocessing a trained image model is exported with (RGB, ``x / 255``)."""
    height, width = imgsz
    return Preprocess(
        width=width,
        height=height,
        resize=resize,
        pad_value=114,
        mean=(0.0, 0.0, 0.0),
        std=(255.0, 255.0, 255.0),
        channel_order="rgb",
    )


def to_float(batch: torch.Tensor) -> torch.Tensor:
    """uint8 ``(N, 3, H, W)`` RGB to the float input the models train on.

    The result is channels-last: oneDNN's depthwise convolutions (forward and backward) are
    an order of magnitude faster on the CPU in that layout than in plain NCHW.
    """
    return batch.float().div_(255.0).contiguous(memory_format=torch.channels_last)


def _read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"cannot read image {path}")
    return image


def _prepare(image: np.ndarray, preprocess: Preprocess):
    from ubiq.models.runtime.preprocess import prepare_input

    spec = InputSpec(
        name="images", shape=(1, 3, preprocess.height, preprocess.width), dtype="uint8"
    )
    tensor, transform = prepare_input(image, preprocess, spec)
    return tensor[0], transform


@dataclass
class DetectData:
    """Letterboxed images with boxes in input pixels.

    Attributes:
        images: ``(N, 3, H, W)`` uint8 RGB.
        boxes: Per image ``(M, 4)`` float32 xyxy in input pixels.
        class_ids: Per image ``(M,)`` int64.
        names: Class names.
        paths: Image paths.
    """

    images: np.ndarray
    boxes: list[np.ndarray]
    class_ids: list[np.ndarray]
    names: list[str]
    paths: list[Path]

    @classmethod
    def load(
        cls, data_yaml: Path, split: str, imgsz: tuple[int, int], progress: bool = True
    ) -> DetectData:
        from ubiq.models.datasets.yolo import load_yolo_split

        dataset = load_yolo_split(Path(data_yaml), split)
        preprocess = image_preprocess(imgsz)
        images, boxes, class_ids, paths = [], [], [], []
        for item in tqdm(dataset.items, desc=f"loading {split}", disable=not progress):
            image = _read(item.image_path)
            height, width = image.shape[:2]
            tensor, transform = _prepare(image, preprocess)
            pixels = np.asarray(item.boxes_xyxy_norm, np.float32).reshape(-1, 4)
            pixels = pixels * np.array([width, height, width, height], np.float32)
            images.append(tensor)
            boxes.append(transform.to_model(pixels).astype(np.float32))
            class_ids.append(np.asarray(item.class_ids, np.int64).reshape(-1))
            paths.append(item.image_path)
        return cls(np.stack(images), boxes, class_ids, list(dataset.names), paths)

    def __len__(self) -> int:
        return len(self.paths)

    def batch(self, indices: np.ndarray, flip: np.ndarray | None = None):
        """Returns ``(images uint8 tensor, [(boxes, class_ids)])``; ``flip`` mirrors rows."""
        images = self.images[indices].copy()
        width = images.shape[-1]
        targets = []
        for row, index in enumerate(indices):
            boxes = self.boxes[index].copy()
            if flip is not None and flip[row]:
                images[row] = images[row, :, :, ::-1]
                boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
            targets.append((torch.from_numpy(boxes), torch.from_numpy(self.class_ids[index])))
        return torch.from_numpy(images), targets


@dataclass
class ClassifyData:
    """Stretched images and labels of an image-folder split."""

    images: np.ndarray
    labels: np.ndarray
    names: list[str]

    @classmethod
    def load(
        cls, root: Path, split: str, imgsz: tuple[int, int], progress: bool = True
    ) -> ClassifyData:
        from ubiq.models.datasets.classify import load_image_folder

        paths, labels, names = load_image_folder(Path(root), split)
        preprocess = image_preprocess(imgsz, resize="stretch")
        images = [
            _prepare(_read(path), preprocess)[0]
            for path in tqdm(paths, desc=f"loading {split}", disable=not progress)
        ]
        return cls(np.stack(images), np.asarray(labels, np.int64), list(names))

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class SegmentData:
    """Letterboxed images and semantic masks (0 background, ``k + 1`` for class ``k``)."""

    images: np.ndarray
    masks: np.ndarray
    names: list[str]

    @classmethod
    def load(
        cls, data_yaml: Path, split: str, imgsz: tuple[int, int], progress: bool = True
    ) -> SegmentData:
        from ubiq.models.datasets.yolo import load_yolo_split

        dataset = load_yolo_split(Path(data_yaml), split)
        preprocess = image_preprocess(imgsz)
        images, masks = [], []
        for item in tqdm(dataset.items, desc=f"loading {split}", disable=not progress):
            if item.mask_path is None or not Path(item.mask_path).is_file():
                raise DatasetError(
                    f"missing mask for {item.image_path} (segmentation needs masks/{split}/)"
                )
            tensor, transform = _prepare(_read(item.image_path), preprocess)
            mask = cv2.imread(str(item.mask_path), cv2.IMREAD_GRAYSCALE)
            if mask is None:
                raise DatasetError(f"cannot read mask {item.mask_path}")
            if int(mask.max()) > len(dataset.names):
                raise DatasetError(
                    f"mask value {int(mask.max())} out of range 0..{len(dataset.names)} "
                    f"in {item.mask_path}"
                )
            images.append(tensor)
            masks.append(letterbox_mask(mask, transform, preprocess.height, preprocess.width))
        names = ["background", *dataset.names]
        return cls(np.stack(images), np.stack(masks).astype(np.int64), names)

    def __len__(self) -> int:
        return len(self.masks)
