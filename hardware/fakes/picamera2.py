"""A fake ``picamera2`` module following the real API (raspberrypi/picamera2).

It serves a known synthetic scene so tests can check geometry and channel order: a gray
background (64, 64, 64) with a pure red patch (true R=255, G=0, B=0) covering rows
``[H/4, H/2)`` and columns ``[W/4, W/2)``, and a frame counter (``frame_number % 256``) in
the true-green channel of the top-left 8 x 8 block.

``capture_array`` returns the bytes the real library returns, which are in the opposite
order of the format name: ``RGB888`` gives B,G,R; ``BGR888`` gives R,G,B; ``XRGB8888``
gives B,G,R,X; ``XBGR8888`` gives R,G,B,X. It paces frames at the configured
``FrameRate`` control, as a real sensor would.

Module-level state, reset with :func:`reset`: ``CAMERAS`` (what
``Picamera2.global_camera_info()`` reports) and ``instances`` (every ``Picamera2`` made).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

BACKGROUND_LEVEL = 64
COUNTER_BLOCK_PX = 8
RED_RGB = (255, 0, 0)

_DEFAULT_CAMERAS: list[dict[str, Any]] = [
    {
        "Model": "imx708",
        "Location": 2,
        "Rotation": 180,
        "Id": "/base/axi/pcie@120000/rp1/i2c@88000/imx708@1a",
        "Num": 0,
    }
]

CAMERAS: list[dict[str, Any]] = [dict(camera) for camera in _DEFAULT_CAMERAS]
instances: list[Picamera2] = []
fail_after_frames: int | None = None
"""When set, each camera's ``capture_array`` raises ``RuntimeError`` after this many frames
(a dropped ribbon cable or a crashed pipeline), so tests can exercise reconnects."""

# Bytes per pixel and, per output byte, which true RGB channel it holds (3 means padding X).
_LAYOUTS = {
    "RGB888": (2, 1, 0),
    "BGR888": (0, 1, 2),
    "XRGB8888": (2, 1, 0, 3),
    "XBGR8888": (0, 1, 2, 3),
}


def reset(cameras: list[dict[str, Any]] | None = None) -> None:
    """Restores the camera list (default: one imx708) and forgets earlier instances.

    Args:
        cameras: What ``global_camera_info()`` reports from now on.
    """
    global fail_after_frames
    CAMERAS[:] = [dict(camera) for camera in (cameras if cameras is not None else _DEFAULT_CAMERAS)]
    instances.clear()
    fail_after_frames = None


def scene_region(size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Returns the red patch as ``(x0, y0, x1, y1)`` pixels for a ``(width, height)`` frame."""
    width, height = size
    return width // 4, height // 4, width // 2, height // 2


def render_scene_rgb(size: tuple[int, int], frame_number: int) -> np.ndarray:
    """Returns the scene as true ``(H, W, 3)`` R,G,B uint8 for a ``(width, height)`` size."""
    width, height = size
    image = np.full((height, width, 3), BACKGROUND_LEVEL, np.uint8)
    x0, y0, x1, y1 = scene_region(size)
    image[y0:y1, x0:x1] = RED_RGB
    image[:COUNTER_BLOCK_PX, :COUNTER_BLOCK_PX, 1] = frame_number % 256
    return image


class Picamera2:
    """Fake of ``picamera2.Picamera2`` for one camera.

    Args:
        camera_num: Index into ``global_camera_info()``.

    Raises:
        IndexError: If ``camera_num`` is out of range (the real library indexes its list).
        RuntimeError: If the camera is already held by another instance.
    """

    def __init__(self, camera_num: int = 0, tuning: Any = None) -> None:
        info = Picamera2.global_camera_info()
        self.camera_num = camera_num
        self.camera_properties = dict(info[camera_num])
        for other in instances:
            if other.camera_num == camera_num and not other.is_closed:
                raise RuntimeError("Failed to acquire camera: Device or resource busy")
        self.camera_config: dict[str, Any] | None = None
        self.started = False
        self.is_closed = False
        self.calls: list[str] = []
        self.frames_captured = 0
        self._lock = threading.Lock()
        self._next_frame_monotonic = 0.0
        instances.append(self)

    @staticmethod
    def global_camera_info() -> list[dict[str, Any]]:
        """Lists the cameras as the real library does: dicts with Model, Location, Rotation,
        Id and Num."""
        return [dict(camera) for camera in CAMERAS]

    def create_video_configuration(
        self,
        main: dict[str, Any] | None = None,
        lores: dict[str, Any] | None = None,
        raw: dict[str, Any] | None = None,
        transform: Any = None,
        colour_space: Any = None,
        buffer_count: int = 6,
        controls: dict[str, Any] | None = None,
        display: str | None = "main",
        encode: str | None = "main",
        queue: bool = True,
        sensor: dict[str, Any] | None = None,
        use_case: str = "video",
    ) -> dict[str, Any]:
        """Returns a configuration dict shaped like the real one (defaults: XBGR8888, 1280x720).

        Raises:
            ValueError: If the main stream's format is not one the fake knows.
        """
        main_stream = {"format": "XBGR8888", "size": (1280, 720), **(main or {})}
        if main_stream["format"] not in _LAYOUTS:
            raise ValueError(f"Format {main_stream['format']} not supported")
        width, height = main_stream["size"]
        bytes_per_pixel = len(_LAYOUTS[main_stream["format"]])
        main_stream["stride"] = width * bytes_per_pixel
        main_stream["framesize"] = width * bytes_per_pixel * height
        all_controls = {"NoiseReductionMode": 1, "FrameDurationLimits": (33333, 33333)}
        all_controls.update(controls or {})
        return {
            "use_case": use_case,
            "transform": transform,
            "colour_space": colour_space,
            "buffer_count": buffer_count,
            "queue": queue,
            "main": main_stream,
            "lores": lores,
            "raw": raw if raw is not None else {"format": "SBGGR10_CSI2P", "size": (1536, 864)},
            "controls": all_controls,
            "sensor": sensor or {},
            "display": display,
            "encode": encode,
        }

    def configure(self, camera_config: dict[str, Any] | None = None) -> None:
        """Applies a configuration; not allowed while the camera runs.

        Raises:
            RuntimeError: If the camera is started or closed.
        """
        self.calls.append("configure")
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        if self.is_closed:
            raise RuntimeError("Camera is closed")
        self.camera_config = camera_config or self.create_video_configuration()

    def start(self, config: dict[str, Any] | None = None, show_preview: bool = False) -> None:
        """Starts the camera (configuring it first when not yet configured).

        Raises:
            RuntimeError: If the camera is closed.
        """
        self.calls.append("start")
        if self.is_closed:
            raise RuntimeError("Camera is closed")
        if config is not None or self.camera_config is None:
            self.configure(config)
        self.started = True
        self._next_frame_monotonic = time.monotonic()

    def _frame_interval_s(self) -> float:
        controls = (self.camera_config or {}).get("controls", {})
        frame_rate = controls.get("FrameRate")
        if frame_rate:
            return 1.0 / float(frame_rate)
        return controls.get("FrameDurationLimits", (33333, 33333))[0] / 1e6

    def capture_array(self, name: str = "main", wait: float | None = None) -> np.ndarray:
        """Waits for the next frame and returns the named stream as the real library does.

        Args:
            name: Stream name; only ``"main"`` is configured by the fake.
            wait: Ignored (the real library's timeout).

        Returns:
            ``(H, W, 3)`` or ``(H, W, 4)`` uint8, bytes in the opposite order of the format name.

        Raises:
            RuntimeError: If the camera was not started, or after ``fail_after_frames``.
            KeyError: If ``name`` is not a configured stream.
        """
        if not self.started:
            raise RuntimeError("Camera must be started before capturing")
        stream = (self.camera_config or {}).get(name)
        if not stream:
            raise KeyError(name)
        if fail_after_frames is not None and self.frames_captured >= fail_after_frames:
            raise RuntimeError("Camera frontend has timed out!")
        with self._lock:
            delay_s = self._next_frame_monotonic - time.monotonic()
            if delay_s > 0:
                time.sleep(delay_s)
            self._next_frame_monotonic = (
                max(self._next_frame_monotonic, time.monotonic()) + self._frame_interval_s()
            )
            self.frames_captured += 1
            frame_number = self.frames_captured
        rgb = render_scene_rgb(tuple(stream["size"]), frame_number)
        padded = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
        return np.ascontiguousarray(padded[:, :, list(_LAYOUTS[stream["format"]])])

    def stop(self) -> None:
        """Stops the camera; harmless when already stopped."""
        self.calls.append("stop")
        self.started = False

    def close(self) -> None:
        """Stops and releases the camera; harmless when already closed."""
        self.calls.append("close")
        self.started = False
        self.is_closed = True
