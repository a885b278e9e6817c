"""A live window with the annotated frames (``ubiq detect --show``)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence

import cv2

from ubiq.errors import ConfigError
from ubiq.pipelines.sinks.annotate import Annotator, draw
from ubiq.types import FrameResult


class WindowSink:
    """Shows annotated frames in an OpenCV window; ``q`` or Esc stops the run.

    Args:
        title: Window title.
        annotators: What to draw (default: masks, then boxes).

    Raises:
        ConfigError: If there is no display or OpenCV was built without a GUI.
    """

    def __init__(
        self, title: str = "ubiq", *, annotators: Sequence[Annotator] | None = None
    ) -> None:
        if sys.platform.startswith("linux") and not (
            os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
        ):
            raise ConfigError(
                "a window needs a display, and DISPLAY is not set; save a video instead"
            )
        self.title = title
        self.annotators = annotators
        try:
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)
        except cv2.error as error:
            raise ConfigError(
                "a window needs OpenCV with GUI support; this build has none "
                "(pip install opencv-python instead of opencv-python-headless)"
            ) from error
        self.stop_requested = False

    def write(self, result: FrameResult) -> None:
        if result.final:  # no new frame, only end-of-stream events
            return
        cv2.imshow(self.title, draw(result, self.annotators))
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            self.stop_requested = True

    def close(self) -> None:
        with contextlib.suppress(cv2.error):  # the window may already be gone
            cv2.destroyWindow(self.title)
