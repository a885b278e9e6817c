"""Live view: a small HTTP server with the annotated stream, live counts and events,
a snapshot, recent events as JSON, Prometheus metrics and a health check.

Routes (all ``GET``)::

    /                 the page (MJPEG <img> plus counts and events over Server-Sent Events)
    /stream.mjpg      the annotated stream, multipart/x-mixed-replace JPEG
    /events/stream    Server-Sent Events: ``counts`` about every second, ``event`` per event
    /snapshot.jpg     the latest annotated frame
    /events           recent events as JSON: {"events": [...]}
    /metrics          Prometheus text: FPS, per-stage latency, dropped frames, queues, temperature
    /healthz          {"status": "ok" | "stale" | "starting", ...} (503 when stale)
    /clips/NAME       a snapshot (.jpg) or clip (.mp4) from ``clips_folder``, when given

The server is the standard library's :class:`http.server.ThreadingHTTPServer`: one thread
per client suits a handful of viewers on a Pi, adds no dependency to the device install,
and lets each client block on its own socket without touching the pipeline; aiohttp would
bring an event loop and a package for no gain at this scale.

The pipeline thread only stores a reference to the latest result in :meth:`write` (and
copies its events); it wakes nobody unless the encoder is waiting for a newer frame. A
separate encoder thread draws and JPEG-encodes the latest result at most ``stream_fps``
times a second, and only when a stream client has sent the previous JPEG and waits for
the next one (or a snapshot is asked for): nobody watching, or only clients that stopped
reading, costs no encoding. Every client thread sends the latest JPEG, skipping whatever
it missed. A client that stops reading blocks its own thread until the socket's
``client_timeout_s`` drops it; it holds one JPEG, so memory does not grow. The encoder and
client threads run at a lower OS priority (``background_nice``, Linux), so where the
cores are busy the pipeline's threads come first.

Security: binding anything but a loopback address needs a token; a request without it
(``Authorization: Bearer TOKEN``, or ``?token=TOKEN`` for a browser's page and stream)
gets 401. Tokens are compared with :func:`hmac.compare_digest`; request paths are logged
without their query, and nothing but fixed routes is served (``..`` is refused).
"""

from __future__ import annotations

import errno
import hmac
import ipaddress
import logging
import os
import socket
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ubiq.errors import ConfigError
from ubiq.pipelines.sinks.annotate import Annotator, draw
from ubiq.pipelines.sinks.live_http import Handler, render_metrics
from ubiq.types import FrameResult

logger = logging.getLogger(__name__)

_WAIT_S = 0.5
_STALE_AFTER_S = 10.0


def lower_thread_priority(nice: int) -> None:
    """Raises the calling thread's nice value by ``nice`` (Linux, where ``setpriority`` on a
    thread id affects that thread only; a no-op elsewhere or when ``nice`` is 0)."""
    if nice <= 0 or not sys.platform.startswith("linux"):
        return
    thread_id = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, thread_id)
        os.setpriority(os.PRIO_PROCESS, thread_id, min(19, current + nice))
    except OSError as error:  # a sandbox without the call: run at the normal priority
        logger.debug("cannot lower the live view thread's priority: %s", error)


def parse_bind(value: str, *, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """Parses ``[HOST:]PORT`` (``8080``, ``:8080``, ``0.0.0.0:8080``, ``[::1]:8080``).

    Returns:
        ``(host, port)``; the host is ``default_host`` when not given.

    Raises:
        ConfigError: Naming the value, if the port is not an integer in 0..65535.
    """
    text = str(value).strip()
    host, port_text = default_host, text
    if text.startswith("["):
        closing = text.find("]")
        if closing < 0 or text[closing + 1 : closing + 2] != ":":
            raise ConfigError(f"expected [HOST:]PORT such as [::1]:8080, got {value!r}")
        host, port_text = text[1:closing], text[closing + 2 :]
    elif ":" in text:
        head, _, port_text = text.rpartition(":")
        host = head or default_host
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"expected [HOST:]PORT with a port in 0..65535, got {value!r}")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LiveViewSink:
    """Serves the annotated stream, counts, events, metrics and health over HTTP.

    The server starts when the sink is made (so a port in use fails before the run) and
    stops on :meth:`close`.

    Args:
        host: Address to bind; anything but loopback needs ``token``.
        port: TCP port (``0``: any free port; see :attr:`port`).
        token: Shared secret clients must send (at least 16 characters); required unless
            ``host`` is loopback, and enforced whenever given.
        stream_fps: Most JPEGs encoded per second for the stream (default 15).
        jpeg_quality: JPEG quality 1-100 (default 80).
        recent_events: Events kept for ``/events`` and new page clients (default 100).
        annotators: What to draw (default: masks, trails, boxes).
        source: The pipeline's source, read for ``dropped_frames`` (and ``queue_length``
            when it has one) in ``/metrics``.
        queues: Extra queue lengths for ``/metrics``: name -> ``() -> int``.
        title: Page title (default: ``ubiq live: SOURCE``).
        max_clients: Streams and event streams served at once; more get 503 (default 8).
        client_timeout_s: A client that accepts no data for this long is dropped.
        clips_folder: The clip recorder's folder: its snapshots and clips are served under
            ``/clips/NAME`` and linked from the page's alerts (default: none served).
        background_nice: How much lower the OS priority of the encoder and client threads
            is than the pipeline's (Linux nice steps, 0..19; default 10).

    Raises:
        ConfigError: If an option is out of range, a non-loopback bind has no token, or
            the address cannot be bound (a port in use), in one line naming it.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        token: str | None = None,
        stream_fps: float = 15.0,
        jpeg_quality: int = 80,
        recent_events: int = 100,
        annotators: Sequence[Annotator] | None = None,
        source: Any = None,
        queues: Mapping[str, Callable[[], int]] | None = None,
        title: str | None = None,
        max_clients: int = 8,
        client_timeout_s: float = 10.0,
        clips_folder: str | Path | None = None,
        background_nice: int = 10,
    ) -> None:
        if not stream_fps > 0:
            raise ConfigError(f"stream_fps must be > 0, got {stream_fps}")
        if not 1 <= int(jpeg_quality) <= 100:
            raise ConfigError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
        if recent_events < 1 or max_clients < 1:
            raise ConfigError(
                f"recent_events and max_clients must be >= 1, got {recent_events}, {max_clients}"
            )
        if not 0 <= int(background_nice) <= 19:
            raise ConfigError(f"background_nice must be in 0..19, got {background_nice}")
        if token is not None and len(token) < 16:
            raise ConfigError(
                f"the live view token must have at least 16 characters, got {len(token)}"
            )
        if token is None and not is_loopback(host):
            raise ConfigError(
                f"serving the live view on {host} (not loopback) needs a token; give one "
                "(--token-file) or bind 127.0.0.1"
            )
        self.host = host
        self.stream_fps = float(stream_fps)
        self.jpeg_quality = int(jpeg_quality)
        self.annotators = annotators
        self.source = source
        self.queues = dict(queues or {})
        source_id = str(getattr(source, "source_id", "") or "")
        self.source_id = source_id or "0"
        self.title = title or f"ubiq live: {self.source_id}"
        self.max_clients = max_clients
        self.client_timeout_s = client_timeout_s
        self.clips_folder = None if clips_folder is None else Path(clips_folder)
        self.background_nice = int(background_nice)
        self._token = token.encode() if token is not None else None
        self._lock = threading.Lock()
        # The encoder waits on _demand: a client ready for a JPEG, a snapshot request, or
        # (only while it asks for one, _wants_result) a newer result.
        self._demand = threading.Condition(self._lock)
        self._new_jpeg = threading.Condition(self._lock)
        self._new_state = threading.Condition(self._lock)
        self._latest: FrameResult | None = None
        self._result_seq = 0
        self._wants_result = False
        self._jpeg: bytes | None = None
        self._jpeg_seq = 0
        self._jpeg_result_seq = -1
        self._jpegs_encoded = 0
        self._snapshot_wanted = 0
        self._viewers = 0
        self._viewers_ready = 0
        self._clients = Counter()
        self._events: deque[tuple[int, dict]] = deque(maxlen=recent_events)
        self._event_seq = 0
        self._event_totals: Counter = Counter()
        self._frame_times: deque[float] = deque(maxlen=64)
        self._stage_ms: dict[str, deque[float]] = {}
        self._frames = 0
        self._first_timestamp_ns: int | None = None
        self._started_at = time.monotonic()
        self._last_frame_at: float | None = None
        self._runner: Any = None
        self._runner_keeps_stage_times = False
        self._temperature: tuple[float, float | None] = (-1e9, None)
        self._closed = threading.Event()
        self._server = _bind(host, port, self)
        self.port = int(self._server.server_address[1])
        self._threads = [
            threading.Thread(target=self._server.serve_forever, name="ubiq-live-http", daemon=True),
            threading.Thread(target=self._encode_loop, name="ubiq-live-encode", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        logger.info("live view on %s", self.url())

    def url(self, *, with_token: bool = False) -> str:
        """The page's address (with ``?token=`` when asked and a token is set)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if host in ("0.0.0.0", "[::]"):
            host = socket.gethostname()
        suffix = f"?token={self._token.decode()}" if with_token and self._token else ""
        return f"http://{host}:{self.port}/{suffix}"

    def attach(self, runner: Any) -> None:
        """Lets ``/metrics`` read the runner's per-stage times and health monitor (the
        runner calls it when it starts, where it supports it)."""
        self._runner = runner
        stage_ms = getattr(getattr(runner, "summary", None), "stage_ms", None)
        self._runner_keeps_stage_times = isinstance(stage_ms, dict)

    # -- the pipeline thread ----------------------------------------------------------

    def write(self, result: FrameResult) -> None:
        """Stores the result as the latest frame and records its events (cheap: no
        drawing or encoding happens on the pipeline's thread)."""
        now = time.monotonic()
        frame = result.frame
        # The runner keeps per-stage times itself once attached: then there is no need to.
        timings = None if self._runner_keeps_stage_times else result.timings_ms
        with self._lock:
            if self._first_timestamp_ns is None:
                self._first_timestamp_ns = int(frame.timestamp_ns)
                if self.source is None:
                    self.source_id = result.source_id
            if not result.final:
                self._latest = result
                self._result_seq += 1
                self._frames += 1
                self._frame_times.append(now)
                self._last_frame_at = now
                if timings:
                    for name, milliseconds in timings.items():
                        self._stage_ms.setdefault(name, deque(maxlen=120)).append(milliseconds)
                if self._wants_result:  # else nobody waits for it: wake nobody
                    self._wants_result = False
                    self._demand.notify()
            if not result.events:
                return
            seconds = (int(frame.timestamp_ns) - self._first_timestamp_ns) / 1e9
            for event in result.events:
                self._event_seq += 1
                self._events.append((self._event_seq, event.to_record(seconds, result.index)))
                self._event_totals[event.kind] += 1
            self._new_state.notify_all()

    def close(self) -> None:
        """Stops the server and its threads (clients are disconnected)."""
        if self._closed.is_set():
            return
        self._closed.set()
        with self._lock:
            for condition in (self._demand, self._new_jpeg, self._new_state):
                condition.notify_all()
        self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=2.0)

    # -- the encoder thread -----------------------------------------------------------

    def _encode_loop(self) -> None:
        lower_thread_priority(self.background_nice)
        interval_s = 1.0 / self.stream_fps
        next_at = 0.0
        while not self._closed.is_set():
            delay = next_at - time.monotonic()
            if delay > 0:
                self._closed.wait(delay)
            with self._lock:
                if not self._wait_for_demand():
                    continue
                result, result_seq = self._latest, self._result_seq
            next_at = time.monotonic() + interval_s
            image = draw(result, self.annotators)
            ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
            if not ok:
                logger.warning("could not encode frame %d as JPEG", result.index)
                continue
            with self._lock:
                self._jpeg = encoded.tobytes()
                self._jpeg_seq += 1
                self._jpeg_result_seq = result_seq
                self._jpegs_encoded += 1
                self._new_jpeg.notify_all()

    def _wait_for_demand(self) -> bool:
        """With the lock held: waits (at most ``_WAIT_S``) until a client that sent the last
        JPEG or a snapshot request wants one and a result newer than the last JPEG's exists.
        Asks :meth:`write` for a wake-up only while a result is all that is missing."""
        deadline = time.monotonic() + _WAIT_S
        while not self._closed.is_set():
            wanted = self._viewers_ready > 0 or self._snapshot_wanted > 0
            fresh = self._latest is not None and self._result_seq != self._jpeg_result_seq
            if wanted and fresh:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._wants_result = wanted
            self._demand.wait(remaining)
            self._wants_result = False
        return False

    def viewer_ready(self, ready: bool) -> None:
        """With the lock held: a stream client starts (or stops) waiting for a new JPEG."""
        if ready:
            self._viewers_ready += 1
            self._demand.notify()
        else:
            self._viewers_ready -= 1

    # -- what the handlers read -------------------------------------------------------

    def authorized(self, header: str | None, query_token: str | None) -> bool:
        """Whether a request carries the token (always true without one)."""
        if self._token is None:
            return True
        candidates = []
        if header and header[:7].lower() == "bearer ":
            candidates.append(header[7:].strip())
        if query_token:
            candidates.append(query_token)
        # Every candidate is compared, so timing does not tell which one was tried.
        matches = [hmac.compare_digest(c.encode(), self._token) for c in candidates]
        return any(matches)

    def snapshot(self, timeout_s: float = 2.0) -> bytes | None:
        """The latest annotated JPEG, encoding the newest frame first when no stream keeps
        it fresh; ``None`` before the first frame."""
        with self._lock:
            if self._latest is None:
                return None
            if self._jpeg is not None and self._jpeg_result_seq == self._result_seq:
                return self._jpeg
            self._snapshot_wanted += 1
            seq = self._jpeg_seq
            self._demand.notify()
            try:
                self._new_jpeg.wait_for(
                    lambda: self._jpeg_seq != seq or self._closed.is_set(), timeout=timeout_s
                )
            finally:
                self._snapshot_wanted -= 1
            return self._jpeg

    def fps(self) -> float:
        """Frames per second over the last 64 frames (0 once frames stop for 2 s)."""
        with self._lock:
            times = list(self._frame_times)
        if len(times) < 2 or time.monotonic() - times[-1] > 2.0:
            return 0.0
        return (len(times) - 1) / max(times[-1] - times[0], 1e-9)

    def counts(self) -> dict:
        """Objects per label in the latest frame, events per kind, frames, FPS."""
        with self._lock:
            result = self._latest
            totals = dict(self._event_totals)
            frames = self._frames
        objects: Counter = Counter()
        if result is not None and result.detections is not None:
            detections = result.detections
            ids, numbers = np.unique(detections.class_id, return_counts=True)
            for class_id, number in zip(ids.tolist(), numbers.tolist(), strict=True):
                objects[detections.label(int(class_id))] = int(number)
        return {
            "source": self.source_id,
            "frame": None if result is None else result.index,
            "frames": frames,
            "fps": round(self.fps(), 2),
            "objects": dict(sorted(objects.items())),
            "events": dict(sorted(totals.items())),
        }

    def recent_events(self, after: int = 0) -> list[tuple[int, dict]]:
        """``(sequence, record)`` of the kept events newer than ``after``."""
        with self._lock:
            return [(seq, record) for seq, record in self._events if seq > after]

    def health(self) -> tuple[int, dict]:
        """``(HTTP status, body)`` for ``/healthz``."""
        now = time.monotonic()
        with self._lock:
            last, frames = self._last_frame_at, self._frames
        age = None if last is None else now - last
        if last is None:
            status = "starting" if now - self._started_at < _STALE_AFTER_S else "stale"
        else:
            status = "ok" if age < _STALE_AFTER_S else "stale"
        body = {
            "status": status,
            "source": self.source_id,
            "frames": frames,
            "last_frame_age_s": None if age is None else round(age, 3),
        }
        return (503 if status == "stale" else 200), body

    def metrics(self) -> str:
        """Prometheus text exposition (version 0.0.4) of the run."""
        return render_metrics(self)

    def _stage_windows(self) -> dict[str, list[float]]:
        """The last ~120 times of every stage: the runner's when attached, else the ones
        the stages report in ``result.timings_ms``."""
        windows: dict[str, list[float]] = {}
        summary = getattr(self._runner, "summary", None)
        stage_ms = getattr(summary, "stage_ms", None)
        if isinstance(stage_ms, dict):
            for name, values in list(stage_ms.items()):
                windows[name] = list(values[-120:])
        with self._lock:
            for name, values in self._stage_ms.items():
                windows.setdefault(name, list(values))
        return windows

    def _temperature_c(self) -> float | None:
        """The hottest thermal zone: the runner's health monitor's last sample, else read
        here at most every 5 s."""
        last = getattr(getattr(self._runner, "health", None), "last", None)
        if last is not None:
            return last.temperature_c
        read_at, value = self._temperature
        if time.monotonic() - read_at > 5.0:
            from ubiq.hardware.health import read_thermal_zones

            zones = read_thermal_zones()
            value = max(zones.values()) if zones else None
            self._temperature = (time.monotonic(), value)
        return value


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, sink: LiveViewSink, family: int) -> None:
        self.address_family = family
        self.sink = sink
        super().__init__(address, Handler)


def _bind(host: str, port: int, sink: LiveViewSink) -> _Server:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return _Server((host, port), sink, family)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            message = f"port {port} is in use on {host}; choose another with --serve"
        else:
            message = error.strerror or str(error)
        raise ConfigError(f"cannot serve the live view on {host}:{port}: {message}") from error
