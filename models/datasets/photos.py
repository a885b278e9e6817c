"""Objects cut out of real photographs, and real photographs to paste them on.

Every picture comes from the photographs that scikit-image ships inside its wheel
(``skimage/data``: no download). Each object class is segmented from a real photo
with an exact mask:

- ``cat``: Chelsea's head (``chelsea.png``), GrabCut inside a hand-chosen rectangle.
- ``cup``: the espresso cup on its saucer, with its spoon (``coffee.png``), GrabCut.
- ``rocket``: the Falcon 9 on its launch pad (``rocket.jpg``), GrabCut.
- ``motorcycle``: the same motorcycle seen by the left and the right camera of a stereo
  pair (``motorcycle_left.png``, ``motorcycle_right.png``), GrabCut.
- ``astronaut``: Eileen Collins' head and shoulders (``astronaut.png``), GrabCut.
- ``coin``: the 24 ancient coins of ``coins.png``, each one a real instance found by
  background subtraction, thresholding and connected components.

GrabCut runs on the object's region scaled to at most :data:`WORK_SIDE_PX` pixels, with
the cv2 RNG seeded, so the cut-outs are deterministic and take well under two seconds;
they are computed once per process (:func:`load_cutouts` is cached).

Backgrounds are photographs and textures that contain none of the classes (bricks,
grass, gravel, the moon, the Hubble deep field, cells, a retina, printed text, the
cameraman) and regions of the object photos that exclude the objects.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ubiq.errors import DatasetError

logger = logging.getLogger(__name__)

WORK_SIDE_PX = 256
"""Longest side, in pixels, at which GrabCut segments an object (and the cut-out's size)."""

Box = tuple[int, int, int, int]
"""A rectangle ``(x0, y0, x1, y1)`` in source-photo pixels, ``x1`` and ``y1`` exclusive."""

Ellipse = tuple[int, int, int, int]
"""An axis-aligned ellipse ``(center_x, center_y, half_width, half_height)`` in pixels."""


@dataclass(frozen=True)
class Cutout:
    """One object instance cut out of a real photograph.

    Attributes:
        class_name: The object class, such as ``"cat"``.
        image: ``(H, W, 3) uint8`` BGR pixels of the tight crop around the object; pixels
            outside the mask repeat the nearest object pixel (no old background at the edge).
        mask: ``(H, W) bool``, True on the object's pixels (one connected component).
        source: The photograph it was cut from, such as ``"chelsea.png"``.
    """

    class_name: str
    image: np.ndarray
    mask: np.ndarray
    source: str


@dataclass(frozen=True)
class GrabCutSpec:
    """Where an object sits in its photo, with the hints GrabCut gets.

    Attributes:
        class_name: The object class.
        file_name: The photo in ``skimage/data``.
        region: The crop that holds the object; what lies outside ``rect`` is background.
        rect: The object's rectangle; a side of ``rect`` on a side of ``region`` cuts
            through the object (the astronaut's chest) and is not taken as background.
        sure_foreground: Ellipses that lie on the object.
        sure_background: Boxes inside ``rect`` that are background.
        keep: Ellipses outside which everything is background (for an object that
            touches a look-alike, such as the saucer's shadow on the table), or empty.
    """

    class_name: str
    file_name: str
    region: Box
    rect: Box
    sure_foreground: tuple[Ellipse, ...] = ()
    sure_background: tuple[Box, ...] = ()
    keep: tuple[Ellipse, ...] = ()


GRABCUT_SPECS: tuple[GrabCutSpec, ...] = (
    GrabCutSpec(
        "cat",
        "chelsea.png",
        region=(0, 0, 451, 300),
        rect=(12, 0, 400, 300),
        sure_foreground=((205, 170, 140, 110),),
        sure_background=((370, 110, 400, 300),),
    ),
    GrabCutSpec(
        "cup",
        "coffee.png",
        region=(50, 0, 510, 400),
        rect=(70, 12, 490, 398),
        sure_foreground=(
            (290, 150, 90, 70),
            (278, 330, 120, 30),
            (365, 280, 25, 30),
            (407, 100, 4, 25),
        ),
        keep=((279, 229, 206, 163), (290, 120, 125, 110), (405, 110, 16, 48)),
    ),
    GrabCutSpec(
        "rocket",
        "rocket.jpg",
        region=(276, 110, 364, 400),
        rect=(296, 122, 344, 398),
        sure_foreground=((321, 270, 4, 110), (321, 142, 6, 12)),
    ),
    GrabCutSpec(
        "motorcycle",
        "motorcycle_left.png",
        region=(70, 80, 710, 465),
        rect=(88, 92, 693, 452),
        sure_foreground=(
            (420, 210, 50, 20),
            (250, 200, 60, 20),
            (400, 310, 50, 30),
            (200, 320, 70, 70),
            (598, 365, 70, 75),
            (535, 158, 25, 25),
            (580, 285, 45, 15),
            (540, 235, 10, 30),
        ),
        sure_background=(
            (575, 178, 620, 255),
            (150, 95, 330, 150),
            (365, 95, 440, 128),
            (300, 400, 480, 452),
            (450, 385, 525, 452),
            (478, 200, 505, 262),
            (585, 118, 693, 150),
        ),
    ),
    GrabCutSpec(
        "motorcycle",
        "motorcycle_right.png",
        region=(25, 80, 665, 465),
        rect=(40, 92, 645, 452),
        sure_foreground=(
            (375, 210, 50, 20),
            (205, 200, 60, 20),
            (355, 310, 50, 30),
            (155, 320, 70, 70),
            (550, 365, 70, 75),
            (478, 158, 25, 25),
            (530, 285, 45, 15),
            (495, 235, 10, 30),
        ),
        sure_background=(
            (525, 178, 600, 255),
            (105, 95, 285, 150),
            (340, 98, 425, 128),
            (255, 400, 435, 452),
            (405, 385, 480, 452),
            (433, 200, 460, 262),
        ),
    ),
    GrabCutSpec(
        "astronaut",
        "astronaut.png",
        region=(0, 0, 380, 340),
        rect=(22, 8, 362, 340),
        sure_foreground=((228, 95, 45, 60), (210, 220, 80, 55), (190, 310, 140, 25)),
        sure_background=((22, 8, 135, 140), (315, 8, 362, 130)),
    ),
)
"""Hand-tuned GrabCut set-ups, one per object instance (previews checked by eye)."""

BACKGROUND_FILES: tuple[str, ...] = (
    "brick.png",
    "grass.png",
    "gravel.png",
    "moon.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "retina.jpg",
    "page.png",
    "text.png",
    "camera.png",
    "cell.png",
    "microaneurysms.png",
)
"""Whole photographs that contain none of the object classes."""

BACKGROUND_REGIONS: tuple[tuple[str, Box], ...] = (
    ("coffee.png", (485, 0, 600, 400)),
    ("coffee.png", (0, 0, 68, 400)),
    ("rocket.jpg", (0, 0, 290, 427)),
    ("rocket.jpg", (350, 0, 640, 427)),
    ("motorcycle_left.png", (0, 0, 80, 500)),
    ("motorcycle_left.png", (0, 456, 741, 500)),
    ("motorcycle_left.png", (300, 0, 741, 88)),
    ("astronaut.png", (0, 0, 80, 230)),
)
"""Regions of the object photographs that exclude every object."""


def skimage_data_dir() -> Path:
    """Returns the folder of the photographs bundled with scikit-image.

    Raises:
        DatasetError: scikit-image is not installed.
    """
    try:
        import skimage.data
    except ImportError as error:
        raise DatasetError(
            "the photographs come with scikit-image: pip install 'ubiq[train]'"
        ) from error
    return Path(skimage.data.__file__).parent


def read_photo(file_name: str) -> np.ndarray:
    """Reads one bundled photograph as ``(H, W, 3) uint8`` BGR (grey ones replicated).

    Raises:
        DatasetError: The file is missing or unreadable.
    """
    import skimage.io  # its PNG reader keeps libpng's colour-profile warnings off stderr

    path = skimage_data_dir() / file_name
    try:
        image = np.asarray(skimage.io.imread(path))
    except (OSError, ValueError) as error:
        raise DatasetError(f"cannot read the scikit-image photograph {path}: {error}") from error
    if image.dtype != np.uint8:
        raise DatasetError(f"{path}: expected 8-bit pixels, got {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2BGR)


def _ellipse_mask(
    shape: tuple[int, int], ellipses: tuple[Ellipse, ...], scale: float, offset: tuple[int, int]
) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    for center_x, center_y, half_width, half_height in ellipses:
        center = (round((center_x - offset[0]) * scale), round((center_y - offset[1]) * scale))
        axes = (max(1, round(half_width * scale)), max(1, round(half_height * scale)))
        cv2.ellipse(mask, center, axes, 0, 0, 360, 1, thickness=-1)
    return mask.astype(bool)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
    if count <= 1:
        return mask.astype(bool)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == largest


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask.astype(np.uint8), 1)
    flood = padded.copy()
    cv2.floodFill(flood, None, (0, 0), 1)
    holes = flood[1:-1, 1:-1] == 0
    return mask.astype(bool) | holes


def _bleed_colors(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Gives every pixel outside the mask the colour of the nearest object pixel.

    A cut-out blended with a soft edge then picks up no trace of its old background.
    """
    _, nearest = cv2.distanceTransformWithLabels(
        (~mask).astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL
    )
    lookup = np.zeros(int(nearest.max()) + 1, np.int64)
    lookup[nearest[mask]] = np.flatnonzero(mask)
    return image.reshape(-1, 3)[lookup[nearest]].reshape(image.shape)


def _tight_cutout(class_name: str, image: np.ndarray, mask: np.ndarray, source: str) -> Cutout:
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    mask = np.ascontiguousarray(mask[y0:y1, x0:x1])
    return Cutout(
        class_name=class_name,
        image=_bleed_colors(np.ascontiguousarray(image[y0:y1, x0:x1]), mask),
        mask=mask,
        source=source,
    )


def grabcut_region(spec: GrabCutSpec, iterations: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Segments one object of a photo with GrabCut.

    The region is scaled so that its longest side is at most :data:`WORK_SIDE_PX`; the
    mask is cleaned by a morphological opening and closing, its holes are filled and
    only its largest component is kept.

    Returns:
        The scaled region ``(H, W, 3) uint8`` BGR and the object's ``(H, W) bool`` mask.

    Raises:
        DatasetError: The photo is missing, or GrabCut found no object.
    """
    photo = read_photo(spec.file_name)
    x0, y0, x1, y1 = spec.region
    crop = photo[y0:y1, x0:x1]
    scale = min(1.0, WORK_SIDE_PX / max(crop.shape[:2]))
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA) if scale < 1 else crop.copy()
    height, width = crop.shape[:2]

    labels = np.full((height, width), cv2.GC_BGD, np.uint8)
    rx0, ry0, rx1, ry1 = (
        round((value - origin) * scale) for value, origin in zip(spec.rect, (x0, y0, x0, y0))
    )
    labels[ry0:ry1, rx0:rx1] = cv2.GC_PR_FGD
    for bx0, by0, bx1, by1 in spec.sure_background:
        labels[
            round((by0 - y0) * scale) : round((by1 - y0) * scale),
            round((bx0 - x0) * scale) : round((bx1 - x0) * scale),
        ] = cv2.GC_BGD
    if spec.keep:
        labels[~_ellipse_mask((height, width), spec.keep, scale, (x0, y0))] = cv2.GC_BGD
    labels[_ellipse_mask((height, width), spec.sure_foreground, scale, (x0, y0))] = cv2.GC_FGD

    cv2.setRNGSeed(0)
    background_model = np.zeros((1, 65), np.float64)
    foreground_model = np.zeros((1, 65), np.float64)
    cv2.grabCut(
        crop, labels, None, background_model, foreground_model, iterations, cv2.GC_INIT_WITH_MASK
    )
    mask = ((labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    mask = _fill_holes(_largest_component(mask))
    if not mask.any():
        raise DatasetError(f"GrabCut found no {spec.class_name} in {spec.file_name}")
    return crop, mask


def grabcut_object(spec: GrabCutSpec) -> Cutout:
    """Segments one object of a photo with GrabCut and returns its tight cut-out.

    Raises:
        DatasetError: The photo is missing, or GrabCut found no object.
    """
    crop, mask = grabcut_region(spec)
    return _tight_cutout(spec.class_name, crop, mask, spec.file_name)


def coin_cutouts(min_area_px: int = 600) -> list[Cutout]:
    """Cuts every coin out of ``coins.png``: one real instance per coin.

    The uneven lighting is removed with a morphological opening larger than a coin,
    the rest is thresholded (Otsu), holes are filled and each connected component's
    convex hull is one coin's mask.

    Raises:
        DatasetError: The photo is missing.
    """
    gray = cv2.cvtColor(read_photo("coins.png"), cv2.COLOR_BGR2GRAY)
    big = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (81, 81))
    foreground = cv2.GaussianBlur(
        cv2.subtract(gray, cv2.morphologyEx(gray, cv2.MORPH_OPEN, big)), (5, 5), 0
    )
    threshold, binary = cv2.threshold(foreground, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    binary = (foreground > 0.7 * threshold).astype(np.uint8)
    small = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, small)
    count, components, stats, _ = cv2.connectedComponentsWithStats(binary, 8)
    image = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    cutouts = []
    for index in range(1, count):
        if stats[index, cv2.CC_STAT_AREA] < min_area_px:
            continue
        points = cv2.findNonZero((components == index).astype(np.uint8))
        mask = np.zeros_like(binary)
        cv2.fillPoly(mask, [cv2.convexHull(points)], 1)
        cutouts.append(_tight_cutout("coin", image, mask.astype(bool), "coins.png"))
    return cutouts


@functools.lru_cache(maxsize=1)
def load_cutouts() -> tuple[Cutout, ...]:
    """Returns every object cut-out, computed once per process (< 2 s).

    Raises:
        DatasetError: scikit-image or one of its photographs is missing.
    """
    cutouts = [grabcut_object(spec) for spec in GRABCUT_SPECS]
    cutouts.extend(coin_cutouts())
    logger.debug("cut %d objects out of the scikit-image photographs", len(cutouts))
    return tuple(cutouts)


def class_names() -> list[str]:
    """Returns the object classes in class-id order (the order of first appearance)."""
    names: list[str] = []
    for spec in GRABCUT_SPECS:
        if spec.class_name not in names:
            names.append(spec.class_name)
    names.append("coin")
    return names


@functools.lru_cache(maxsize=1)
def load_backgrounds() -> tuple[np.ndarray, ...]:
    """Returns the background photographs as ``(H, W, 3) uint8`` BGR arrays.

    Raises:
        DatasetError: scikit-image or one of its photographs is missing.
    """
    backgrounds = [read_photo(name) for name in BACKGROUND_FILES]
    for name, (x0, y0, x1, y1) in BACKGROUND_REGIONS:
        backgrounds.append(np.ascontiguousarray(read_photo(name)[y0:y1, x0:x1]))
    return tuple(backgrounds)


def contact_sheet(cell_px: int = 160, columns: int = 8) -> np.ndarray:
    """Draws every cut-out on a grey checkerboard, for looking at the masks.

    Returns:
        ``(H, W, 3) uint8`` BGR image, one cell per cut-out with its class name.
    """
    cutouts = load_cutouts()
    rows = -(-len(cutouts) // columns)
    sheet = np.full((rows * cell_px, columns * cell_px, 3), 255, np.uint8)
    yy, xx = np.mgrid[0:cell_px, 0:cell_px]
    checker = np.where(((yy // 8 + xx // 8) % 2)[..., None] == 0, 90, 160).astype(np.uint8)
    for index, cutout in enumerate(cutouts):
        scale = (cell_px - 20) / max(cutout.mask.shape)
        size = (
            max(1, round(cutout.mask.shape[1] * scale)),
            max(1, round(cutout.mask.shape[0] * scale)),
        )
        image = cv2.resize(cutout.image, size, interpolation=cv2.INTER_AREA)
        mask = cv2.resize(cutout.mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
        cell = np.repeat(checker, 3, axis=2)
        region = cell[14 : 14 + size[1], 4 : 4 + size[0]]
        region[mask > 0] = image[mask > 0]
        cv2.putText(
            cell,
            cutout.class_name,
            (4, 11),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4,
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
        row, column = divmod(index, columns)
        sheet[row * cell_px : (row + 1) * cell_px, column * cell_px : (column + 1) * cell_px] = cell
    return sheet
