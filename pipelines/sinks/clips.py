"""Snapshots and clips for alert events: a JPEG with the boxes drawn, and an MP4 from a
pre-roll ring buffer (default 5 s before the event) to a post-roll (5 s after).

:class:`ClipRecorder` is a pipeline **stage**, placed last among the stages: events are
made by stages, and every sink (JSONL, MQTT, webhooks, the live page) must see the file
names in the event's payload when it writes the event. A sink could only add them after
the sinks before it had written the event, so the recorder decides the names on the
pipeline thread when it sees the event (cheap: a string and a dict copy) and hands the
frames to a writer thread, which draws, keeps the ring buffer, writes the snapshot and
the clip under a temporary name, and renames them when complete. The pipeline never
waits for it: frames the writer cannot take in time are left out of the clips (counted in
:attr:`ClipRecorder.frames_dropped`); alerts are never left out.

The ring buffer holds JPEG-encoded annotated frames (quality 80): at 640x480 about 45 KB
each, so 5 s at 30 FPS is about 7 MB, against 138 MB for raw frames; it is bounded by
time (``pre_s``) and by count (``pre_s`` at 60 FPS).

Clips are H.264 where an encoder exists (see :func:`video_encoder`): PyAV's libx264 or
OpenH264, else OpenCV's ``avc1`` (FFmpeg builds with an H.264 encoder); with none, MPEG-4
Part 2 (``mp4v``) with a one-time warning that browsers may not play it.

A full disk or an unwritable folder is one line naming the file (``cannot write PATH: No
space left on device; the run goes on without snapshots and clips until writing to FOLDER
works again``), said once until a file is written again, and the pipeline goes on:
counting, events, MQTT, webhooks and the live view matter more than the pictures of them.
The events still carry the names decided when they happened; a name whose file is missing
was not written. A partial file is removed, never left under its final name.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import math
import os
import queue
import re
import tempfile
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ubiq.errors import ConfigError
from ubiq.pipelines.alerts import DEFAULT_CLIP_KINDS
from ubiq.pipelines.sinks.annotate import Annotator, draw
from ubiq.types import Event, FrameResult

logger = logging.getLogger(__name__)

_MAX_FPS = 60
_WAIT_FOR_WRITER_S = 10.0
_SLUG = re.compile(r"[^A-Za-z0-9._-]+")
_encoder_lock = threading.Lock()
_encoder: str | None = None
_warned_mp4v = False


def _write_errors() -> tuple[type[BaseException], ...]:
    """What a failing writer raises: OSError (a full disk), ValueError, PyAV's errors."""
    try:
        import av
    except ImportError:
        return (OSError, ValueError)
    return (OSError, ValueError, av.FFmpegError)


def _try_pyav(codec: str) -> bool:
    try:
        import av
    except ImportError:
        return False
    try:
        with tempfile.TemporaryDirectory() as folder:
            writer = _PyAVWriter(Path(folder) / "probe.mp4", 30.0, (64, 48), codec)
            writer.write(np.zeros((48, 64, 3), np.uint8))
            writer.close()
    except (av.FFmpegError, ValueError, OSError) as error:
        logger.debug("PyAV encoder %s unusable: %s", codec, error)
        return False
    return True


def _try_opencv(fourcc: str) -> bool:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "probe.mp4"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 30.0, (64, 48))
        if not writer.isOpened():
            return False
        writer.write(np.zeros((48, 64, 3), np.uint8))
        writer.release()
        return path.exists() and path.stat().st_size > 0


def video_encoder() -> str:
    """The MP4 encoder clips use, found once per process (a tiny test encode each):
    ``"pyav:libx264"``, ``"pyav:libopenh264"``, ``"pyav:h264_v4l2m2m"`` (a Pi's hardware
    encoder), ``"opencv:avc1"`` or, with no H.264 encoder, ``"opencv:mp4v"``."""
    global _encoder
    with _encoder_lock:
        if _encoder is None:
            for codec in ("libx264", "libopenh264", "h264_v4l2m2m"):
                if _try_pyav(codec):
                    _encoder = f"pyav:{codec}"
                    break
            else:
                _encoder = "opencv:avc1" if _try_opencv("avc1") else "opencv:mp4v"
            logger.info("clips are encoded with %s", _encoder)
        return _encoder


class _PyAVWriter:
    """H.264 in MP4 through PyAV (FFmpeg's libraries in the ``av`` wheel)."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int], codec: str) -> None:
        import av

        self.path = path
        self._container = av.open(str(path), "w", format="mp4")
        try:
            rate = max(1, round(fps))
            self._stream = self._container.add_stream(codec, rate=rate)
            self._stream.width, self._stream.height = size
            self._stream.pix_fmt = "yuv420p"
            if codec == "libx264":
                self._stream.options = {"preset": "veryfast", "crf": "23"}
            self._stream.thread_count = 1  # leave the cores to the pipeline
        except BaseException:
            self._container.close()
            raise

    def write(self, image: np.ndarray) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        self._container.mux(self._stream.encode(frame))

    def close(self) -> None:
        try:
            self._container.mux(self._stream.encode(None))
        finally:
            self._container.close()


class _OpenCVWriter:
    """MP4 through OpenCV's VideoWriter (``avc1`` or ``mp4v``)."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int], fourcc: str) -> None:
        self.path = path
        self._writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
        if not self._writer.isOpened():
            raise OSError(f"OpenCV cannot write {path}")

    def write(self, image: np.ndarray) -> None:
        self._writer.write(image)

    def close(self) -> None:
        self._writer.release()
        if not self.path.exists() or self.path.stat().st_size == 0:
            raise OSError(f"OpenCV wrote nothing to {self.path} (is the disk full?)")


def open_video_writer(path: Path, fps: float, size: tuple[int, int]):
    """Opens an MP4 writer with the best encoder here (:func:`video_encoder`).

    Args:
        path: Output file (``.mp4``).
        fps: Frame rate written into the file.
        size: ``(width, height)``; H.264 needs even sides (callers crop).

    Raises:
        OSError: If the file cannot be opened for writing.
    """
    global _warned_mp4v
    library, _, codec = video_encoder().partition(":")
    if library == "pyav":
        return _PyAVWriter(path, fps, size, codec)
    if codec == "mp4v" and not _warned_mp4v:
        _warned_mp4v = True
        logger.warning(
            "no H.264 encoder here (PyAV's libx264/OpenH264, OpenCV's avc1): clips are "
            "MPEG-4 Part 2 (mp4v), which browsers may not play; pip install av for H.264"
        )
    return _OpenCVWriter(path, fps, size, codec)


def _slug(text: str, limit: int = 32) -> str:
    return _SLUG.sub("_", text).strip("_")[:limit] or "x"


@dataclass
class _Alert:
    result: FrameResult
    snapshot: Path
    clip: Path | None
    new_clip: bool
    end_ns: int


@dataclass
class _Clip:
    path: Path
    temporary: Path
    writer: object
    size: tuple[int, int]
    end_ns: int
    frames: int = 0


class ClipRecorder:
    """Adds ``snapshot`` and ``clip`` file names to alert events and writes the files.

    Place it last among the stages. An event whose kind matches ``kinds`` gets a JPEG
    snapshot of its frame (boxes drawn) and a clip from ``pre_s`` before it to ``post_s``
    after it; an event during another clip's post-roll joins that clip and extends it (up
    to ``max_clip_s``). Files are named ``TIME-SOURCE-KIND-ID.jpg|.mp4`` in ``folder``.

    Args:
        folder: Where snapshots and clips go (created).
        kinds: Event kinds to record, ``fnmatch`` patterns (default
            :data:`DEFAULT_CLIP_KINDS`).
        pre_s: Seconds of video kept before an event (0..60, default 5).
        post_s: Seconds recorded after it (0..60, default 5).
        max_clip_s: Longest clip; a later event starts a new one (default 60).
        fps: Clip frame rate when it cannot be measured from the frames' timestamps.
        jpeg_quality: JPEG quality of snapshots and of the ring buffer (default 80).
        annotators: What to draw (default: masks, trails, boxes).
        queue_frames: Frames that may wait for the writer before new ones are left out.
        wait_for_writer: Wait for the writer instead of leaving frames out (for files, which
            have no real time to keep; default False: live sources never wait).
        name: Stage name in summaries (default ``"clips"``).

    Raises:
        ConfigError: If an option is out of range or the folder cannot be created.
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        kinds: Sequence[str] = DEFAULT_CLIP_KINDS,
        pre_s: float = 5.0,
        post_s: float = 5.0,
        max_clip_s: float = 60.0,
        fps: float | None = None,
        jpeg_quality: int = 80,
        annotators: Sequence[Annotator] | None = None,
        queue_frames: int = 64,
        wait_for_writer: bool = False,
        name: str = "clips",
    ) -> None:
        for option, value in (("pre_s", pre_s), ("post_s", post_s)):
            if not 0.0 <= value <= 60.0:
                raise ConfigError(f"{option} must be between 0 and 60 seconds, got {value}")
        if not max_clip_s >= pre_s + post_s:
            raise ConfigError(f"max_clip_s must be >= pre_s + post_s, got {max_clip_s}")
        kinds = tuple(kinds)
        if not kinds or not all(isinstance(k, str) and k.strip() for k in kinds):
            raise ConfigError(f"kinds must be non-empty event kind patterns, got {kinds!r}")
        if not 1 <= int(jpeg_quality) <= 100:
            raise ConfigError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"cannot create {self.folder}: {error.strerror}") from error
        self.kinds = kinds
        self.pre_ns = int(pre_s * 1e9)
        self.post_ns = int(post_s * 1e9)
        self.max_clip_ns = int(max_clip_s * 1e9)
        self.fps = fps
        self.jpeg_quality = int(jpeg_quality)
        self.annotators = annotators
        self.name = name
        self.wait_for_writer = wait_for_writer
        self._slots = threading.Semaphore(queue_frames)
        self.frames_dropped = 0
        self.snapshots_written = 0
        self.clips_written = 0
        self.write_errors = 0
        self.ring_bytes = 0
        self._ring: deque[tuple[int, bytes]] = deque(maxlen=math.ceil(pre_s * _MAX_FPS) + 1)
        self._queue: queue.Queue = queue.Queue()
        self._clip_start_ns: int | None = None
        self._clip_end_ns: int | None = None
        self._clip_path: Path | None = None
        self._failing = False
        self._thread = threading.Thread(target=self._work, name="ubiq-clips", daemon=True)
        self._thread.start()

    def matches(self, kind: str) -> bool:
        """Whether events of ``kind`` get a snapshot and a clip."""
        return any(fnmatch.fnmatchcase(kind, pattern) for pattern in self.kinds)

    def queue_length(self) -> int:
        """Items waiting for the writer thread."""
        return self._queue.qsize()

    # -- the pipeline thread ----------------------------------------------------------

    def __call__(self, result: FrameResult) -> FrameResult:
        if not result.final:
            if self.wait_for_writer and self._thread.is_alive():
                taken = self._slots.acquire(timeout=_WAIT_FOR_WRITER_S)
            else:
                taken = self._slots.acquire(blocking=False)
            if taken:
                self._queue.put(result)
            else:
                self.frames_dropped += 1
        for position, event in enumerate(result.events):
            if self.matches(event.kind):
                result.events[position] = self._plan(result, event)
        return result

    def _plan(self, result: FrameResult, event: Event) -> Event:
        """Names the event's files, tells the writer, and returns the event with them."""
        now_ns = result.timestamp_ns
        stem = "-".join(
            (
                time.strftime("%Y%m%d-%H%M%S"),
                _slug(event.source_id),
                _slug(event.kind),
                _slug(event.event_id),
            )
        )
        snapshot = self.folder / f"{stem}.jpg"
        joins = (
            self._clip_end_ns is not None
            and not result.final
            and now_ns <= self._clip_end_ns
            and now_ns + self.post_ns - self._clip_start_ns <= self.max_clip_ns
        )
        if result.final:
            clip = None  # the source ended: nothing comes after it
        elif joins:
            clip = self._clip_path
            self._clip_end_ns = now_ns + self.post_ns
        else:
            clip = self._clip_path = self.folder / f"{stem}.mp4"
            self._clip_start_ns, self._clip_end_ns = now_ns - self.pre_ns, now_ns + self.post_ns
        new_clip = clip is not None and not joins
        if self._thread.is_alive():  # a writer that stopped takes nothing more
            self._queue.put(_Alert(result, snapshot, clip, new_clip, now_ns + self.post_ns))
        payload = dict(event.payload) | {"snapshot": str(snapshot)}
        if clip is not None:
            payload["clip"] = str(clip)
        return Event(event.kind, event.timestamp_ns, event.source_id, payload, event.event_id)

    def write(self, result: FrameResult) -> None:
        """Lets the recorder run as a sink where a command has no place for it among the
        stages; sinks before it have then written the events without the file names."""
        self(result)

    def close(self) -> None:
        """Finishes the clip in progress (its post-roll cut short) and stops the writer."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    # -- the writer thread ------------------------------------------------------------

    def _work(self) -> None:
        try:
            self._write_items()
        except (cv2.error, OSError, ValueError) as error:
            logger.error("the clip writer stopped: %s; no more clips this run", error)

    def _write_items(self) -> None:
        clip: _Clip | None = None
        drawn: tuple[FrameResult | None, np.ndarray | None] = (None, None)
        while True:
            item = self._queue.get()
            if item is None:
                break
            if isinstance(item, FrameResult):
                self._slots.release()
                image = draw(item, self.annotators)
                drawn = (item, image)
                timestamp_ns = item.timestamp_ns
                if clip is not None and timestamp_ns > clip.end_ns:
                    self._finish(clip)
                    clip = None
                if clip is not None:
                    clip = self._write_frame(clip, image)
                if self.pre_ns > 0:
                    self._remember(timestamp_ns, image)
                continue
            image = drawn[1] if drawn[0] is item.result else draw(item.result, self.annotators)
            self._write_snapshot(item.snapshot, image)
            if item.new_clip:
                if clip is not None:
                    self._finish(clip)
                clip = self._start(item.clip, item.end_ns, image)
            elif clip is not None and item.clip is not None:
                clip.end_ns = item.end_ns
        if clip is not None:
            self._finish(clip)

    def _remember(self, timestamp_ns: int, image: np.ndarray) -> None:
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        if not ok:
            return
        if len(self._ring) == self._ring.maxlen:
            self.ring_bytes -= len(self._ring[0][1])
        self._ring.append((timestamp_ns, encoded.tobytes()))
        self.ring_bytes += len(self._ring[-1][1])
        while self._ring and self._ring[0][0] < timestamp_ns - self.pre_ns:
            self.ring_bytes -= len(self._ring.popleft()[1])

    def _clip_fps(self) -> float:
        if len(self._ring) >= 2:
            span_ns = self._ring[-1][0] - self._ring[0][0]
            if span_ns > 0:
                return min(_MAX_FPS, (len(self._ring) - 1) * 1e9 / span_ns)
        return self.fps or 30.0

    def _start(self, path: Path, end_ns: int, image: np.ndarray) -> _Clip | None:
        """Opens the clip under a temporary name and writes the pre-roll into it."""
        height, width = image.shape[:2]
        size = (width - width % 2, height - height % 2)
        temporary = path.with_name(f".{path.stem}.partial.mp4")
        try:
            writer = open_video_writer(temporary, self._clip_fps(), size)
        except _write_errors() as error:
            self._failed(path, error)
            return None
        clip = _Clip(path, temporary, writer, size, end_ns)
        # The ring ends with the alert's own frame (the writer saw it just before).
        frames = list(self._ring) or [(0, None)]
        for _timestamp_ns, jpeg in frames:
            frame = image if jpeg is None else cv2.imdecode(np.frombuffer(jpeg, np.uint8), 1)
            clip = self._write_frame(clip, frame)
            if clip is None:
                break
        return clip

    def _write_frame(self, clip: _Clip, image: np.ndarray) -> _Clip | None:
        width, height = clip.size
        if image.shape[1] != width or image.shape[0] != height:
            if abs(image.shape[1] - width) <= 1 and abs(image.shape[0] - height) <= 1:
                image = image[:height, :width]
            else:
                image = cv2.resize(image, clip.size, interpolation=cv2.INTER_AREA)
        try:
            clip.writer.write(np.ascontiguousarray(image))
        except _write_errors() as error:
            self._abandon(clip, error)
            return None
        clip.frames += 1
        return clip

    def _finish(self, clip: _Clip) -> None:
        try:
            clip.writer.close()
            os.replace(clip.temporary, clip.path)
        except _write_errors() as error:
            self._abandon(clip, error, closed=True)
            return
        self.clips_written += 1
        self._succeeded()
        logger.info("wrote clip %s (%d frames)", clip.path, clip.frames)

    def _abandon(self, clip: _Clip, error: BaseException, *, closed: bool = False) -> None:
        if not closed:
            with contextlib.suppress(*_write_errors()):  # the first error is the one to report
                clip.writer.close()
        clip.temporary.unlink(missing_ok=True)
        self._failed(clip.path, error)

    def _write_snapshot(self, path: Path, image: np.ndarray) -> None:
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        temporary = path.with_name(f".{path.stem}.partial.jpg")
        try:
            if not ok:
                raise OSError("JPEG encoding failed")
            with open(temporary, "wb") as handle:
                handle.write(encoded.tobytes())
            os.replace(temporary, path)
        except OSError as error:
            temporary.unlink(missing_ok=True)
            self._failed(path, error)
            return
        self.snapshots_written += 1
        self._succeeded()

    def _failed(self, path: Path, error: BaseException) -> None:
        self.write_errors += 1
        if not self._failing:
            self._failing = True
            reason = getattr(error, "strerror", None) or str(error)
            logger.error(
                "cannot write %s: %s; the run goes on without snapshots and clips until "
                "writing to %s works again",
                path,
                reason,
                self.folder,
            )

    def _succeeded(self) -> None:
        if self._failing:
            self._failing = False
            logger.info("writing snapshots and clips to %s works again", self.folder)
