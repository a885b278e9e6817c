"""Still-image sources: one image file, every image in a folder, or a glob pattern.

Images are decoded ahead of the consumer in a thread, in natural name order
(``frame2.png`` before ``frame10.png``). Frame ``index`` is the image's position in
that order; an image that cannot be decoded is skipped with a warning.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from ubiq.errors import SourceError
from ubiq.types import Frame

from .base import IMAGE_EXTENSIONS, PrefetchingSource

logger = logging.getLogger(__name__)

GLOB_CHARACTERS = ("*", "?", "[")


def is_image_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` has one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _natural_key(path: Path) -> list[int | str]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", str(path))]


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Returns the images directly inside ``folder``, in natural name order.

    Raises:
        SourceError: If ``folder`` is not a directory or holds no image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise SourceError(f"source folder not found: {folder}")
    paths = [path for path in folder.iterdir() if path.is_file() and is_image_path(path)]
    if not paths:
        raise SourceError(
            f"no images in folder {folder} (looked for {', '.join(IMAGE_EXTENSIONS)})"
        )
    return sorted(paths, key=_natural_key)


def glob_images(pattern: str) -> list[Path]:
    """Returns the images matching ``pattern`` (``**`` recurses), in natural name order.

    Raises:
        SourceError: If no image matches ``pattern``.
    """
    matches = glob.glob(os.path.expanduser(pattern), recursive=True)
    paths = [Path(match) for match in matches if Path(match).is_file() and is_image_path(match)]
    if not paths:
        raise SourceError(
            f"no images match {pattern!r} ({len(matches)} path(s) matched, "
            f"none ending in {', '.join(IMAGE_EXTENSIONS)})"
        )
    return sorted(paths, key=_natural_key)


def _read_image(path: Path, *, warn: bool = True) -> np.ndarray | None:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        logger.log(
            logging.WARNING if warn else logging.DEBUG,
            "skipping %s: cannot decode it as an image",
            path,
        )
    return image


class ImageSource(PrefetchingSource):
    """A sequence of still images read as frames.

    ``fps`` is ``None``; ``timestamp_ns`` is ``time.monotonic_ns()`` when the image was
    decoded; ``frame_size`` is the size of the first image. Each frame's ``index`` is the
    image's position in ``paths`` (an image that does not decode is skipped and leaves a
    gap, so numbers never shift) and its ``path`` is the file it came from.

    Args:
        paths: Image files in the order to yield them.
        source_id: Name carried by every frame; defaults to the first path, or its folder
            when there are several.
        queue_size: How many decoded images may wait for the consumer.

    Raises:
        SourceError: If ``paths`` is empty.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        source_id: str | None = None,
        queue_size: int = 4,
    ) -> None:
        self.paths = [Path(path) for path in paths]
        if not self.paths:
            raise SourceError("paths must name at least one image, got an empty list")
        if source_id is None:
            source_id = str(self.paths[0] if len(self.paths) == 1 else self.paths[0].parent)
        super().__init__(source_id, queue_size=queue_size)
        self._first: tuple[int, np.ndarray] | None = None

    def _open(self) -> None:
        skipped = []
        for position, path in enumerate(self.paths):
            if not path.is_file():
                raise SourceError(f"source file not found: {path}")
            # Quiet until one image decodes: if none does, the error alone says it.
            image = _read_image(path, warn=False)
            if image is None:
                skipped.append(path)
            else:
                for bad in skipped:
                    logger.warning("skipping %s: cannot decode it as an image", bad)
                self._first = (position, image)
                self._frame_size = (int(image.shape[1]), int(image.shape[0]))
                logger.info("opened %d image(s) from %s", len(self.paths), self.source_id)
                return
        if len(self.paths) == 1:
            raise SourceError(f"cannot decode image {self.paths[0]}")
        raise SourceError(f"none of the {len(self.paths)} images of {self.source_id} decodes")

    def _produce(self) -> Iterator[Frame]:
        if self._first is None:
            return
        start, image = self._first
        self._first = None
        yield Frame(image, start, time.monotonic_ns(), self.source_id, str(self.paths[start]))
        for index in range(start + 1, len(self.paths)):
            if self._stop_event.is_set():
                return
            image = _read_image(self.paths[index])
            if image is not None:
                yield Frame(
                    image, index, time.monotonic_ns(), self.source_id, str(self.paths[index])
                )

    def _release(self) -> None:
        self._first = None
