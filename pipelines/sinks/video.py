"""Annotated video sink."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2

from ubiq.errors import ConfigError
from ubiq.pipelines.sinks.annotate import annotate
from ubiq.types import Detections, Frame

logger = logging.getLogger(__name__)

_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "mp4v"}


class VideoSink:
    """Writes annotated frames to a video file (``.mp4``, ``.avi``, ``.mkv``).

    The writer opens on the first frame (its size sets the video's) and is released on
    ``close``, so a stopped run leaves a playable file.

    Args:
        path: Output file; its suffix picks the codec.
        fps: Frame rate written into the file (default 30).

    Raises:
        ConfigError: If the suffix is unsupported or the file cannot be written.
    """

    def __init__(self, path: str | Path, *, fps: float | None = None) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in _FOURCC:
            raise ConfigError(
                f"--save: unsupported video suffix {suffix or '(none)'!r} for {self.path}; "
                f"use one of {', '.join(sorted(_FOURCC))}"
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"--save: cannot create {self.path.parent}: {error}") from error
        self.fps = fps if fps and fps > 0 else 30.0
        self._fourcc = cv2.VideoWriter_fourcc(*_FOURCC[suffix])
        self._writer: cv2.VideoWriter | None = None
        self.frames_written = 0

    def _open(self, width: int, height: int) -> cv2.VideoWriter:
        writer = cv2.VideoWriter(str(self.path), self._fourcc, self.fps, (width, height))
        if not writer.isOpened():
            raise ConfigError(f"--save: cannot write video {self.path}")
        return writer

    def write(self, frame: Frame, detections: Detections) -> None:
        if self._writer is None:
            self._writer = self._open(frame.width, frame.height)
        self._writer.write(annotate(frame.image, detections))
        self.frames_written += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            logger.info("wrote %d frames to %s", self.frames_written, self.path)
