"""A detection and segmentation training set composited from real photographs.

Objects cut out of real photos (:mod:`ubiq.models.datasets.photos`) are pasted on real
background photos at random scale, position, rotation and colour, may leave the frame
and occlude one another; boxes and masks are computed from each object's final visible
pixels, so they are exact. The output is the Ultralytics YOLO layout (``data.yaml``,
``images/``, ``labels/``) plus ``masks/`` (semantic maps) and ``preview.jpg``.

Every image is drawn from its own ``numpy.random.Generator`` seeded by ``(seed, split,
index)``: the same seed gives byte-identical files, and the train and val streams are
independent.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ubiq.errors import ConfigError
from ubiq.models.datasets import photos
from ubiq.models.datasets.yolo import (
    draw_preview,
    load_yolo_split,
    write_data_yaml,
    write_yolo_labels,
)

logger = logging.getLogger(__name__)

OBJECT_SIDE_RANGE = (0.12, 0.70)
"""An object's longest side, as a fraction of the image side."""

MAX_UPSCALE = 3.0
"""The most a cut-out is enlarged (small coins stay sharp enough)."""

MIN_IN_FRAME_FRACTION = 0.3
"""An object less visible than this after clipping to the frame is not pasted."""

MIN_UNOCCLUDED_FRACTION = 0.4
"""An object whose in-frame pixels are covered beyond this by later ones is dropped."""

MIN_BOX_PX = 6
"""Boxes narrower or shorter than this many pixels are not labelled."""

PLACEMENT_TRIES = 4
"""Placements tried per object before giving up on sparing the objects under it."""

JPEG_QUALITY = 92

_SPLIT_STREAMS = {"train": 0, "val": 1}
_OWNED_NAMES = {"images", "labels", "masks", "data.yaml", "preview.jpg"}


@dataclass
class _Instance:
    class_id: int
    in_frame_px: int
    dropped: bool = False
    box: tuple[int, int, int, int] = (0, 0, 0, 0)  # x, y, width, height when pasted


@dataclass(frozen=True)
class ComposedImage:
    """One composited image and its exact annotations.

    Attributes:
        image: ``(S, S, 3) uint8`` BGR.
        boxes_xyxy_norm: ``(N, 4) float32`` boxes of the visible pixels, normalized.
        class_ids: ``(N,) int64``.
        semantic_mask: ``(S, S) uint8``: 0 background, ``class_id + 1`` on each labelled
            object's visible pixels.
    """

    image: np.ndarray
    boxes_xyxy_norm: np.ndarray
    class_ids: np.ndarray
    semantic_mask: np.ndarray


def _crop_resized(rng: np.random.Generator, photo: np.ndarray, size: int) -> np.ndarray:
    """A random crop of a photo (30-100 % of its short side) resized to ``size``.

    The crop is at least half the output side where the photo allows, so that small
    photos are not enlarged into a blur.
    """
    height, width = photo.shape[:2]
    short_side = min(height, width)
    crop_height = max(int(rng.uniform(0.3, 1.0) * short_side), min(short_side, size // 2))
    crop_width = max(16, int(crop_height * rng.uniform(0.75, 1.33)))
    crop_height, crop_width = min(crop_height, height), min(crop_width, width)
    y0 = int(rng.integers(0, height - crop_height + 1))
    x0 = int(rng.integers(0, width - crop_width + 1))
    crop = photo[y0 : y0 + crop_height, x0 : x0 + crop_width]
    interpolation = cv2.INTER_AREA if crop_height > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interpolation)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A jittered background, sometimes a blend of two photos, as float32 BGR."""
    backgrounds = photos.load_backgrounds()
    image = _crop_resized(rng, backgrounds[rng.integers(len(backgrounds))], size)
    image = image.astype(np.float32)
    if rng.random() < 0.25:
        other = _crop_resized(rng, backgrounds[rng.integers(len(backgrounds))], size)
        weight = rng.uniform(0.3, 0.7)
        image = image * (1 - weight) + other.astype(np.float32) * weight
    if rng.random() < 0.5:
        image = image[:, ::-1]
    if rng.random() < 0.3:
        image = image[::-1]
    gains = rng.uniform(0.7, 1.3, 3).astype(np.float32) * rng.uniform(0.7, 1.2)
    return np.ascontiguousarray(image * gains + rng.uniform(-20, 20))


def _jitter_object(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Hue, saturation, brightness and contrast jitter of a cut-out; float32 BGR."""
    if rng.random() < 0.5:
        hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV).astype(np.int16)
        hsv[..., 0] = (hsv[..., 0] + int(rng.integers(-8, 9))) % 180
        hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.7, 1.3), 0, 255)
        image = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)
    pixels = image.astype(np.float32)
    mean = float(pixels.mean())
    contrast = rng.uniform(0.7, 1.3)
    gains = rng.uniform(0.9, 1.1, 3).astype(np.float32)
    return (pixels - mean) * contrast * gains + mean + rng.uniform(-30, 30)


def _placement(
    rng: np.random.Generator,
    cutout: photos.Cutout,
    size: int,
    upright: float = 0.0,
    near: tuple[int, int, int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Draws scale, flip, rotation and position for a cut-out (not rotated with
    probability ``upright``; when ``near``, an ``(x, y, width, height)`` box, is given, its
    centre lies inside that box: anywhere across it, in the middle half of its height).

    Returns:
        The scaled (and flipped) cut-out pixels, its soft mask, the 2x3 affine matrix
        into the frame, and its full area in pixels.
    """
    longest_px = rng.uniform(*OBJECT_SIDE_RANGE) * size
    scale = min(longest_px / max(cutout.mask.shape), MAX_UPSCALE)
    width = max(1, round(cutout.mask.shape[1] * scale))
    height = max(1, round(cutout.mask.shape[0] * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    image = cv2.resize(cutout.image, (width, height), interpolation=interpolation)
    mask = cv2.resize(cutout.mask.astype(np.float32), (width, height), interpolation=interpolation)
    if rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    angle = rng.uniform(-30, 30)
    if upright and rng.random() < upright:
        angle = 0.0
    center_x, center_y = rng.uniform(0, size, 2)
    if near is not None:
        x, y, box_width, box_height = near
        center_x = x + box_width * rng.uniform(0.0, 1.0)
        center_y = y + box_height * rng.uniform(0.25, 0.75)
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)
    matrix[0, 2] += center_x - width / 2
    matrix[1, 2] += center_y - height / 2
    full_px = float(np.count_nonzero(mask >= 0.5))
    return np.ascontiguousarray(image), np.ascontiguousarray(mask), matrix, full_px


def _covers_too_much(
    covered: np.ndarray,
    instance_map: np.ndarray,
    counts: np.ndarray,
    instances: list[_Instance],
    min_visible: float = MIN_UNOCCLUDED_FRACTION,
) -> list[int]:
    """Indices of the instances that ``covered`` would leave below the occlusion limit."""
    if not instances:
        return []
    hidden = np.bincount(instance_map[covered], minlength=len(instances) + 1)
    return [
        index
        for index, instance in enumerate(instances)
        if not instance.dropped
        and counts[index + 1] - hidden[index + 1] < min_visible * instance.in_frame_px
    ]


def _box_px(mask: np.ndarray) -> tuple[int, int, int, int]:
    x, y, width, height = cv2.boundingRect(mask.astype(np.uint8))
    return x, y, width, height


def compose_image(
    rng: np.random.Generator,
    size: int,
    max_objects: int,
    *,
    upright: float = 0.0,
    min_box_px: int = MIN_BOX_PX,
    min_visible: float = MIN_UNOCCLUDED_FRACTION,
    overlap: float = 0.0,
) -> ComposedImage:
    """Composites one image: a background, 1..max_objects objects, occluders, blur, noise.

    Args:
        rng: The image's own random generator.
        size: Image side in pixels.
        max_objects: Most objects pasted.
        upright: Share of objects pasted without rotation (as a camera sees them).
        min_box_px: Boxes narrower or shorter than this are not pasted or labelled.
        min_visible: Share of an object's in-frame pixels that must stay unhidden for it to
            be labelled (objects hidden more are left unlabelled, as background).
        overlap: Chance that an object is pasted over one pasted before it (its centre
            within that object's box), as two people passing in a doorway.

    Returns:
        The image and its exact boxes, class ids and semantic mask.
    """
    names = photos.class_names()
    by_class = {name: [c for c in photos.load_cutouts() if c.class_name == name] for name in names}
    canvas = _background(rng, size)
    instance_map = np.zeros((size, size), np.int32)
    instances: list[_Instance] = []

    for _ in range(int(rng.integers(1, max_objects + 1))):
        class_id = int(rng.integers(len(names)))
        candidates = by_class[names[class_id]]
        cutout = candidates[int(rng.integers(len(candidates)))]
        counts = np.bincount(instance_map.ravel(), minlength=len(instances) + 1)
        near = None
        if overlap and instances and rng.random() < overlap:
            near = instances[int(rng.integers(len(instances)))].box
        chosen = None
        for _ in range(PLACEMENT_TRIES):
            image, mask, matrix, full_px = _placement(rng, cutout, size, upright, near)
            alpha = cv2.warpAffine(mask, matrix, (size, size), flags=cv2.INTER_LINEAR)
            visible = alpha >= 0.5
            in_frame_px = int(np.count_nonzero(visible))
            _, _, box_width, box_height = _box_px(visible)
            if in_frame_px < MIN_IN_FRAME_FRACTION * full_px or min(box_width, box_height) < (
                min_box_px
            ):
                continue
            chosen = (image, alpha, visible, matrix, in_frame_px)
            if not _covers_too_much(visible, instance_map, counts, instances, min_visible):
                break
        if chosen is None:
            continue
        image, alpha, visible, matrix, in_frame_px = chosen
        for index in _covers_too_much(visible, instance_map, counts, instances, min_visible):
            instances[index].dropped = True
        pixels = cv2.warpAffine(
            _jitter_object(rng, image),
            matrix,
            (size, size),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        canvas += alpha[..., None] * (pixels - canvas)
        instances.append(_Instance(class_id, in_frame_px, box=_box_px(visible)))
        instance_map[visible] = len(instances)

    _add_occluders(rng, canvas, instance_map, instances, size, min_visible)
    if rng.random() < 0.25:
        canvas = cv2.GaussianBlur(canvas, (0, 0), rng.uniform(0.5, 1.3))
    if rng.random() < 0.4:
        canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * rng.uniform(2, 8)
    image = np.clip(canvas, 0, 255).astype(np.uint8)

    boxes, class_ids = [], []
    semantic = np.zeros((size, size), np.uint8)
    for index, instance in enumerate(instances, start=1):
        visible = instance_map == index
        if instance.dropped or np.count_nonzero(visible) < (min_visible * instance.in_frame_px):
            continue
        x, y, width, height = _box_px(visible)
        if min(width, height) < min_box_px:
            continue
        boxes.append([x / size, y / size, (x + width) / size, (y + height) / size])
        class_ids.append(instance.class_id)
        semantic[visible] = instance.class_id + 1
    return ComposedImage(
        image=image,
        boxes_xyxy_norm=np.asarray(boxes, np.float32).reshape(-1, 4),
        class_ids=np.asarray(class_ids, np.int64),
        semantic_mask=semantic,
    )


def _add_occluders(
    rng: np.random.Generator,
    canvas: np.ndarray,
    instance_map: np.ndarray,
    instances: list[_Instance],
    size: int,
    min_visible: float = MIN_UNOCCLUDED_FRACTION,
) -> None:
    """Paints, with probability 0.3, one or two rotated rectangles of texture.

    Each rectangle gets three tries at a place where it leaves every object at least
    ``min_visible`` of its in-frame pixels, and is skipped otherwise.
    """
    if rng.random() >= 0.3:
        return
    backgrounds = photos.load_backgrounds()
    for _ in range(int(rng.integers(1, 3))):
        counts = np.bincount(instance_map.ravel(), minlength=len(instances) + 1)
        for _ in range(3):
            rectangle = (
                tuple(rng.uniform(0, size, 2)),
                tuple(rng.uniform(0.08, 0.3, 2) * size),
                rng.uniform(0, 180),
            )
            polygon = np.round(cv2.boxPoints(rectangle)).astype(np.int32)
            covered = np.zeros((size, size), np.uint8)
            cv2.fillPoly(covered, [polygon], 1)
            covered = covered.astype(bool)
            if not _covers_too_much(covered, instance_map, counts, instances, min_visible):
                texture = _crop_resized(rng, backgrounds[rng.integers(len(backgrounds))], size)
                gains = rng.uniform(0.6, 1.4, 3).astype(np.float32)
                canvas[covered] = texture[covered].astype(np.float32) * gains
                instance_map[covered] = 0
                break


def _check_arguments(
    train_images: int, val_images: int, imgsz: int, seed: int, max_objects: int
) -> None:
    checks = (
        ("train_images", train_images, 1, 10_000_000),
        ("val_images", val_images, 1, 10_000_000),
        ("imgsz", imgsz, 32, 4096),
        ("seed", seed, 0, 2**63 - 1),
        ("max_objects", max_objects, 1, 64),
    )
    for name, value, low, high in checks:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        if not low <= value <= high:
            raise ConfigError(f"{name} must be in {low}..{high}, got {value}")


def _prepare_output(out_dir: Path) -> None:
    """Creates ``out_dir``, or clears a previous synthetic set there; refuses other files."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"output {out_dir} exists and is not a folder")
    if out_dir.is_dir():
        others = sorted(path.name for path in out_dir.iterdir() if path.name not in _OWNED_NAMES)
        if others:
            raise ConfigError(
                f"output folder {out_dir} is not empty ({', '.join(others[:3])}...); "
                "choose an empty or new folder"
            )
        for name in sorted(_OWNED_NAMES):
            path = out_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def generate_detection_set(
    out_dir: Path,
    *,
    train_images: int = 800,
    val_images: int = 200,
    imgsz: int = 320,
    seed: int = 0,
    max_objects: int = 4,
    upright: float = 0.0,
    min_box_px: int = MIN_BOX_PX,
    min_visible: float = MIN_UNOCCLUDED_FRACTION,
    overlap: float = 0.0,
    progress: bool = True,
) -> Path:
    """Writes a YOLO detection set (with semantic masks) of real photographs.

    Args:
        out_dir: Output folder; created, or cleared if it holds a previous synthetic set.
        train_images: Images in ``images/train``.
        val_images: Images in ``images/val``.
        imgsz: Side of the square images in pixels.
        seed: Seed of the whole set; the same seed gives byte-identical files.
        max_objects: Most objects per image (at least one is tried for every image).
        upright: Share of objects pasted without rotation, as a camera looking at a scene
            sees them (the rest turned up to 30 degrees either way). 0 gives the sets of
            before, byte for byte.
        min_box_px: Objects whose box would be narrower or shorter than this many pixels
            are not pasted or labelled (lower it for thin objects: a rocket or a person
            far away, upright, is a few pixels wide).
        min_visible: Share of an object's in-frame pixels that must stay unhidden by
            later objects and occluders for it to be labelled; a more hidden object stays
            in the picture unlabelled, so a detector learns it as background (lower it to
            teach the far one of two overlapping objects).
        overlap: Chance that an object is pasted over one pasted before it (its centre
            inside that object's box), as the near and the far one of two passing.
        progress: Show a tqdm progress bar.

    Returns:
        The path of ``data.yaml``.

    Raises:
        ConfigError: An argument is out of range, or ``out_dir`` holds other files.
        DatasetError: scikit-image's photographs are missing.
    """
    _check_arguments(train_images, val_images, imgsz, seed, max_objects)
    if not 0.0 <= upright <= 1.0:
        raise ConfigError(f"upright must be a share between 0 and 1, got {upright}")
    if not 1 <= min_box_px <= imgsz:
        raise ConfigError(f"min_box_px must be in 1..{imgsz}, got {min_box_px}")
    if not 0.0 <= overlap <= 1.0:
        raise ConfigError(f"overlap must be a share between 0 and 1, got {overlap}")
    if not 0.0 < min_visible <= 1.0:
        raise ConfigError(f"min_visible must be a share in (0, 1], got {min_visible}")
    out_dir = Path(out_dir).expanduser().resolve()
    _prepare_output(out_dir)
    photos.load_cutouts()
    names = photos.class_names()
    total = train_images + val_images
    with tqdm(total=total, desc="synth", unit="img", disable=not progress) as bar:
        for split, count in (("train", train_images), ("val", val_images)):
            for folder in ("images", "labels", "masks"):
                (out_dir / folder / split).mkdir(parents=True, exist_ok=True)
            for index in range(count):
                rng = np.random.default_rng([seed, _SPLIT_STREAMS[split], index])
                composed = compose_image(
                    rng,
                    imgsz,
                    max_objects,
                    upright=upright,
                    min_box_px=min_box_px,
                    min_visible=min_visible,
                    overlap=overlap,
                )
                stem = f"{index:06d}"
                cv2.imwrite(
                    str(out_dir / "images" / split / f"{stem}.jpg"),
                    composed.image,
                    [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY],
                )
                cv2.imwrite(str(out_dir / "masks" / split / f"{stem}.png"), composed.semantic_mask)
                write_yolo_labels(
                    out_dir / "labels" / split / f"{stem}.txt",
                    composed.boxes_xyxy_norm,
                    composed.class_ids,
                )
                bar.update(1)
    placement = ""
    if upright or overlap or min_box_px != MIN_BOX_PX or min_visible != MIN_UNOCCLUDED_FRACTION:
        placement = (
            f", {upright:g} of objects upright, {overlap:g} pasted over another, boxes from "
            f"{min_box_px} px, labelled from {min_visible:g} visible"
        )
    comment = (
        f"ubiq synthetic detection set: seed {seed}, imgsz {imgsz}, {train_images} train, "
        f"{val_images} val{placement}.\nObjects and backgrounds are real photographs bundled with "
        "scikit-image; masks/ holds semantic maps (0 background, class id + 1)."
    )
    data_yaml = write_data_yaml(out_dir, names, comment=comment)
    preview = draw_preview(load_yolo_split(data_yaml, "train"))
    cv2.imwrite(str(out_dir / "preview.jpg"), preview, [cv2.IMWRITE_JPEG_QUALITY, 90])
    logger.info("wrote %d images of %d classes to %s", total, len(names), out_dir)
    return data_yaml
