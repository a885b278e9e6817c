"""Annotated video sink."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ubiq.errors import ConfigError, UbiqError
from ubiq.pipelines.sinks.annotate import Annotator, draw
from ubiq.types import FrameResult

logger = logging.getLogger(__name__)

_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "mp4v"}


def check_video_path(path: str | Path) -> str:
    """Returns the lower-case suffix of a video path, checked before anything is opened.

    Raises:
        ConfigError: If the suffix is not one the writer supports.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in _FOURCC:
        raise ConfigError(
            f"unsupported video suffix {suffix or '(none)'!r} for {path}; "
            f"use one of {', '.join(sorted(_FOURCC))}"
        )
    return suffix


class VideoSink:
    """Writes annotated frames to a video file (``.mp4``, ``.avi``, ``.mkv``).

    ``.mp4`` is H.264 where this machine has an encoder (PyAV's libx264 or OpenH264, a Pi's
    ``h264_v4l2m2m``, OpenCV's ``avc1``; see :func:`ubiq.pipelines.sinks.clips.video_encoder`),
    cropped to even sides, so a browser plays it; without one it is MPEG-4 Part 2 (``mp4v``)
    with a warning once. ``.avi`` and ``.mkv`` are ``MJPG`` / ``mp4v`` through OpenCV.

    The writer opens at once when ``frame_size`` is known (so an unwritable path fails
    before the run), else on the first frame, and is released on ``close``, so a stopped
    run leaves a playable file. Frames of another size (a folder of mixed images) are
    letterboxed to the video's size.

    Args:
        path: Output file; its suffix picks the codec.
        fps: Frame rate written into the file (default 30).
        frame_size: ``(width, height)`` of the video, when known in advance.
        annotators: What to draw on each frame (default: masks, then boxes; ``[]`` writes
            the frames as they are).

    Raises:
        ConfigError: If the suffix is unsupported or the file cannot be written.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        fps: float | None = None,
        frame_size: tuple[int, int] | None = None,
        annotators: Sequence[Annotator] | None = None,
    ) -> None:
        self.path = Path(path)
        suffix = check_video_path(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"cannot create {self.path.parent}: {error}") from error
        self.annotators = annotators
        self.fps = fps if fps and fps > 0 else 30.0
        self._fourcc = cv2.VideoWriter_fourcc(*_FOURCC[suffix])
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None
        self._crop = False
        self.frames_written = 0
        self.frames_resized = 0
        if frame_size is not None:
            self._writer = self._open(*frame_size)

    def _open(self, width: int, height: int):
        if self.path.suffix.lower() == ".mp4":
            # H.264 where there is an encoder (browsers play it), else mp4v with a warning.
            from ubiq.pipelines.sinks.clips import open_video_writer

            even = (width - width % 2, height - height % 2)
            try:
                writer = open_video_writer(self.path, self.fps, even)
            except OSError as error:
                raise ConfigError(f"cannot write video {self.path}: {error}") from error
            self._size = even
            self._crop = (width, height) != even
            return writer
        writer = cv2.VideoWriter(str(self.path), self._fourcc, self.fps, (width, height))
        if not writer.isOpened():
            raise ConfigError(f"cannot write video {self.path}")
        self._size = (width, height)
        return writer

    def write(self, result: FrameResult) -> None:
        if result.final:  # no new frame, only end-of-stream events
            return
        frame = result.frame
        if self._writer is None:
            self._writer = self._open(frame.width, frame.height)
        image = draw(result, self.annotators)
        if self._crop and (frame.width - frame.width % 2, frame.height - frame.height % 2) == (
            self._size
        ):
            image = image[: self._size[1], : self._size[0]]  # H.264 wants even sides
        elif (frame.width, frame.height) != self._size:
            image = _fit(image, self._size)
            if self.frames_resized == 0:
                logger.warning(
                    "frame %d is %dx%d, the video is %dx%d; letterboxing it",
                    frame.index,
                    frame.width,
                    frame.height,
                    *self._size,
                )
            self.frames_resized += 1
        self._writer.write(image)
        self.frames_written += 1

    def close(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            close = getattr(writer, "close", None) or writer.release
            try:
                close()
            except OSError as error:
                raise UbiqError(f"cannot finish video {self.path}: {error}") from error
            logger.info("wrote %d frames to %s", self.frames_written, self.path)


def _fit(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Letterboxes ``image`` into a black ``size`` (width, height) canvas."""
    width, height = size
    scale = min(width / image.shape[1], height / image.shape[0])
    new_width = max(1, round(image.shape[1] * scale))
    new_height = max(1, round(image.shape[0] * scale))
    canvas = np.zeros((height, width, 3), np.uint8)
    top, left = (height - new_height) // 2, (width - new_width) // 2
    canvas[top : top + new_height, left : left + new_width] = cv2.resize(
        image, (new_width, new_height), interpolation=cv2.INTER_AREA
    )
    return canvas
