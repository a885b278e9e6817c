"""Small classification sets of real images, in the image-folder layout, and its reader.

The layout is the one torchvision's ``ImageFolder`` and Ultralytics' classifiers read::

    root/train/<class>/*.png
    root/val/<class>/*.png

- :func:`make_digits_set`: the 1,797 real handwritten digits of scikit-learn
  (``load_digits``, 8x8 scans of 43 writers), classes ``0`` .. ``9``.
- :func:`make_faces_set`: scikit-image's LFW subset, 100 real faces and 100 patches of
  the same photos' backgrounds (25x25), classes ``face`` and ``non_face``.

Both ship inside their wheels: nothing is downloaded. The split is stratified and
deterministic for a seed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ubiq.errors import ConfigError, DatasetError
from ubiq.models.datasets.yolo import IMAGE_SUFFIXES

logger = logging.getLogger(__name__)


def _check_arguments(val_fraction: float, size: int) -> None:
    if not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise ConfigError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 8 <= size <= 1024:
        raise ConfigError(f"size must be an integer in 8..1024, got {size!r}")


def stratified_split(
    labels: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Splits sample indices per class, so each class keeps its share in both splits.

    Args:
        labels: ``(N,)`` integer labels.
        val_fraction: Share of each class that goes to validation (at least one sample
            of a class with two or more).
        seed: Seed of the shuffle.

    Returns:
        Sorted ``train`` and ``val`` index arrays.
    """
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in np.unique(labels):
        indices = rng.permutation(np.flatnonzero(labels == label))
        val_count = round(len(indices) * val_fraction)
        val_count = min(max(val_count, 1 if len(indices) > 1 else 0), len(indices) - 1)
        val.append(indices[:val_count])
        train.append(indices[val_count:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def write_image_folder(
    out_dir: Path,
    images: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    *,
    val_fraction: float,
    seed: int,
    size: int,
) -> Path:
    """Writes grey images as 3-channel PNGs in ``train/<class>`` and ``val/<class>``.

    Args:
        out_dir: Output root.
        images: ``(N, H, W) uint8`` grey images.
        labels: ``(N,)`` indices into ``class_names``.
        class_names: Folder name of each class.
        val_fraction: Share of each class in ``val``.
        seed: Seed of the split.
        size: Output side in pixels (images are resized with cubic interpolation).

    Returns:
        ``out_dir``, resolved.
    """
    out_dir = Path(out_dir).expanduser().resolve()
    for split in ("train", "val"):
        if (out_dir / split).exists() and any((out_dir / split).iterdir()):
            raise ConfigError(f"output folder {out_dir / split} is not empty")
    train, val = stratified_split(labels, val_fraction, seed)
    for split, indices in (("train", train), ("val", val)):
        for name in class_names:
            (out_dir / split / name).mkdir(parents=True, exist_ok=True)
        for index in indices:
            image = cv2.resize(images[index], (size, size), interpolation=cv2.INTER_CUBIC)
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
            path = out_dir / split / class_names[labels[index]] / f"{index:05d}.png"
            cv2.imwrite(str(path), image)
    logger.info("wrote %d train and %d val images to %s", len(train), len(val), out_dir)
    return out_dir


def make_digits_set(
    out_dir: Path, *, val_fraction: float = 0.2, seed: int = 0, size: int = 32
) -> Path:
    """Writes scikit-learn's 1,797 handwritten digits as a 10-class image folder.

    Returns:
        The dataset root (``train/0`` .. ``val/9``).

    Raises:
        ConfigError: ``val_fraction`` or ``size`` is out of range, or the folder is in use.
        DatasetError: scikit-learn is not installed.
    """
    _check_arguments(val_fraction, size)
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise DatasetError(
            "the digits come with scikit-learn: pip install 'ubiq[train]'"
        ) from error
    digits = load_digits()
    images = np.clip(np.asarray(digits.images) * (255.0 / 16.0), 0, 255).round().astype(np.uint8)
    labels = np.asarray(digits.target, np.int64)
    names = [str(digit) for digit in range(10)]
    return write_image_folder(
        out_dir, images, labels, names, val_fraction=val_fraction, seed=seed, size=size
    )


def make_faces_set(
    out_dir: Path, *, val_fraction: float = 0.2, seed: int = 0, size: int = 32
) -> Path:
    """Writes scikit-image's LFW subset (100 faces, 100 non-faces) as an image folder.

    Returns:
        The dataset root (classes ``face`` and ``non_face``).

    Raises:
        ConfigError: ``val_fraction`` or ``size`` is out of range, or the folder is in use.
        DatasetError: scikit-image is not installed.
    """
    _check_arguments(val_fraction, size)
    try:
        import skimage.data
    except ImportError as error:
        raise DatasetError("the faces come with scikit-image: pip install 'ubiq[train]'") from error
    faces = np.asarray(skimage.data.lfw_subset())
    if faces.dtype != np.uint8:  # float64 in [0, 1] in scikit-image 0.2x
        faces = np.clip(faces * 255.0, 0, 255).round().astype(np.uint8)
    images = faces
    labels = np.repeat(np.arange(2, dtype=np.int64), len(images) // 2)
    return write_image_folder(
        out_dir,
        images,
        labels,
        ["face", "non_face"],
        val_fraction=val_fraction,
        seed=seed,
        size=size,
    )


def load_image_folder(root: Path, split: str) -> tuple[list[Path], np.ndarray, list[str]]:
    """Reads an image-folder split: one sub-folder per class, sorted by name.

    Args:
        root: The dataset root.
        split: ``"train"`` or ``"val"`` (any sub-folder of ``root``).

    Returns:
        The image paths, ``(N,) int64`` labels (indices into the class names) and the
        class names.

    Raises:
        DatasetError: The split folder is missing, has no class folders or no images.
    """
    folder = Path(root).expanduser() / split
    if not folder.is_dir():
        raise DatasetError(f"split folder not found: {folder}")
    class_names = sorted(path.name for path in folder.iterdir() if path.is_dir())
    if not class_names:
        raise DatasetError(f"{folder} has no class folders (expected {folder}/<class>/*.png)")
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(class_names):
        images = sorted(
            path for path in (folder / name).rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES
        )
        paths.extend(images)
        labels.extend([label] * len(images))
    if not paths:
        raise DatasetError(f"{folder} has no images in its class folders {', '.join(class_names)}")
    return paths, np.asarray(labels, np.int64), class_names


def make_objects_set(
    out_dir: str | Path,
    *,
    train_per_class: int = 5,
    val_per_class: int = 20,
    size: int = 128,
    seed: int = 0,
) -> Path:
    """Writes pictures of single objects cut out of real photographs (the six classes of
    ``ubiq data synth``: cat, cup, rocket, motorcycle, astronaut, coin) on real
    backgrounds, in the image-folder layout: few per class for training, as a user
    teaching classes on the device has, and more to check on.

    Each picture is a composited scene with one object (random photo background, scale,
    place, lighting, blur and noise, see :func:`~ubiq.models.datasets.synth.compose_image`)
    cropped to the object's box with a margin, as a detector's crop would be.

    Raises:
        ConfigError: If a count or the size is out of range.
    """
    from ubiq.models.datasets import photos
    from ubiq.models.datasets.synth import compose_image

    for name, value in (("train_per_class", train_per_class), ("val_per_class", val_per_class)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10_000:
            raise ConfigError(f"{name} must be an integer in 1..10000, got {value!r}")
    _check_arguments(0.5, size)
    root = Path(out_dir).expanduser()
    names = photos.class_names()
    wanted = {"train": train_per_class, "val": val_per_class}
    counts = {(split, name): 0 for split in wanted for name in names}
    rng = np.random.default_rng(seed)
    side = max(2 * size, 160)
    while any(counts[key] < wanted[key[0]] for key in counts):
        composed = compose_image(rng, side, 1)
        if len(composed.class_ids) != 1:
            continue
        name = names[int(composed.class_ids[0])]
        split = "train" if counts[("train", name)] < wanted["train"] else "val"
        if counts[(split, name)] >= wanted[split]:
            continue
        x0, y0, x1, y1 = (composed.boxes_xyxy_norm[0] * side).tolist()
        if min(x1 - x0, y1 - y0) < 24:
            continue
        margin = 0.1 * max(x1 - x0, y1 - y0)
        crop = composed.image[
            max(0, int(y0 - margin)) : min(side, int(y1 + margin)),
            max(0, int(x0 - margin)) : min(side, int(x1 + margin)),
        ]
        scale = size / max(crop.shape[:2])
        crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        folder = root / split / name
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{counts[(split, name)]:04d}.jpg"), crop)
        counts[(split, name)] += 1
    logger.info("wrote %d pictures to %s", sum(counts.values()), root)
    return root
