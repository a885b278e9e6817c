"""A live window with the annotated frames (``--show``)."""

from __future__ import annotations

import contextlib
import os
import sys

import cv2

from ubiq.errors import ConfigError
from ubiq.pipelines.sinks.annotate import annotate
from ubiq.types import Detections, Frame


class WindowSink:
    """Shows annotated frames in an OpenCV window; ``q`` or Esc stops the run.

    Raises:
        ConfigError: If there is no display or OpenCV was built without a GUI.
    """

    def __init__(self, title: str = "ubiq") -> None:
        if sys.platform.startswith("linux") and not (
            os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
        ):
            raise ConfigError("--show needs a display, and DISPLAY is not set; use --save instead")
        self.title = title
        try:
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)
        except cv2.error as error:
            raise ConfigError(
                "--show needs OpenCV with GUI support; this build has none "
                "(pip install opencv-python instead of opencv-python-headless)"
            ) from error
        self.stop_requested = False

    def write(self, frame: Frame, detections: Detections) -> None:
        cv2.imshow(self.title, annotate(frame.image, detections))
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            self.stop_requested = True

    def close(self) -> None:
        with contextlib.suppress(cv2.error):  # the window may already be gone
            cv2.destroyWindow(self.title)
