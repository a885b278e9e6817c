"""GStreamer pipelines as live sources: ``gst:PIPELINE`` and the Jetson CSI camera ``csi[:N]``.

Two routes, chosen when the pipeline opens:

- OpenCV, when its build has GStreamer (JetPack's system OpenCV does; pip's
  ``opencv-python`` does not): ``cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)``.
- PyGObject otherwise: ``Gst.parse_launch`` and an ``appsink`` pulled with
  ``try-pull-sample``; errors posted on the bus become one-line ``SourceError``s.

A pipeline without an ``appsink`` gets :data:`APPSINK_SUFFIX` appended, so
``gst:videotestsrc`` works as typed. Every GStreamer source is live: latest frame only,
reconnect with backoff (a finite pipeline that reaches its end is restarted unless
``reconnect=False``). Nothing is imported or probed until a pipeline opens.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import cv2
import numpy as np

from ubiq.errors import ConfigError, SourceError

from .base import ArrayCapture, CaptureLike, check_positive
from .video import LiveSource

logger = logging.getLogger(__name__)

APPSINK_SUFFIX = (
    "videoconvert ! video/x-raw,format=BGR ! appsink name=ubiqsink drop=true max-buffers=1 "
    "sync=false"
)
"""Appended (after ``!``) to a pipeline that has no appsink of its own."""

PYGOBJECT_FIX = (
    "install GStreamer and PyGObject: sudo apt install libgirepository1.0-dev libcairo2-dev "
    "gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good "
    "gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0, then in the venv: "
    'pip install "pygobject<3.51"'
)
CSI_FIX = "no element nvarguscamerasrc: csi sources need a Jetson with JetPack's GStreamer"

# Per GStreamer raw format: bytes per pixel and the OpenCV conversion to BGR (None: as is).
_RAW_FORMATS: dict[str, tuple[int, int | None]] = {
    "BGR": (3, None),
    "RGB": (3, cv2.COLOR_RGB2BGR),
    "BGRx": (4, cv2.COLOR_BGRA2BGR),
    "BGRA": (4, cv2.COLOR_BGRA2BGR),
    "RGBx": (4, cv2.COLOR_RGBA2BGR),
    "RGBA": (4, cv2.COLOR_RGBA2BGR),
    "GRAY8": (1, cv2.COLOR_GRAY2BGR),
}
_APPSINK_PATTERN = re.compile(r"(^|[!\s])appsink(\s|$)")


def opencv_has_gstreamer() -> bool:
    """Whether this OpenCV build can open GStreamer pipelines (``GStreamer: YES``)."""
    match = re.search(r"GStreamer:\s*(\w+)", cv2.getBuildInformation())
    return match is not None and match.group(1).upper() == "YES"


def import_gst() -> Any:
    """Imports and initialises ``gi.repository.Gst``.

    Returns:
        The ``Gst`` module.

    Raises:
        SourceError: If PyGObject or GStreamer's introspection data is missing, with the fix.
    """
    try:
        import gi

        gi.require_version("Gst", "1.0")
        from gi.repository import Gst
    except (ImportError, ValueError) as error:
        raise SourceError(
            f"GStreamer through PyGObject is not available ({error}); {PYGOBJECT_FIX}"
        ) from error
    Gst.init(None)
    return Gst


def with_appsink(pipeline: str) -> str:
    """Returns ``pipeline`` ending in an appsink, appending :data:`APPSINK_SUFFIX` if it has none.

    Args:
        pipeline: A ``gst-launch-1.0`` style description.
    """
    pipeline = pipeline.strip().rstrip("!").strip()
    if _APPSINK_PATTERN.search(pipeline):
        return pipeline
    return f"{pipeline} ! {APPSINK_SUFFIX}"


def csi_pipeline(
    sensor_id: int = 0,
    *,
    size: tuple[int, int] = (1280, 720),
    fps: float = 30.0,
    flip_method: int = 0,
    sensor_size: tuple[int, int] = (1920, 1080),
) -> str:
    """Builds the Jetson CSI camera pipeline (nvarguscamerasrc -> nvvidconv -> BGR appsink).

    Args:
        sensor_id: The CSI sensor (``csi:1`` -> 1).
        size: ``(width, height)`` of the frames handed to ubiq.
        fps: Sensor frame rate.
        flip_method: ``nvvidconv`` flip-method (0 none, 2 rotate 180, ...).
        sensor_size: ``(width, height)`` captured from the sensor.

    Returns:
        A pipeline description ending in an appsink.
    """
    framerate = f"{round(fps * 1000)}/1000" if fps != int(fps) else f"{int(fps)}/1"
    return (
        f"nvarguscamerasrc sensor-id={sensor_id} ! "
        f"video/x-raw(memory:NVMM),width={sensor_size[0]},height={sensor_size[1]},"
        f"framerate={framerate} ! nvvidconv flip-method={flip_method} ! "
        f"video/x-raw,width={size[0]},height={size[1]},format=BGRx ! videoconvert ! "
        "video/x-raw,format=BGR ! appsink drop=1 max-buffers=1"
    )


def jetson_rtsp_pipeline(url: str, *, latency_ms: int = 200, codec: str = "h264") -> str:
    """Builds the Jetson RTSP pipeline with hardware decoding (nvv4l2decoder).

    Args:
        url: The ``rtsp://`` address.
        latency_ms: rtspsrc jitter buffer.
        codec: ``"h264"`` or ``"h265"``.

    Returns:
        A pipeline description ending in an appsink that keeps only the latest frame.

    Raises:
        ConfigError: If ``codec`` is not h264 or h265.
    """
    if codec not in ("h264", "h265"):
        raise ConfigError(f"codec must be h264 or h265, got {codec!r}")
    return (
        f"rtspsrc location={url} latency={int(latency_ms)} ! rtp{codec}depay ! {codec}parse ! "
        "nvv4l2decoder ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! "
        "video/x-raw,format=BGR ! appsink drop=1 max-buffers=1"
    )


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class GstCapture(ArrayCapture):
    """A ``CaptureLike`` over a PyGObject pipeline and its appsink.

    Args:
        pipeline: A description that contains an appsink (see :func:`with_appsink`).
        read_timeout_s: How long one read may wait for a sample.

    Raises:
        SourceError: If PyGObject is missing, the description does not parse, it has no
            appsink or it fails to start, in one line.
    """

    def __init__(self, pipeline: str, read_timeout_s: float = 5.0) -> None:
        gst = import_gst()
        from gi.repository import GLib

        self._gst = gst
        self.description = pipeline
        self._timeout_ns = max(1, round(read_timeout_s * 1e9))
        self.at_end = False  # set once the appsink reports end-of-stream
        self.fps = 0.0
        self.size = (0, 0)
        try:
            self._pipeline: Any | None = gst.parse_launch(pipeline)
        except GLib.Error as error:
            raise SourceError(
                f"GStreamer pipeline does not parse: {_one_line(error.message)} "
                f"(in {_one_line(pipeline)[:200]!r})"
            ) from error
        self._sink = self._find_appsink()
        if self._sink is None:
            self.release()
            raise SourceError(f"GStreamer pipeline has no appsink: {_one_line(pipeline)[:200]!r}")
        if self._sink.get_property("caps") is None:
            # An appsink without caps takes whatever comes first (videotestsrc ! videoconvert
            # picks a 64-bit format): ask for the formats ubiq converts, BGR first.
            formats = ", ".join(_RAW_FORMATS)
            self._sink.set_property(
                "caps", gst.Caps.from_string(f"video/x-raw, format=(string){{ {formats} }}")
            )
        self._bus = self._pipeline.get_bus()
        result = self._pipeline.set_state(gst.State.PLAYING)
        error = self._bus_error(0)
        if result == gst.StateChangeReturn.FAILURE or error is not None:
            self.release()
            raise SourceError(error or f"GStreamer pipeline failed to start: {pipeline[:200]!r}")

    def _find_appsink(self) -> Any | None:
        for name in ("sink", "ubiqsink"):
            element = self._pipeline.get_by_name(name)
            if element is not None and self._is_appsink(element):
                return element
        iterator = self._pipeline.iterate_sinks()
        while True:
            result, element = iterator.next()
            if result != self._gst.IteratorResult.OK:
                return None
            if self._is_appsink(element):
                return element

    @staticmethod
    def _is_appsink(element: Any) -> bool:
        factory = element.get_factory()
        return factory is not None and factory.get_name() == "appsink"

    def _bus_error(self, timeout_ns: int) -> str | None:
        """Returns the first error posted on the bus as one line, or None."""
        message = self._bus.timed_pop_filtered(timeout_ns, self._gst.MessageType.ERROR)
        if message is None:
            return None
        error, debug = message.parse_error()
        element = message.src.get_name() if message.src is not None else "pipeline"
        if "not-negotiated" in (debug or ""):
            return (
                f"GStreamer could not hand {element}'s frames to the appsink in a format ubiq "
                f"reads ({', '.join(_RAW_FORMATS)}); end the pipeline with "
                "'videoconvert ! video/x-raw,format=BGR ! appsink'"
            )
        return f"GStreamer error from {element}: {_one_line(error.message)}"

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        """Whether the pipeline is running."""
        return self._pipeline is not None

    def read(self) -> tuple[bool, np.ndarray | None]:
        """Pulls the next sample from the appsink.

        Returns:
            ``(True, image)`` with ``(H, W, 3)`` uint8 BGR; ``(False, None)`` at the end of
            the stream, on a read timeout or once released.

        Raises:
            SourceError: If the pipeline posted an error, or the sample is not raw video in
                a format ubiq can convert.
        """
        if self._pipeline is None:
            return False, None
        sample = self._sink.emit("try-pull-sample", self._timeout_ns)
        if sample is None:
            error = self._bus_error(0)
            if error is not None:
                self.release()
                raise SourceError(error)
            self.at_end = bool(self._sink.get_property("eos"))
            if not self.at_end:
                logger.warning("no GStreamer sample within %.3g s", self._timeout_ns / 1e9)
            return False, None
        try:
            return True, self._sample_to_bgr(sample)
        except SourceError:
            self.release()
            raise

    def _sample_to_bgr(self, sample: Any) -> np.ndarray:
        structure = sample.get_caps().get_structure(0)
        width, height = int(structure.get_value("width")), int(structure.get_value("height"))
        raw_format = str(structure.get_value("format"))
        if raw_format not in _RAW_FORMATS:
            raise SourceError(
                f"GStreamer gave {raw_format} frames; end the pipeline with "
                "'videoconvert ! video/x-raw,format=BGR ! appsink'"
            )
        has_rate, numerator, denominator = structure.get_fraction("framerate")
        if has_rate and denominator:
            self.fps = numerator / denominator
        self.size = (width, height)
        buffer = sample.get_buffer()
        mapped, info = buffer.map(self._gst.MapFlags.READ)
        if not mapped:
            raise SourceError("cannot map a GStreamer buffer for reading")
        try:
            data = np.frombuffer(info.data, np.uint8)
        finally:
            buffer.unmap(info)
        bytes_per_pixel, conversion = _RAW_FORMATS[raw_format]
        stride = data.size // height if height else 0
        if stride < width * bytes_per_pixel:
            raise SourceError(
                f"GStreamer buffer of {data.size} bytes is too small for {width}x{height} "
                f"{raw_format}"
            )
        rows = data[: stride * height].reshape(height, stride)
        pixels = rows[:, : width * bytes_per_pixel].reshape(height, width, bytes_per_pixel)
        if conversion is None:
            return pixels.copy()
        return cv2.cvtColor(np.ascontiguousarray(pixels), conversion)

    def release(self) -> None:
        """Stops the pipeline; safe to call twice."""
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            pipeline.set_state(self._gst.State.NULL)


def gst_capture_factory(pipeline: str, read_timeout_s: float = 5.0) -> CaptureLike:
    """Opens ``pipeline`` through OpenCV when it has GStreamer, else through PyGObject.

    Args:
        pipeline: A description ending in an appsink.
        read_timeout_s: How long one read may wait (PyGObject route).

    Raises:
        SourceError: If the PyGObject route is needed and fails (see :class:`GstCapture`).
    """
    if opencv_has_gstreamer():
        return cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)
    return GstCapture(pipeline, read_timeout_s)


class GStreamerSource(LiveSource):
    """A GStreamer pipeline as a live source (``gst:PIPELINE``).

    Args:
        pipeline: A ``gst-launch-1.0`` description; an appsink is appended if it has none.
        read_timeout_s: How long one read may wait for a sample.
        source_id: Name carried by frames (default ``"gst:" + pipeline``).
        description: Name used in logs and errors.
        vid_stride, reconnect, stale_after_s, backoff_initial_s, backoff_max_s: As in
            :class:`LiveSource`.

    Raises:
        ConfigError: If a number is out of range.
        SourceError: If ``pipeline`` is empty.
    """

    def __init__(
        self,
        pipeline: str,
        *,
        read_timeout_s: float = 5.0,
        source_id: str | None = None,
        description: str | None = None,
        vid_stride: int = 1,
        reconnect: bool = True,
        stale_after_s: float = 10.0,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 30.0,
    ) -> None:
        if not isinstance(pipeline, str) or not pipeline.strip():
            raise SourceError(
                f"gst: needs a pipeline, got {pipeline!r}; e.g. gst:videotestsrc ! appsink"
            )
        check_positive("read_timeout_s", read_timeout_s)
        self.pipeline = with_appsink(pipeline)
        self.read_timeout_s = float(read_timeout_s)
        self._open_error: SourceError | None = None
        super().__init__(
            self._open_capture,
            source_id=source_id or f"gst:{pipeline.strip()}",
            description=description or f"GStreamer pipeline {_one_line(pipeline)[:120]!r}",
            open_hint="check it with gst-launch-1.0 and that it ends in an appsink",
            vid_stride=vid_stride,
            reconnect=reconnect,
            stale_after_s=stale_after_s,
            backoff_initial_s=backoff_initial_s,
            backoff_max_s=backoff_max_s,
        )

    def _open_capture(self) -> CaptureLike:
        try:
            return gst_capture_factory(self.pipeline, self.read_timeout_s)
        except SourceError as error:
            self._open_error = error
            raise

    def _preflight(self) -> None:
        """Checks what can be checked before opening; subclasses add their own checks."""

    def _open(self) -> None:
        self._preflight()
        self._open_error = None
        try:
            super()._open()
        except SourceError as error:
            if self._open_error is None:
                raise
            raise SourceError(str(self._open_error)) from error


class CsiSource(GStreamerSource):
    """A Jetson CSI camera through ``nvarguscamerasrc`` (``csi``, ``csi:1``).

    Args:
        sensor_id: The CSI sensor index.
        size: ``(width, height)`` of the frames.
        fps: Sensor frame rate.
        flip_method: ``nvvidconv`` flip-method.
        vid_stride, reconnect, stale_after_s, backoff_initial_s, backoff_max_s: As in
            :class:`LiveSource`.
    """

    def __init__(
        self,
        sensor_id: int = 0,
        *,
        size: tuple[int, int] = (1280, 720),
        fps: float = 30.0,
        flip_method: int = 0,
        vid_stride: int = 1,
        reconnect: bool = True,
        stale_after_s: float = 10.0,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 30.0,
    ) -> None:
        if isinstance(sensor_id, bool) or not isinstance(sensor_id, int) or sensor_id < 0:
            raise SourceError(f"csi sensor id must be an integer >= 0, got {sensor_id!r}")
        check_positive("fps", fps)
        self.sensor_id = sensor_id
        super().__init__(
            csi_pipeline(sensor_id, size=size, fps=fps, flip_method=flip_method),
            source_id=f"csi:{sensor_id}",
            description=f"CSI camera {sensor_id}",
            vid_stride=vid_stride,
            reconnect=reconnect,
            stale_after_s=stale_after_s,
            backoff_initial_s=backoff_initial_s,
            backoff_max_s=backoff_max_s,
        )

    def _preflight(self) -> None:
        try:
            gst = import_gst()
        except SourceError as error:
            if opencv_has_gstreamer():
                return  # JetPack's OpenCV opens it; it will say if the element is missing.
            raise SourceError(
                f"{CSI_FIX} (this Python has neither OpenCV with GStreamer nor PyGObject)"
            ) from error
        if gst.ElementFactory.find("nvarguscamerasrc") is None:
            raise SourceError(CSI_FIX)
