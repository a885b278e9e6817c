"""Annotated images, one file per frame (``ubiq detect --save-images DIR``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import cv2

from ubiq.errors import ConfigError, UbiqError
from ubiq.pipelines.sinks.annotate import Annotator, draw
from ubiq.types import FrameResult

logger = logging.getLogger(__name__)

_WRITABLE = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class ImageSink:
    """Writes each annotated frame to ``folder``: an image keeps its file name (a second
    image of the same name gets ``-INDEX``), other frames are ``000123.jpg``.

    Args:
        folder: Output folder (created).
        annotators: What to draw (default: masks, then boxes).
        quality: JPEG quality, 1-100.

    Raises:
        ConfigError: If the folder cannot be created or ``quality`` is out of range.
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        annotators: Sequence[Annotator] | None = None,
        quality: int = 90,
    ) -> None:
        if not 1 <= int(quality) <= 100:
            raise ConfigError(f"quality must be in 1-100, got {quality}")
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"cannot create folder {self.folder}: {error.strerror}") from error
        self.annotators = annotators
        self.quality = int(quality)
        self.written: list[Path] = []
        self._names: set[str] = set()

    def _target(self, result: FrameResult) -> Path:
        source = getattr(result.frame, "path", None)
        if source is None:
            return self.folder / f"{result.index:06d}.jpg"
        source_path = Path(source)
        suffix = source_path.suffix.lower() if source_path.suffix.lower() in _WRITABLE else ".jpg"
        name = source_path.stem + suffix
        if name in self._names:
            name = f"{source_path.stem}-{result.index}{suffix}"
        target = self.folder / name
        if target.exists() and target.resolve() == source_path.resolve():
            raise UbiqError(f"refusing to overwrite the source image {source} with its annotation")
        return target

    def write(self, result: FrameResult) -> None:
        if result.final:  # no new frame, only end-of-stream events
            return
        target = self._target(result)
        image = draw(result, self.annotators)
        options = (
            [cv2.IMWRITE_JPEG_QUALITY, self.quality] if target.suffix in (".jpg", ".jpeg") else []
        )
        if not cv2.imwrite(str(target), image, options):
            raise UbiqError(f"cannot write image {target}")
        self._names.add(target.name)
        self.written.append(target)

    def close(self) -> None:
        if self.written:
            logger.info("wrote %d images to %s", len(self.written), self.folder)


class CallbackSink:
    """Calls ``function(result)`` for every finished frame (a sink in one line).

    Args:
        function: Receives each :class:`~ubiq.types.FrameResult`.

    Raises:
        ConfigError: If ``function`` is not callable.
    """

    def __init__(self, function) -> None:
        if not callable(function):
            raise ConfigError(f"function must be callable, got {type(function).__name__}")
        self.function = function

    def write(self, result: FrameResult) -> None:
        self.function(result)

    def close(self) -> None:
        """Nothing to release."""
