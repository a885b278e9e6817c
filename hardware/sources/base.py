"""The ``Source`` interface and the background-reader machinery shared by every video source.

A source is a context manager and an iterable of :class:`ubiq.types.Frame`. Entering it
opens the device or file (raising :class:`ubiq.errors.SourceError` with one clear line on
failure); leaving it stops the reader thread and releases the device. ``stop()`` may be
called from any thread or a signal handler and makes iteration end soon.

Offline sources (files, folders, the demo clip) decode ahead of the consumer in a thread
with a small bounded queue, so decoding overlaps inference while every frame is still
yielded in order (:class:`PrefetchingSource`).
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from types import TracebackType
from typing import Protocol

import cv2
import numpy as np

from ubiq.errors import ConfigError, SourceError, UbiqError
from ubiq.prefetch import Prefetcher
from ubiq.types import Frame

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
"""File extensions read as still images (lower case, with the dot)."""

_JOIN_TIMEOUT_S = 2.0


class CaptureLike(Protocol):
    """The part of ``cv2.VideoCapture`` the sources use; fakes in tests follow it exactly."""

    def isOpened(self) -> bool: ...  # noqa: N802 - OpenCV's name

    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def grab(self) -> bool: ...

    def get(self, property_id: int) -> float: ...

    def release(self) -> None: ...


class ArrayCapture:
    """Shared ``grab``/``get`` for ``CaptureLike`` adapters over libraries that hand over
    arrays (picamera2, a GStreamer appsink). Subclasses set ``fps`` and ``size`` (width,
    height) and implement ``read``, ``isOpened`` and ``release``."""

    fps: float = 0.0
    size: tuple[int, int] = (0, 0)

    def read(self) -> tuple[bool, np.ndarray | None]:  # pragma: no cover - abstract
        raise NotImplementedError

    def grab(self) -> bool:
        """Reads and discards one frame."""
        return self.read()[0]

    def get(self, property_id: int) -> float:
        """Answers ``CAP_PROP_FPS``, ``CAP_PROP_FRAME_WIDTH`` and ``CAP_PROP_FRAME_HEIGHT``;
        0 for anything else."""
        if property_id == cv2.CAP_PROP_FPS:
            return float(self.fps)
        if property_id == cv2.CAP_PROP_FRAME_WIDTH:
            return float(self.size[0])
        if property_id == cv2.CAP_PROP_FRAME_HEIGHT:
            return float(self.size[1])
        return 0.0


def check_positive(name: str, value: float, *, integer: bool = False) -> None:
    """Validates a numeric option at a public boundary.

    Args:
        name: The parameter name used in the message.
        value: The value to check.
        integer: Whether the value must also be an ``int``.

    Raises:
        ConfigError: If ``value`` is not a positive number (or not an ``int`` when required).
    """
    if integer and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{name} must be a positive number, got {value!r}")


def to_bgr(image: np.ndarray) -> np.ndarray:
    """Returns ``image`` as an ``(H, W, 3)`` uint8 BGR array.

    Args:
        image: ``(H, W)`` gray, ``(H, W, 1)``, ``(H, W, 3)`` BGR or ``(H, W, 4)`` BGRA uint8.

    Raises:
        SourceError: If the array has another shape or dtype.
    """
    if image.dtype != np.uint8:
        raise SourceError(f"source gave a frame of dtype {image.dtype}, expected uint8")
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    raise SourceError(f"source gave a frame of shape {image.shape}, expected (H, W, 3)")


def nominal_fps(capture: CaptureLike) -> float | None:
    """Returns the capture's nominal frame rate, or ``None`` when it reports none."""
    fps = float(capture.get(cv2.CAP_PROP_FPS))
    return fps if 0.0 < fps < 1000.0 else None


class Lifecycle(ABC):
    """Open, close and stop, shared by the video and the audio sources.

    Subclasses set ``self._opened = False`` and ``self._stop_event = threading.Event()`` in
    ``__init__`` and implement ``_open``, ``_close`` and ``_items`` (what iteration yields).
    """

    source_id: str
    _opened: bool
    _stop_event: threading.Event

    @property
    def is_open(self) -> bool:
        """Whether the source is open."""
        return self._opened

    def open(self) -> Lifecycle:
        """Opens the source; does nothing when it is already open.

        Returns:
            The source itself.

        Raises:
            SourceError: If the device, stream or file cannot be opened, in one line.
        """
        if self._opened:
            return self
        self._stop_event.clear()
        self._open()
        self._opened = True
        return self

    def close(self) -> None:
        """Stops reading and releases the device or file. Safe to call twice."""
        self._stop_event.set()
        if self._opened:
            self._opened = False
            self._close()

    def stop(self) -> None:
        """Makes iteration end soon. Thread-safe and safe to call from a signal handler."""
        self._stop_event.set()

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` or :meth:`close` was called since the last open."""
        return self._stop_event.is_set()

    def __enter__(self) -> Lifecycle:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator:
        """Yields items; opens the source first (and closes it at the end) if it is closed."""
        if self._opened:
            return self._items()
        return self._items_with_open()

    def _items_with_open(self) -> Iterator:
        with self:
            yield from self._items()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source_id!r})"

    @abstractmethod
    def _open(self) -> None:
        """Opens the underlying device or file; raises ``SourceError`` on failure."""

    @abstractmethod
    def _close(self) -> None:
        """Stops threads and releases what ``_open`` acquired."""

    @abstractmethod
    def _items(self) -> Iterator:
        """Yields the items of an open source until it ends or is stopped."""


class Source(Lifecycle):
    """A stream of frames: a context manager and an iterable of :class:`Frame`.

    Attributes:
        source_id: Name carried by every frame (the spec, with URL passwords removed).
        is_live: True for cameras and network streams, False for files and images.
    """

    is_live: bool = False

    def __init__(self, source_id: str) -> None:
        self.source_id = source_id
        self._fps: float | None = None
        self._frame_size: tuple[int, int] | None = None
        self._dropped_frames = 0
        self._reconnects = 0
        self._opened = False
        self._stop_event = threading.Event()

    @property
    def fps(self) -> float | None:
        """Nominal frames per second (from the container or device), ``None`` if unknown."""
        return self._fps

    @property
    def frame_size(self) -> tuple[int, int] | None:
        """``(width, height)`` in pixels once opened, else ``None``."""
        return self._frame_size

    @property
    def dropped_frames(self) -> int:
        """Frames overwritten before the consumer took them (live sources only)."""
        return self._dropped_frames

    @property
    def reconnects(self) -> int:
        """How many times a dropped live source was reopened."""
        return self._reconnects

    def _items(self) -> Iterator[Frame]:
        return self._frames()

    @abstractmethod
    def _frames(self) -> Iterator[Frame]:
        """Yields frames of an open source until it ends or is stopped."""


class PrefetchingSource(Source):
    """A source whose frames are produced in a background thread into a bounded queue.

    Subclasses implement ``_open`` (blocking, raising ``SourceError``), ``_produce`` (a
    generator run on the reader thread) and ``_release``. Frames come out in order; none
    is dropped. The queue holds at most ``queue_size`` frames so memory stays bounded
    (the thread and queue are :class:`ubiq.prefetch.Prefetcher`, which the runner's
    frame preparation shares).

    Args:
        source_id: Name carried by every frame.
        queue_size: How many decoded frames may wait for the consumer.

    Raises:
        ConfigError: If ``queue_size`` is not an integer >= 1.
    """

    def __init__(self, source_id: str, *, queue_size: int = 4) -> None:
        super().__init__(source_id)
        check_positive("queue_size", queue_size, integer=True)
        self._queue_size = queue_size
        self._prefetcher: Prefetcher[Frame] | None = None

    @property
    def queue_length(self) -> int:
        """Frames read ahead and waiting (0 before the source opens)."""
        prefetcher = self._prefetcher
        return prefetcher.queue_length if prefetcher is not None else 0

    def open(self) -> Source:
        """Opens the source and starts its reader thread.

        Returns:
            The source itself.

        Raises:
            SourceError: If the file cannot be opened or decoded.
        """
        if self._opened:
            return self
        super().open()
        self._prefetcher = Prefetcher(
            self._produce_checked,
            maxsize=self._queue_size,
            name=f"ubiq-source-{self.source_id}",
            stop_event=self._stop_event,
            on_exit=self._release,
        ).start()
        return self

    @abstractmethod
    def _produce(self) -> Iterator[Frame]:
        """Yields every frame in order; runs on the reader thread."""

    @abstractmethod
    def _release(self) -> None:
        """Releases what ``_open`` acquired; called once the reader thread is done."""

    def _produce_checked(self) -> Iterator[Frame]:
        """``_produce`` with its failures turned into one-line ``SourceError``s."""
        try:
            yield from self._produce()
        except (UbiqError, cv2.error, OSError, ValueError) as error:
            logger.error("reading %s failed: %s", self.source_id, error)
            raise SourceError(f"reading source {self.source_id!r} failed: {error}") from error
        except Exception as error:
            raise SourceError(
                f"reader of source {self.source_id!r} stopped unexpectedly: {error}"
            ) from error

    def _frames(self) -> Iterator[Frame]:
        if self._prefetcher is not None:
            yield from self._prefetcher

    def _close(self) -> None:
        prefetcher, self._prefetcher = self._prefetcher, None
        if prefetcher is None:
            self._release()
            return
        # Unblocks a producer waiting on a full queue, then waits for it to release the file.
        prefetcher.close(_JOIN_TIMEOUT_S)
