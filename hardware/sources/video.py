"""Video sources: video files, webcams (V4L2 / index) and network streams (RTSP, RTMP, HTTP).

Files are decoded ahead of the consumer in a thread and yield every frame in order.
Live sources keep only the latest frame in a reader thread (older unread frames are
counted in ``dropped_frames``) and reopen a dropped camera with exponential backoff, the
way Frigate's watchdog does: no frame for ``stale_after_s`` or a failed read -> log a
warning, wait 1, 2, 4 ... up to 30 s, reopen, and keep the pipeline alive.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np

from ubiq.errors import SourceError
from ubiq.types import Frame

from .base import (
    CaptureLike,
    PrefetchingSource,
    Source,
    check_positive,
    nominal_fps,
    to_bgr,
)

logger = logging.getLogger(__name__)

CaptureFactory = Callable[[], CaptureLike]
"""Opens and returns a capture (``cv2.VideoCapture`` or a fake with the same methods)."""

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https")
_POLL_INTERVAL_S = 0.05
_JOIN_TIMEOUT_S = 2.0


def redact_url(url: str) -> str:
    """Returns ``url`` with any password replaced by ``***`` (for logs, errors and ids)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username or ''}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class VideoFileSource(PrefetchingSource):
    """Every frame of a video file, decoded ahead of the consumer in a background thread.

    Frame ``index`` counts source frames, so with ``vid_stride=2`` the indices are
    0, 2, 4 ...; skipped frames are grabbed without being decoded to images.
    ``timestamp_ns`` is the presentation time ``index / fps`` (or the container's position
    when it reports no frame rate).

    Args:
        path: The video file.
        vid_stride: Yield every ``vid_stride``-th frame.
        source_id: Name carried by every frame; defaults to ``str(path)``.
        queue_size: How many decoded frames may wait for the consumer.
        decode_threads: FFmpeg decoder threads (1 leaves the cores to inference).

    Raises:
        ConfigError: If ``vid_stride``, ``queue_size`` or ``decode_threads`` is not an
            integer >= 1.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        vid_stride: int = 1,
        source_id: str | None = None,
        queue_size: int = 4,
        decode_threads: int = 1,
    ) -> None:
        super().__init__(str(path) if source_id is None else source_id, queue_size=queue_size)
        check_positive("vid_stride", vid_stride, integer=True)
        check_positive("decode_threads", decode_threads, integer=True)
        self.decode_threads = decode_threads
        self.path = Path(path)
        # A remote file (http(s)://host/clip.mp4) is read like a local one: every frame,
        # ending at its end, with FFmpeg's open and read timeouts.
        self.location = str(path)
        self.is_remote = "://" in self.location
        self.timeout_ms = 5000
        self.vid_stride = vid_stride
        self.frame_count: int | None = None
        self._capture: CaptureLike | None = None
        self._first_image: np.ndarray | None = None
        self._first_timestamp_ns = 0

    def _open(self) -> None:
        name = redact_url(self.location) if self.is_remote else str(self.path)
        if not self.is_remote and not self.path.is_file():
            raise SourceError(f"source file not found: {self.path}")
        # One decoder thread by default: the model's runtime wants every core, and FFmpeg's
        # frame threads fight it for them (measured: +10-20% end-to-end FPS on 2 cores).
        params = [cv2.CAP_PROP_N_THREADS, self.decode_threads]
        if self.is_remote:
            params += [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                self.timeout_ms,
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                self.timeout_ms,
            ]
        capture = cv2.VideoCapture(self.location, cv2.CAP_FFMPEG, params)
        if not capture.isOpened() and not self.is_remote:
            capture.release()
            capture = cv2.VideoCapture(self.location)  # another backend may read it
        if not capture.isOpened():
            capture.release()
            reason = (
                "unreachable or not a video" if self.is_remote else "not a format OpenCV decodes"
            )
            raise SourceError(f"cannot open video file {name} ({reason})")
        ok, image = capture.read()
        if not ok or image is None:
            capture.release()
            raise SourceError(f"video file {name} has no decodable frames")
        self._fps = nominal_fps(capture)
        self._frame_size = (int(image.shape[1]), int(image.shape[0]))
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = count if count > 0 else None
        self._capture = capture
        self._first_image = image
        self._first_timestamp_ns = self._timestamp_ns(0, capture)
        logger.info(
            "opened video file %s: %dx%d, %s fps, %s frames",
            self.path,
            *self._frame_size,
            self._fps,
            self.frame_count,
        )

    def _timestamp_ns(self, index: int, capture: CaptureLike) -> int:
        if self._fps:
            return round(index * 1e9 / self._fps)
        return round(float(capture.get(cv2.CAP_PROP_POS_MSEC)) * 1e6)

    def _produce(self) -> Iterator[Frame]:
        capture = self._capture
        if capture is None:
            return
        image, self._first_image = self._first_image, None
        timestamp_ns = self._first_timestamp_ns
        index = 0
        while image is not None and not self._stop_event.is_set():
            yield Frame(to_bgr(image), index, timestamp_ns, self.source_id)
            for _ in range(self.vid_stride - 1):
                if not capture.grab():
                    return
                index += 1
            index += 1
            ok, image = capture.read()
            if not ok:
                logger.debug("video file %s ended after frame %d", self.path, index - 1)
                return
            timestamp_ns = self._timestamp_ns(index, capture)

    def _release(self) -> None:
        capture, self._capture = self._capture, None
        self._first_image = None
        if capture is not None:
            capture.release()


class LiveSource(Source):
    """A camera or stream read by a thread that keeps only the latest frame.

    The consumer always gets the newest frame it has not seen yet (waiting for one when
    needed); frames overwritten before being taken are counted in ``dropped_frames``.
    ``index`` counts source frames since opening (including skipped and dropped ones) and
    ``timestamp_ns`` is ``time.monotonic_ns()`` at capture. When a read fails or no frame
    arrives for ``stale_after_s``, the source logs a warning and, if ``reconnect`` is set,
    reopens with exponential backoff until it succeeds or :meth:`stop` is called; without
    ``reconnect`` iteration ends.

    Args:
        capture_factory: Opens the device; called again on every reconnect.
        source_id: Name carried by every frame.
        description: How messages name the device, such as ``"camera 0"``.
        open_hint: What an open failure message suggests, such as ``"no such device"``.
        vid_stride: Keep every ``vid_stride``-th source frame (the others are grabbed only).
        reconnect: Whether to reopen a dropped source.
        stale_after_s: Seconds without a frame after which the source counts as dropped.
        backoff_initial_s: First reconnect delay; it doubles on every failed attempt.
        backoff_max_s: Upper bound of the reconnect delay.

    Raises:
        ConfigError: If a number is out of range.
    """

    is_live = True

    def __init__(
        self,
        capture_factory: CaptureFactory,
        *,
        source_id: str,
        description: str,
        open_hint: str = "",
        vid_stride: int = 1,
        reconnect: bool = True,
        stale_after_s: float = 10.0,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 30.0,
    ) -> None:
        super().__init__(source_id)
        check_positive("vid_stride", vid_stride, integer=True)
        check_positive("stale_after_s", stale_after_s)
        check_positive("backoff_initial_s", backoff_initial_s)
        check_positive("backoff_max_s", backoff_max_s)
        self.description = description
        self.vid_stride = vid_stride
        self.reconnect = reconnect
        self.stale_after_s = float(stale_after_s)
        self.backoff_initial_s = float(backoff_initial_s)
        self.backoff_max_s = float(backoff_max_s)
        self._capture_factory = capture_factory
        self._open_hint = open_hint
        self._condition = threading.Condition()
        self._latest: Frame | None = None
        self._latest_taken = True
        self._next_index = 0
        self._generation = 0
        self._failed_generation = -1
        self._frames_in_generation = 0
        self._last_frame_monotonic = 0.0
        self._ended = False
        self._threads: list[threading.Thread] = []

    def stop(self) -> None:
        """Makes iteration end soon. Thread-safe and safe to call from a signal handler."""
        super().stop()
        # Never block here: a signal handler may run while this thread holds the lock.
        if self._condition.acquire(blocking=False):
            try:
                self._condition.notify_all()
            finally:
                self._condition.release()

    def _try_open(self) -> CaptureLike | None:
        try:
            capture = self._capture_factory()
        except (cv2.error, OSError, SourceError) as error:
            logger.debug("opening %s failed: %s", self.description, error)
            return None
        if not capture.isOpened():
            capture.release()
            return None
        return capture

    def _open(self) -> None:
        hint = f" ({self._open_hint})" if self._open_hint else ""
        capture = self._try_open()
        if capture is None:
            raise SourceError(f"cannot open {self.description}{hint}")
        ok, image = capture.read()
        timestamp_ns = time.monotonic_ns()
        if not ok or image is None:
            capture.release()
            raise SourceError(f"{self.description} opened but gave no frame{hint}")
        self._fps = nominal_fps(capture)
        self._frame_size = (int(image.shape[1]), int(image.shape[0]))
        with self._condition:
            self._dropped_frames = 0
            self._reconnects = 0
            self._ended = False
            self._latest = None
            self._latest_taken = True
            self._next_index = 0
            self._generation += 1
            self._publish(to_bgr(image), 0, timestamp_ns)
        logger.info("opened %s: %dx%d at %s fps", self.description, *self._frame_size, self._fps)
        self._start_thread(self._supervise, capture, name="supervisor")

    def _start_thread(self, target: Callable[..., None], *args: object, name: str) -> None:
        thread = threading.Thread(
            target=target, args=args, name=f"ubiq-{name}-{self.source_id}", daemon=True
        )
        self._threads = [alive for alive in self._threads if alive.is_alive()]
        self._threads.append(thread)
        thread.start()

    def _publish(self, image: np.ndarray, skipped: int, timestamp_ns: int) -> None:
        """Replaces the latest frame; the caller holds the condition."""
        index = self._next_index + skipped
        self._next_index = index + 1
        if self._latest is not None and not self._latest_taken:
            self._dropped_frames += 1
        self._latest = Frame(image, index, timestamp_ns, self.source_id)
        self._latest_taken = False
        self._last_frame_monotonic = time.monotonic()
        self._frames_in_generation += 1
        self._condition.notify_all()

    def _read_loop(self, capture: CaptureLike, generation: int) -> None:
        try:
            while not self._stop_event.is_set():
                skipped = 0
                while skipped < self.vid_stride - 1 and capture.grab():
                    skipped += 1
                ok, image = capture.read()
                timestamp_ns = time.monotonic_ns()
                if skipped < self.vid_stride - 1 or not ok or image is None:
                    return
                image = to_bgr(image)
                with self._condition:
                    if generation != self._generation:
                        return
                    self._publish(image, skipped, timestamp_ns)
        except (cv2.error, SourceError) as error:
            logger.warning("reading %s failed: %s", self.description, error)
        finally:
            capture.release()
            with self._condition:
                if generation == self._generation:
                    self._failed_generation = generation
                    self._condition.notify_all()

    def _wait_for_trouble(self, generation: int) -> str | None:
        """Blocks until the reader fails or goes stale; returns why, or None when stopped."""
        with self._condition:
            while not self._stop_event.is_set():
                if self._failed_generation == generation:
                    return "read failed"
                idle_s = time.monotonic() - self._last_frame_monotonic
                if idle_s >= self.stale_after_s:
                    return f"no frame for {idle_s:.1f} s"
                self._condition.wait(timeout=min(self.stale_after_s - idle_s, _POLL_INTERVAL_S))
        return None

    def _supervise(self, capture: CaptureLike) -> None:
        attempt = 0
        while True:
            with self._condition:
                generation = self._generation
                self._frames_in_generation = 0
                self._last_frame_monotonic = time.monotonic()
            self._start_thread(self._read_loop, capture, generation, name="reader")
            reason = self._wait_for_trouble(generation)
            with self._condition:
                self._generation += 1  # an abandoned reader exits after its current read
                if self._frames_in_generation > 0:
                    attempt = 0
            if reason is None:
                return
            if not self.reconnect:
                if getattr(capture, "at_end", False):  # a finite GStreamer pipeline's EOS
                    logger.info("%s reached its end", self.description)
                else:
                    logger.warning("%s dropped (%s); not reconnecting", self.description, reason)
                with self._condition:
                    self._ended = True
                    self._condition.notify_all()
                return
            reopened = self._reopen(reason, attempt)
            if reopened is None:
                return
            capture, attempt = reopened

    def _reopen(self, reason: str, attempt: int) -> tuple[CaptureLike, int] | None:
        """Reopens with exponential backoff; returns the capture and attempt count."""
        while True:
            attempt += 1
            delay_s = min(self.backoff_initial_s * 2 ** (attempt - 1), self.backoff_max_s)
            logger.warning(
                "%s dropped (%s); reconnecting in %.3g s (attempt %d)",
                self.description,
                reason,
                delay_s,
                attempt,
            )
            if self._stop_event.wait(delay_s):
                return None
            capture = self._try_open()
            if capture is not None:
                with self._condition:
                    self._reconnects += 1
                logger.info("%s reconnected (attempt %d)", self.description, attempt)
                return capture, attempt
            reason = f"cannot open {self.description}"

    def _frames(self) -> Iterator[Frame]:
        while True:
            with self._condition:
                while self._latest_taken and not self._ended and not self._stop_event.is_set():
                    self._condition.wait(timeout=_POLL_INTERVAL_S)
                if self._stop_event.is_set() or self._latest_taken or self._latest is None:
                    return
                frame = self._latest
                self._latest_taken = True
            yield frame

    def _close(self) -> None:
        self.stop()
        deadline = time.monotonic() + _JOIN_TIMEOUT_S
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                # A reader blocked inside the driver releases its capture when the read returns.
                logger.warning("%s: thread %s is still blocked", self.description, thread.name)
        self._threads = []
        with self._condition:
            self._generation += 1
            self._latest = None
            self._latest_taken = True


def webcam_capture_factory(device: int | str) -> CaptureFactory:
    """Returns a factory opening a webcam: by index, or by ``/dev/videoN`` path with V4L2."""
    if isinstance(device, int):
        return lambda: cv2.VideoCapture(device)
    return lambda: cv2.VideoCapture(device, cv2.CAP_V4L2)


def stream_capture_factory(
    url: str, open_timeout_s: float, read_timeout_s: float
) -> CaptureFactory:
    """Returns a factory opening ``url`` through FFmpeg with open and read timeouts.

    For RTSP it sets ``OPENCV_FFMPEG_CAPTURE_OPTIONS=rtsp_transport;tcp`` when that variable
    is not already set, at open time only.
    """
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
        max(1, round(open_timeout_s * 1000)),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC,
        max(1, round(read_timeout_s * 1000)),
    ]

    def open_capture() -> CaptureLike:
        if url.lower().startswith("rtsp") and "OPENCV_FFMPEG_CAPTURE_OPTIONS" not in os.environ:
            os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = "rtsp_transport;tcp"
        return cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)

    return open_capture


class WebcamSource(LiveSource):
    """A local camera by index (``0``) or V4L2 device path (``/dev/video0``).

    Args:
        device: Camera index or device path.
        capture_factory: Overrides how the camera is opened (tests pass fakes here).
        vid_stride, reconnect, stale_after_s, backoff_initial_s, backoff_max_s: As in
            :class:`LiveSource`.
    """

    def __init__(
        self,
        device: int | str,
        *,
        capture_factory: CaptureFactory | None = None,
        vid_stride: int = 1,
        reconnect: bool = True,
        stale_after_s: float = 10.0,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 30.0,
    ) -> None:
        super().__init__(
            capture_factory or webcam_capture_factory(device),
            source_id=str(device),
            description=f"camera {device}",
            open_hint="no such device; list cameras with `ls /dev/video*` or try another index",
            vid_stride=vid_stride,
            reconnect=reconnect,
            stale_after_s=stale_after_s,
            backoff_initial_s=backoff_initial_s,
            backoff_max_s=backoff_max_s,
        )
        self.device = device


class StreamSource(LiveSource):
    """A network stream (RTSP, RTMP, HTTP) read through FFmpeg with open/read timeouts.

    Args:
        url: The stream address; a password in it never appears in ids, logs or errors.
        open_timeout_s: How long FFmpeg may take to connect.
        read_timeout_s: How long one read may block.
        capture_factory: Overrides how the stream is opened (tests pass fakes here).
        vid_stride, reconnect, stale_after_s, backoff_initial_s, backoff_max_s: As in
            :class:`LiveSource`.

    Raises:
        ConfigError: If a timeout is not positive.
    """

    def __init__(
        self,
        url: str,
        *,
        open_timeout_s: float = 5.0,
        read_timeout_s: float = 5.0,
        capture_factory: CaptureFactory | None = None,
        vid_stride: int = 1,
        reconnect: bool = True,
        stale_after_s: float = 10.0,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 30.0,
    ) -> None:
        check_positive("open_timeout_s", open_timeout_s)
        check_positive("read_timeout_s", read_timeout_s)
        safe_url = redact_url(url)
        super().__init__(
            capture_factory or stream_capture_factory(url, open_timeout_s, read_timeout_s),
            source_id=safe_url,
            description=f"stream {safe_url}",
            open_hint=(
                f"unreachable, refused or not a video stream within {open_timeout_s:g} s; "
                "check the address, port, path and credentials"
            ),
            vid_stride=vid_stride,
            reconnect=reconnect,
            stale_after_s=stale_after_s,
            backoff_initial_s=backoff_initial_s,
            backoff_max_s=backoff_max_s,
        )
        self.url = url
