"""The Raspberry Pi camera through picamera2, as a live source (``picam``, ``picam:1``).

picamera2 needs libcamera's Python bindings, which are not on PyPI: on Raspberry Pi OS
install ``python3-picamera2`` with apt and make the venv with
``python3 -m venv --system-site-packages``. picamera2 is imported only when a camera is
opened, never at import time.

Channel order in picamera2 is the opposite of the format name: ``RGB888`` arrays are
B,G,R (used as they are), ``BGR888`` are R,G,B, ``XRGB8888`` are B,G,R,X and ``XBGR8888``
are R,G,B,X. Frames always come out as ``(H, W, 3)`` uint8 BGR.
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType
from typing import Any

import cv2
import numpy as np

from ubiq.errors import ConfigError, SourceError

from .base import ArrayCapture, check_positive
from .video import LiveSource

logger = logging.getLogger(__name__)

PICAMERA2_FIX = (
    "on Raspberry Pi OS: sudo apt install python3-picamera2, "
    "and make the venv with python3 -m venv --system-site-packages"
)
PICAM_FORMATS = ("RGB888", "BGR888", "XRGB8888", "XBGR8888")
"""Main-stream formats the source accepts; ``RGB888`` needs no conversion."""


def import_picamera2() -> ModuleType:
    """Imports picamera2 (and through it libcamera).

    Returns:
        The ``picamera2`` module.

    Raises:
        SourceError: If picamera2 or libcamera is not importable, with the fix in one line.
    """
    try:
        return importlib.import_module("picamera2")
    except ImportError as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise SourceError(f"picamera2 is not importable ({reason}); {PICAMERA2_FIX}") from error


def picamera_to_bgr(array: np.ndarray, stream_format: str) -> np.ndarray:
    """Converts a picamera2 ``capture_array`` result to ``(H, W, 3)`` uint8 BGR.

    Args:
        array: ``(H, W, 3)`` for ``RGB888``/``BGR888`` or ``(H, W, 4)`` for ``XRGB8888``/
            ``XBGR8888``, uint8.
        stream_format: The main stream's format name.

    Raises:
        SourceError: If the array's shape does not fit the format.
    """
    channels = 4 if stream_format.startswith("X") else 3
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != channels:
        raise SourceError(
            f"picamera2 gave a {array.dtype} array of shape {array.shape} for format "
            f"{stream_format}, expected (H, W, {channels}) uint8"
        )
    if stream_format == "RGB888":
        return array
    if stream_format == "XRGB8888":
        return np.ascontiguousarray(array[:, :, :3])
    if stream_format == "BGR888":
        return cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    return cv2.cvtColor(array, cv2.COLOR_RGBA2BGR)


class PicameraCapture(ArrayCapture):
    """A ``CaptureLike`` over one started ``Picamera2``; ``release()`` stops and closes it.

    Args:
        camera: A configured and started ``Picamera2``.
        stream_format: The main stream's format.
        size: ``(width, height)`` of the main stream.
        fps: The requested frame rate.
    """

    def __init__(self, camera: Any, stream_format: str, size: tuple[int, int], fps: float) -> None:
        self._camera: Any | None = camera
        self.stream_format = stream_format
        self.size = size
        self.fps = fps

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        """Whether the camera is held."""
        return self._camera is not None

    def read(self) -> tuple[bool, np.ndarray | None]:
        """Captures the next frame of the main stream.

        Returns:
            ``(True, image)`` with ``(H, W, 3)`` uint8 BGR, or ``(False, None)`` once released.

        Raises:
            SourceError: If picamera2 fails to capture, in one line.
        """
        camera = self._camera
        if camera is None:
            return False, None
        try:
            array = camera.capture_array("main")
        except (RuntimeError, OSError, TimeoutError) as error:
            raise SourceError(f"picamera2 capture failed: {error}") from error
        return True, picamera_to_bgr(array, self.stream_format)

    def release(self) -> None:
        """Stops and closes the camera; safe to call twice."""
        camera, self._camera = self._camera, None
        if camera is None:
            return
        try:
            camera.stop()
        finally:
            camera.close()


def check_camera_index(module: ModuleType, camera_num: int) -> None:
    """Checks ``camera_num`` against ``Picamera2.global_camera_info()``.

    Raises:
        SourceError: If no such camera exists, naming the index and how many there are.
    """
    cameras = module.Picamera2.global_camera_info()
    if 0 <= camera_num < len(cameras):
        return
    if not cameras:
        raise SourceError(
            f"pi camera {camera_num} not found: libcamera sees no camera; check the ribbon "
            "cable and `rpicam-hello --list-cameras`"
        )
    models = ", ".join(f"{index}: {info.get('Model', '?')}" for index, info in enumerate(cameras))
    raise SourceError(
        f"pi camera {camera_num} not found: {len(cameras)} camera(s) exist ({models}); "
        f"use picam:0 to picam:{len(cameras) - 1}"
    )


def open_picamera(
    camera_num: int, size: tuple[int, int], fps: float, stream_format: str
) -> PicameraCapture:
    """Opens, configures and starts one Pi camera.

    Args:
        camera_num: Index into ``Picamera2.global_camera_info()``.
        size: ``(width, height)`` of the main stream.
        fps: Frame rate (the ``FrameRate`` control).
        stream_format: One of :data:`PICAM_FORMATS`.

    Returns:
        A started capture.

    Raises:
        SourceError: If picamera2 is missing, the index is out of range or the camera
            cannot be acquired or started.
    """
    module = import_picamera2()
    check_camera_index(module, camera_num)
    try:
        camera = module.Picamera2(camera_num)
    except (RuntimeError, OSError, IndexError) as error:
        raise SourceError(
            f"cannot acquire pi camera {camera_num}: {error} (is another program using it?)"
        ) from error
    try:
        config = camera.create_video_configuration(
            main={"size": tuple(size), "format": stream_format}, controls={"FrameRate": fps}
        )
        camera.configure(config)
        camera.start()
    except (RuntimeError, OSError, ValueError) as error:
        camera.close()
        raise SourceError(
            f"cannot start pi camera {camera_num} at {size[0]}x{size[1]} {stream_format} "
            f"{fps:g} fps: {error}"
        ) from error
    return PicameraCapture(camera, stream_format, (int(size[0]), int(size[1])), float(fps))


class PicamSource(LiveSource):
    """A Raspberry Pi camera (CSI ribbon or AI camera) read through picamera2.

    Latest-frame-only reading, reconnect with backoff and stop/close come from
    :class:`LiveSource`.

    Args:
        camera_num: Camera index (``picam:1`` -> 1).
        size: ``(width, height)`` of the frames.
        fps: Requested frame rate.
        stream_format: picamera2 main-stream format, one of :data:`PICAM_FORMATS`.
        vid_stride, reconnect, stale_after_s, backoff_initial_s, backoff_max_s: As in
            :class:`LiveSource`.

    Raises:
        ConfigError: If an option is out of range, naming it.
    """

    def __init__(
        self,
        camera_num: int = 0,
        *,
        size: tuple[int, int] = (640, 480),
        fps: float = 30.0,
        stream_format: str = "RGB888",
        vid_stride: int = 1,
        reconnect: bool = True,
        stale_after_s: float = 10.0,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 30.0,
    ) -> None:
        if isinstance(camera_num, bool) or not isinstance(camera_num, int) or camera_num < 0:
            raise ConfigError(f"camera_num must be an integer >= 0, got {camera_num!r}")
        if len(size) != 2:
            raise ConfigError(f"size must be (width, height), got {size!r}")
        check_positive("size width", size[0], integer=True)
        check_positive("size height", size[1], integer=True)
        check_positive("fps", fps)
        if stream_format not in PICAM_FORMATS:
            raise ConfigError(
                f"stream_format must be one of {', '.join(PICAM_FORMATS)}, got {stream_format!r}"
            )
        self.camera_num = camera_num
        self.size = (int(size[0]), int(size[1]))
        self.requested_fps = float(fps)
        self.stream_format = stream_format
        self._open_error: SourceError | None = None
        super().__init__(
            self._open_capture,
            source_id=f"picam:{camera_num}",
            description=f"pi camera {camera_num}",
            open_hint="check the ribbon cable and `rpicam-hello --list-cameras`",
            vid_stride=vid_stride,
            reconnect=reconnect,
            stale_after_s=stale_after_s,
            backoff_initial_s=backoff_initial_s,
            backoff_max_s=backoff_max_s,
        )

    def _open_capture(self) -> PicameraCapture:
        try:
            return open_picamera(self.camera_num, self.size, self.requested_fps, self.stream_format)
        except SourceError as error:
            self._open_error = error
            raise

    def _open(self) -> None:
        # Missing picamera2 or a bad index is a setup fault: say exactly that, no retries.
        check_camera_index(import_picamera2(), self.camera_num)
        self._open_error = None
        try:
            super()._open()
        except SourceError as error:
            if self._open_error is None:
                raise
            raise SourceError(str(self._open_error)) from error
