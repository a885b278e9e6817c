"""The Ultralytics YOLO dataset layout: read it with validation, write it, preview it.

A YOLO dataset is a ``data.yaml`` and two folder trees::

    data.yaml            path: /abs/root, train: images/train, val: images/val, names: {0: cat}
    images/train/x.jpg   labels/train/x.txt   (masks/train/x.png, optional)

Each label line is ``class cx cy w h`` normalized to [0, 1] (a polygon line
``class x1 y1 x2 y2 ...`` of an Ultralytics segmentation set is read as its bounding box).
An empty label file is a background image; a missing one is an error. Every problem is
one :class:`~ubiq.errors.DatasetError` line that names the file, the line and the value.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from ubiq.errors import DatasetError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
"""Image file suffixes a split folder is searched for (lower case)."""

COORDINATE_TOLERANCE = 1e-3
"""How far outside [0, 1] a normalized coordinate may lie (rounding of 6-decimal labels)."""


@dataclass(frozen=True)
class YoloItem:
    """One image of a YOLO split and its labels.

    Attributes:
        image_path: The image file.
        label_path: Its label file (exists; may be empty for a background image).
        boxes_xyxy_norm: ``(N, 4) float32`` boxes ``x0, y0, x1, y1`` normalized to [0, 1].
        class_ids: ``(N,) int64`` class ids, each in ``0 .. len(names) - 1``.
        mask_path: The semantic mask (``masks/<split>/<stem>.png``, 0 background and
            ``class_id + 1`` objects) when the dataset has one, else None.
    """

    image_path: Path
    label_path: Path
    boxes_xyxy_norm: np.ndarray
    class_ids: np.ndarray
    mask_path: Path | None = None


@dataclass(frozen=True)
class YoloSplit:
    """A validated split of a YOLO dataset.

    Attributes:
        names: Class names in class-id order.
        items: One entry per image, sorted by image path.
        root: The dataset root (``path`` in ``data.yaml``).
        split: The split's name, such as ``"train"``.
    """

    names: list[str]
    items: list[YoloItem]
    root: Path
    split: str

    def class_counts(self) -> np.ndarray:
        """Returns ``(len(names),) int64``: how many boxes each class has in this split."""
        counts = np.zeros(len(self.names), np.int64)
        for item in self.items:
            counts += np.bincount(item.class_ids, minlength=len(self.names))
        return counts


def _display(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _parse_names(value: Any, source: Path) -> list[str]:
    if isinstance(value, dict):
        try:
            keys = sorted(int(key) for key in value)
        except (TypeError, ValueError) as error:
            raise DatasetError(f"{source}: names keys must be class ids 0..n-1") from error
        if keys != list(range(len(keys))):
            raise DatasetError(f"{source}: names keys must be 0..{len(keys) - 1}, got {keys}")
        by_id = {int(key): name for key, name in value.items()}
        names = [by_id[key] for key in keys]
    elif isinstance(value, list):
        names = value
    else:
        raise DatasetError(
            f"{source}: names must be a list or a mapping of class id to name, "
            f"got {type(value).__name__}"
        )
    if not names:
        raise DatasetError(f"{source}: names is empty")
    return [str(name) for name in names]


def load_data_yaml(data_yaml: Path) -> tuple[dict[str, Any], Path, list[str]]:
    """Reads and checks a ``data.yaml``.

    Args:
        data_yaml: The dataset description.

    Returns:
        The parsed mapping, the dataset root (``path``: absolute, or relative to the
        yaml's folder, or the yaml's folder when absent) and the class names.

    Raises:
        DatasetError: The file is missing or not YAML, or ``train``, ``val`` or ``names``
            is missing, or ``nc`` disagrees with ``names``.
    """
    data_yaml = Path(data_yaml)
    if not data_yaml.is_file():
        raise DatasetError(f"dataset description not found: {data_yaml}")
    try:
        data = yaml.safe_load(data_yaml.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DatasetError(f"{data_yaml}: not valid YAML ({reason})") from error
    if not isinstance(data, dict):
        raise DatasetError(f"{data_yaml}: expected a mapping with train, val and names")
    missing = [key for key in ("train", "val", "names") if key not in data]
    if missing:
        raise DatasetError(f"{data_yaml}: missing key(s) {', '.join(missing)}")
    names = _parse_names(data["names"], data_yaml)
    if "nc" in data and data["nc"] != len(names):
        raise DatasetError(f"{data_yaml}: nc is {data['nc']} but names has {len(names)} entries")
    root = Path(str(data.get("path") or ".")).expanduser()
    if not root.is_absolute():
        root = (data_yaml.parent / root).resolve()
    return data, root, names


def label_path_for(image_path: Path, folder: str = "labels", suffix: str = ".txt") -> Path:
    """Returns the label file of an image the way Ultralytics finds it.

    The last ``images`` folder of the path becomes ``labels`` (or ``folder``) and the
    suffix becomes ``.txt`` (or ``suffix``): ``images/train/x.jpg`` -> ``labels/train/x.txt``.
    """
    parts = list(image_path.parts)
    for index in range(len(parts) - 2, -1, -1):
        if parts[index] == "images":
            parts[index] = folder
            return Path(*parts).with_suffix(suffix)
    return image_path.with_suffix(suffix)


def parse_label_file(
    label_path: Path, num_classes: int, display_name: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Reads one YOLO label file.

    Args:
        label_path: The ``.txt`` file.
        num_classes: How many classes the dataset has.
        display_name: How messages name the file (defaults to the path).

    Returns:
        ``(N, 4) float32`` normalized ``xyxy`` boxes and ``(N,) int64`` class ids.

    Raises:
        DatasetError: A line is not ``class cx cy w h`` (or a polygon), a class id is out
            of range, a coordinate lies outside [0, 1] or a box has no width or height.
    """
    name = display_name or str(label_path)
    boxes: list[list[float]] = []
    class_ids: list[int] = []
    text = label_path.read_text(encoding="utf-8", errors="replace")
    for line_number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{name} line {line_number}"
        is_polygon = len(fields) >= 7 and len(fields) % 2 == 1
        if len(fields) != 5 and not is_polygon:
            raise DatasetError(
                f"malformed label in {where}: expected 'class cx cy w h' (5 numbers), "
                f"got {line.strip()!r}"
            )
        try:
            values = [float(field) for field in fields]
        except ValueError as error:
            raise DatasetError(
                f"malformed label in {where}: not a number in {line.strip()!r}"
            ) from error
        class_id = int(values[0])
        if class_id != values[0] or not 0 <= class_id < num_classes:
            raise DatasetError(f"class {fields[0]} out of range 0..{num_classes - 1} in {where}")
        coordinates = np.asarray(values[1:], np.float64)
        outside = (coordinates < -COORDINATE_TOLERANCE) | (coordinates > 1 + COORDINATE_TOLERANCE)
        if outside.any() or not np.isfinite(coordinates).all():
            bad = coordinates[outside | ~np.isfinite(coordinates)][0]
            raise DatasetError(f"coordinate {bad:g} outside [0, 1] in {where}")
        if is_polygon:
            xs, ys = coordinates[0::2], coordinates[1::2]
            box = [xs.min(), ys.min(), xs.max(), ys.max()]
        else:
            center_x, center_y, width, height = coordinates
            box = [
                center_x - width / 2,
                center_y - height / 2,
                center_x + width / 2,
                center_y + height / 2,
            ]
            if width <= 0 or height <= 0:
                raise DatasetError(f"box of size {width:g} x {height:g} in {where}")
        boxes.append(box)
        class_ids.append(class_id)
    boxes_array = np.clip(np.asarray(boxes, np.float32).reshape(-1, 4), 0.0, 1.0)
    return boxes_array, np.asarray(class_ids, np.int64)


def _split_images(value: Any, root: Path, split: str, source: Path) -> list[Path]:
    entries = value if isinstance(value, list) else [value]
    images: list[Path] = []
    for entry in entries:
        folder = Path(str(entry)).expanduser()
        folder = folder if folder.is_absolute() else root / folder
        if folder.is_file() and folder.suffix == ".txt":
            lines = folder.read_text(encoding="utf-8").splitlines()
            listed = [Path(line.strip()) for line in lines if line.strip()]
            images.extend(path if path.is_absolute() else folder.parent / path for path in listed)
        elif folder.is_dir():
            images.extend(
                path for path in folder.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES
            )
        else:
            raise DatasetError(f"{source}: {split} folder not found: {folder}")
    if not images:
        raise DatasetError(
            f"{source}: {split} split has no images ({', '.join(map(str, entries))})"
        )
    return sorted(images)


def load_yolo_split(data_yaml: Path, split: str) -> YoloSplit:
    """Reads and validates one split of a YOLO dataset.

    Args:
        data_yaml: The dataset's ``data.yaml``.
        split: ``"train"``, ``"val"`` or another key of the yaml (``"test"``).

    Returns:
        The split with every label parsed.

    Raises:
        DatasetError: The yaml is missing or incomplete, the split folder is missing or
            empty, an image has no label file, or a label line is malformed.
    """
    data_yaml = Path(data_yaml)
    data, root, names = load_data_yaml(data_yaml)
    if split not in data or data[split] in (None, ""):
        raise DatasetError(f"{data_yaml}: no {split!r} split (keys: {', '.join(map(str, data))})")
    items = []
    for image_path in _split_images(data[split], root, split, data_yaml):
        label_path = label_path_for(image_path)
        if not label_path.is_file():
            raise DatasetError(
                f"{data_yaml}: missing label file {_display(label_path, root)} "
                f"for {_display(image_path, root)}"
            )
        display_name = _display(label_path, root)
        try:
            boxes, class_ids = parse_label_file(label_path, len(names), display_name)
        except DatasetError as error:
            raise DatasetError(f"{data_yaml}: {error}") from error
        mask_path = label_path_for(image_path, "masks", ".png")
        items.append(
            YoloItem(
                image_path=image_path,
                label_path=label_path,
                boxes_xyxy_norm=boxes,
                class_ids=class_ids,
                mask_path=mask_path if mask_path.is_file() else None,
            )
        )
    logger.debug("%s %s: %d images", data_yaml, split, len(items))
    return YoloSplit(names=names, items=items, root=root, split=split)


def format_label_lines(boxes_xyxy_norm: np.ndarray, class_ids: np.ndarray) -> str:
    """Formats boxes as YOLO label text: ``class cx cy w h`` per line, 6 decimals.

    Args:
        boxes_xyxy_norm: ``(N, 4)`` normalized ``x0, y0, x1, y1``.
        class_ids: ``(N,)`` integer class ids.

    Raises:
        ValueError: The shapes do not match.
    """
    boxes = np.asarray(boxes_xyxy_norm, np.float64).reshape(-1, 4)
    class_ids = np.asarray(class_ids).reshape(-1)
    if len(boxes) != len(class_ids):
        raise ValueError(f"{len(boxes)} boxes but {len(class_ids)} class ids")
    lines = []
    for (x0, y0, x1, y1), class_id in zip(boxes, class_ids):
        center_x, center_y = (x0 + x1) / 2, (y0 + y1) / 2
        lines.append(f"{int(class_id)} {center_x:.6f} {center_y:.6f} {x1 - x0:.6f} {y1 - y0:.6f}\n")
    return "".join(lines)


def write_yolo_labels(label_path: Path, boxes_xyxy_norm: np.ndarray, class_ids: np.ndarray) -> None:
    """Writes one label file (empty for an image without objects)."""
    label_path.parent.mkdir(parents=True, exist_ok=True)
    label_path.write_text(format_label_lines(boxes_xyxy_norm, class_ids), encoding="utf-8")


def write_data_yaml(
    root: Path,
    names: Sequence[str],
    *,
    train: str = "images/train",
    val: str = "images/val",
    comment: str = "",
) -> Path:
    """Writes ``root/data.yaml`` the way Ultralytics reads it (absolute ``path``).

    Returns:
        The yaml's path.
    """
    root = Path(root).resolve()
    data = {
        "path": str(root),
        "train": train,
        "val": val,
        "nc": len(names),
        "names": dict(enumerate(names)),
    }
    header = "".join(f"# {line}\n" for line in comment.splitlines())
    path = root / "data.yaml"
    path.write_text(header + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def class_color(class_id: int) -> tuple[int, int, int]:
    """Returns a distinct BGR colour for a class id."""
    hue = (class_id * 47) % 180
    pixel = cv2.cvtColor(np.uint8([[[hue, 220, 255]]]), cv2.COLOR_HSV2BGR)[0, 0]
    return int(pixel[0]), int(pixel[1]), int(pixel[2])


def draw_preview(
    split: YoloSplit, *, columns: int = 4, rows: int = 4, cell_px: int = 256
) -> np.ndarray:
    """Tiles the first images of a split with their boxes and class names drawn.

    Returns:
        ``(rows * cell_px, columns * cell_px, 3) uint8`` BGR image.

    Raises:
        DatasetError: An image cannot be read.
    """
    sheet = np.zeros((rows * cell_px, columns * cell_px, 3), np.uint8)
    for index, item in enumerate(split.items[: rows * columns]):
        image = cv2.imread(str(item.image_path), cv2.IMREAD_COLOR)
        if image is None:
            raise DatasetError(f"cannot read image {item.image_path}")
        cell = cv2.resize(image, (cell_px, cell_px), interpolation=cv2.INTER_AREA)
        for box, class_id in zip(item.boxes_xyxy_norm, item.class_ids):
            x0, y0, x1, y1 = (np.asarray(box) * cell_px).round().astype(int)
            color = class_color(int(class_id))
            cv2.rectangle(cell, (x0, y0), (x1 - 1, y1 - 1), color, 2)
            label = split.names[int(class_id)]
            (text_width, text_height), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
            top = max(y0, text_height + 4)
            cv2.rectangle(cell, (x0, top - text_height - 4), (x0 + text_width + 4, top), color, -1)
            cv2.putText(
                cell,
                label,
                (x0 + 2, top - 3),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.45,
                (0, 0, 0),
                1,
                cv2.LINE_AA,
            )
        row, column = divmod(index, columns)
        sheet[row * cell_px : (row + 1) * cell_px, column * cell_px : (column + 1) * cell_px] = cell
    return sheet
