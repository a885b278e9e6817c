"""The live view's HTTP surface: the request handler (auth, fixed routes, MJPEG, SSE, the
clip folder's files) and the Prometheus text of ``/metrics``. The state it serves is
:class:`~ubiq.pipelines.sinks.live.LiveViewSink`'s."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from ubiq.pipelines.summary import RunSummary

if TYPE_CHECKING:
    from ubiq.pipelines.sinks.live import LiveViewSink

logger = logging.getLogger(__name__)

PAGE_PATH = Path(__file__).with_name("live_page.html")
BOUNDARY = "ubiqframe"
_WAIT_S = 0.5
_SEND_BUFFER_BYTES = 256 * 1024
_COUNTS_EVERY_S = 1.0
_CLIPS_PREFIX = "/clips/"
# What the clip recorder names its files: one path component, no leading dot.
_CLIP_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,200}\.(jpg|mp4)")
_CLIP_TYPES = {"jpg": "image/jpeg", "mp4": "video/mp4"}
_FILE_CHUNK_BYTES = 256 * 1024
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_CLIENT_ERRORS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_PAGE_POLICY = (
    "default-src 'none'; img-src 'self'; connect-src 'self'; "
    "style-src 'unsafe-inline'; script-src 'unsafe-inline'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)


class Handler(BaseHTTPRequestHandler):
    """One client connection; ``self.server.sink`` is the live view it serves."""

    server_version = "ubiq-live"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        from ubiq.pipelines.sinks.live import lower_thread_priority

        lower_thread_priority(self.server.sink.background_nice)
        self.timeout = self.server.sink.client_timeout_s
        super().setup()

    @property
    def sink(self) -> LiveViewSink:
        return self.server.sink

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        # The request line carries ?token=: log the path alone.
        path = urlsplit(getattr(self, "path", "") or "").path
        logger.debug("%s %s %s", self.client_address[0], path, args[1] if len(args) > 1 else "")

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        if ".." in path.split("/") or "\\" in path or "\x00" in path or "//" in path:
            self._send_text(400, "bad path\n")
            return
        query = parse_qs(parts.query)
        if not self.sink.authorized(
            self.headers.get("Authorization"), (query.get("token") or [None])[0]
        ):
            self._send_text(401, "a token is needed\n", {"WWW-Authenticate": 'Bearer realm="ubiq"'})
            return
        if path.startswith(_CLIPS_PREFIX):
            self._clip_file(path[len(_CLIPS_PREFIX) :])
            return
        route = _ROUTES.get(path)
        if route is None:
            self._send_text(404, "not found\n")
            return
        route(self)

    def do_HEAD(self) -> None:  # noqa: N802
        self._send_text(405, "method not allowed\n", {"Allow": "GET"})

    do_POST = do_PUT = do_DELETE = do_HEAD  # noqa: N815

    # -- responses --------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str, headers=None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in {**_SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(body)
        except _CLIENT_ERRORS + (socket.timeout,):
            self.close_connection = True

    def _send_text(self, status: int, text: str, headers=None) -> None:
        self._send(status, text.encode(), "text/plain; charset=utf-8", headers)

    def _send_json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _page(self) -> None:
        page = PAGE_PATH.read_text(encoding="utf-8")
        page = page.replace("{{title}}", _html_escape(self.sink.title))
        page = page.replace("{{clips}}", "1" if self.sink.clips_folder is not None else "")
        self._send(
            200,
            page.encode(),
            "text/html; charset=utf-8",
            {"Content-Security-Policy": _PAGE_POLICY},
        )

    def _snapshot(self) -> None:
        jpeg = self.sink.snapshot()
        if jpeg is None:
            self._send_text(503, "no frame yet\n", {"Retry-After": "1"})
            return
        self._send(200, jpeg, "image/jpeg")

    def _events(self) -> None:
        self._send_json(200, {"events": [record for _, record in self.sink.recent_events()]})

    def _metrics(self) -> None:
        self._send(200, self.sink.metrics().encode(), "text/plain; version=0.0.4; charset=utf-8")

    def _healthz(self) -> None:
        self._send_json(*self.sink.health())

    def _clip_file(self, name: str) -> None:
        """A snapshot or clip from the sink's ``clips_folder`` (one file name, ``.jpg`` or
        ``.mp4``; anything else is 404), with ``Range`` support so browsers can seek."""
        folder = self.sink.clips_folder
        match = _CLIP_NAME.fullmatch(name)
        if folder is None or match is None:
            self._send_text(404, "not found\n")
            return
        path = folder / name
        try:
            # The folder's own files only: a link pointing out of it is refused.
            inside = path.resolve(strict=True).parent == folder.resolve(strict=True)
            handle = open(path, "rb") if inside else None  # noqa: SIM115 - closed below
        except OSError:
            inside, handle = False, None
        if handle is None:
            # A clip appears once its post-roll is written (it is renamed into place).
            self._send_text(404, "not found (a clip appears when its post-roll ends)\n")
            return
        with handle:
            size = os.fstat(handle.fileno()).st_size
            start, end, status = 0, size - 1, 200
            headers = {"Accept-Ranges": "bytes", "Cache-Control": "private, max-age=3600"}
            wanted = _RANGE.fullmatch(self.headers.get("Range", "").strip())
            if wanted and (wanted.group(1) or wanted.group(2)):
                first, last = wanted.groups()
                if first:
                    start, end = int(first), min(int(last), size - 1) if last else size - 1
                else:
                    start = max(0, size - int(last))
                if start > end or start >= size:
                    self._send_text(
                        416, "range not satisfiable\n", {"Content-Range": f"bytes */{size}"}
                    )
                    return
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            self.send_response(status)
            self.send_header("Content-Type", _CLIP_TYPES[match.group(1)])
            self.send_header("Content-Length", str(end - start + 1))
            for header, value in {**_SECURITY_HEADERS, **headers}.items():
                self.send_header(header, value)
            self.end_headers()
            handle.seek(start)
            remaining = end - start + 1
            try:
                while remaining > 0:
                    chunk = handle.read(min(_FILE_CHUNK_BYTES, remaining))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    remaining -= len(chunk)
            except _CLIENT_ERRORS + (socket.timeout,):
                self.close_connection = True

    def _open_stream(self, kind: str, content_type: str) -> bool:
        """Counts the client in, or answers 503 when too many are connected."""
        sink = self.sink
        with sink._lock:
            if sum(sink._clients.values()) >= sink.max_clients:
                full = True
            else:
                full = False
                sink._clients[kind] += 1
                if kind == "stream":
                    sink._viewers += 1
        if full:
            self._send_text(503, "too many clients\n", {"Retry-After": "5"})
            return False
        self.close_connection = True
        # A small send buffer: a client that stops reading fills it within a few frames and
        # is dropped after client_timeout_s instead of the kernel queueing megabytes.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SEND_BUFFER_BYTES)
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        for name, value in _SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()
        return True

    def _close_stream(self, kind: str) -> None:
        sink = self.sink
        with sink._lock:
            sink._clients[kind] -= 1
            if kind == "stream":
                sink._viewers -= 1

    def _stream(self) -> None:
        """MJPEG: sends each new JPEG; a slow client skips the ones it missed."""
        sink = self.sink
        if not self._open_stream("stream", f"multipart/x-mixed-replace; boundary={BOUNDARY}"):
            return
        sent = -1
        try:
            while not sink._closed.is_set():
                with sink._lock:
                    if sink._jpeg is None or sink._jpeg_seq == sent:
                        # Sent the latest: ready for the next one, which the encoder makes
                        # only for clients that are ready.
                        sink.viewer_ready(True)
                        last = sink._jpeg_seq
                        try:
                            sink._new_jpeg.wait_for(
                                lambda last=last: sink._jpeg_seq != last or sink._closed.is_set(),
                                timeout=_WAIT_S,
                            )
                        finally:
                            sink.viewer_ready(False)
                    jpeg, seq = sink._jpeg, sink._jpeg_seq
                if jpeg is None or seq == sent:
                    continue
                sent = seq
                head = (
                    f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                    f"Content-Length: {len(jpeg)}\r\n\r\n"
                ).encode()
                self.wfile.write(head + jpeg + b"\r\n")
        except _CLIENT_ERRORS + (socket.timeout,):
            pass
        finally:
            self._close_stream("stream")

    def _event_stream(self) -> None:
        """Server-Sent Events: ``counts`` every second, one ``event`` per new event (the
        kept ones first)."""
        sink = self.sink
        if not self._open_stream("events", "text/event-stream; charset=utf-8"):
            return
        try:
            self.wfile.write(b"retry: 2000\n\n")
            after = 0
            last_counts = 0.0
            while not sink._closed.is_set():
                for seq, record in sink.recent_events(after):
                    after = seq
                    data = json.dumps(record, separators=(",", ":"))
                    self.wfile.write(f"id: {seq}\nevent: event\ndata: {data}\n\n".encode())
                now = time.monotonic()
                if now - last_counts >= _COUNTS_EVERY_S:
                    last_counts = now
                    data = json.dumps(sink.counts(), separators=(",", ":"))
                    self.wfile.write(f"event: counts\ndata: {data}\n\n".encode())
                with sink._lock:
                    sink._new_state.wait_for(
                        lambda after=after: sink._event_seq != after or sink._closed.is_set(),
                        timeout=_COUNTS_EVERY_S,
                    )
        except _CLIENT_ERRORS + (socket.timeout,):
            pass
        finally:
            self._close_stream("events")


_ROUTES = {
    "/": Handler._page,
    "/index.html": Handler._page,
    "/stream.mjpg": Handler._stream,
    "/events/stream": Handler._event_stream,
    "/snapshot.jpg": Handler._snapshot,
    "/events": Handler._events,
    "/metrics": Handler._metrics,
    "/healthz": Handler._healthz,
}


def _html_escape(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def _label(value: Any) -> str:
    """A Prometheus label value, escaped."""
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_metrics(sink: LiveViewSink) -> str:
    """Prometheus text exposition (version 0.0.4) of what the sink knows about the run.

    Metrics: ``ubiq_frames_total``, ``ubiq_fps``, ``ubiq_stage_latency_ms`` (p50 and p90 of
    the last ~120 frames per stage), ``ubiq_dropped_frames_total``, ``ubiq_queue_length``,
    ``ubiq_events_total``, ``ubiq_live_clients``, ``ubiq_live_jpegs_encoded_total`` and,
    when a thermal zone is readable, ``ubiq_temperature_celsius``. No credential is ever
    part of it.
    """
    source = _label(sink.source_id)
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lines.append(f"{name}{{{labels}}} {value:.6g}" if labels else f"{name} {value:.6g}")

    with sink._lock:
        frames, encoded = sink._frames, sink._jpegs_encoded
        clients = dict(sink._clients)
        totals = dict(sink._event_totals)
    base = f'source="{source}"'
    metric("ubiq_frames_total", "counter", "Frames the pipeline finished.", [(base, frames)])
    metric("ubiq_fps", "gauge", "Frames per second over the last 64 frames.", [(base, sink.fps())])
    summary = RunSummary()
    latency = []
    for stage, values in sorted(sink._stage_windows().items()):
        for quantile in (50, 90):
            value = summary.percentile_ms(values, quantile)
            latency.append((f'{base},stage="{_label(stage)}",quantile="0.{quantile // 10}"', value))
    metric("ubiq_stage_latency_ms", "gauge", "Per-stage time in milliseconds.", latency)
    dropped = int(getattr(sink.source, "dropped_frames", 0) or 0)
    metric(
        "ubiq_dropped_frames_total",
        "counter",
        "Live frames replaced by a newer one before being processed.",
        [(base, dropped)],
    )
    queues = dict(sink.queues)
    queue_length = getattr(sink.source, "queue_length", None)
    if queue_length is not None:
        queues.setdefault("source", lambda: queue_length)
    queue_samples = []
    for name, read in sorted(queues.items()):
        value = read() if callable(read) else read
        queue_samples.append((f'{base},queue="{_label(name)}"', float(value)))
    metric("ubiq_queue_length", "gauge", "Items waiting in a queue.", queue_samples)
    metric(
        "ubiq_events_total",
        "counter",
        "Events the pipeline produced, by kind.",
        [(f'{base},kind="{_label(kind)}"', count) for kind, count in sorted(totals.items())],
    )
    metric(
        "ubiq_live_clients",
        "gauge",
        "Connected live view clients by kind.",
        [(f'{base},kind="{kind}"', clients.get(kind, 0)) for kind in ("events", "stream")],
    )
    metric(
        "ubiq_live_jpegs_encoded_total",
        "counter",
        "Frames the live view encoded as JPEG.",
        [(base, encoded)],
    )
    temperature = sink._temperature_c()
    if temperature is not None:
        metric(
            "ubiq_temperature_celsius",
            "gauge",
            "Hottest thermal zone.",
            [("", temperature)],
        )
    return "\n".join(lines) + "\n"
