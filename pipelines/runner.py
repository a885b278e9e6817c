"""The runner: pulls frames from a source through a pipeline into sinks, with metrics.

Capture runs in the source's own thread; the runner's loop preprocesses, infers,
postprocesses and writes. Ctrl-C and SIGTERM stop the loop cleanly: the source is
stopped, and every sink is closed (the video file finalised, the JSONL flushed).
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ubiq.errors import ConfigError, UbiqError
from ubiq.resources import peak_rss_mb
from ubiq.systemd import Watchdog, notify
from ubiq.types import Detections, Event, Frame

if TYPE_CHECKING:
    from ubiq.hardware.health import HealthMonitor

logger = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """What a run did.

    Attributes:
        frames: Frames processed.
        elapsed_s: Wall time from the first frame's arrival to the last frame written
            (opening and closing the source are not counted).
        latency_ms: Per-frame processing time (preprocess + inference + postprocess + sinks).
        inference_ms: Per-frame backend time.
        detections: Total detections over all frames.
        frames_with_detections: Frames with at least one detection.
        dropped_frames: Live frames replaced by a newer one before being processed.
        reconnects: Times a live source reopened.
        stopped_by: ``"end"``, ``"max-frames"``, ``"signal"`` or ``"window"``.
        peak_rss_mb: Peak resident memory of the process.
        max_temperature_c: Hottest temperature seen by the health monitor (``None``: no
            monitor, or no readable sensor).
        throttle_events: Times throttling started (``None``: no monitor).
    """

    frames: int = 0
    elapsed_s: float = 0.0
    latency_ms: list[float] = field(default_factory=list)
    inference_ms: list[float] = field(default_factory=list)
    detections: int = 0
    frames_with_detections: int = 0
    dropped_frames: int = 0
    reconnects: int = 0
    stopped_by: str = "end"
    peak_rss_mb: float = 0.0
    max_temperature_c: float | None = None
    throttle_events: int | None = None

    @property
    def fps(self) -> float:
        return self.frames / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def percentile_ms(self, values: Sequence[float], q: float) -> float:
        return float(np.percentile(values, q)) if len(values) else 0.0

    def to_dict(self) -> dict:
        """Returns the summary as JSON-safe numbers (health fields only when known)."""
        data = {
            "frames": self.frames,
            "elapsed_s": round(self.elapsed_s, 3),
            "fps": round(self.fps, 2),
            "latency_p50_ms": round(self.percentile_ms(self.latency_ms, 50), 2),
            "latency_p90_ms": round(self.percentile_ms(self.latency_ms, 90), 2),
            "inference_p50_ms": round(self.percentile_ms(self.inference_ms, 50), 2),
            "inference_p90_ms": round(self.percentile_ms(self.inference_ms, 90), 2),
            "detections": self.detections,
            "frames_with_detections": self.frames_with_detections,
            "dropped_frames": self.dropped_frames,
            "reconnects": self.reconnects,
            "stopped_by": self.stopped_by,
            "peak_rss_mb": round(self.peak_rss_mb, 1),
        }
        if self.max_temperature_c is not None:
            data["max_temperature_c"] = round(self.max_temperature_c, 1)
        if self.throttle_events is not None:
            data["throttle_events"] = self.throttle_events
        return data

    def line(self) -> str:
        """One human line for stderr."""
        data = self.to_dict()
        text = (
            f"{data['frames']} frames in {data['elapsed_s']:.2f} s ({data['fps']:.1f} FPS), "
            f"latency p50 {data['latency_p50_ms']:.1f} ms p90 {data['latency_p90_ms']:.1f} ms "
            f"(inference p50 {data['inference_p50_ms']:.1f} ms), "
            f"{data['detections']} detections in {data['frames_with_detections']} frames, "
            f"{data['dropped_frames']} dropped, {data['reconnects']} reconnects, "
            f"peak RSS {data['peak_rss_mb']:.0f} MB, stopped by {data['stopped_by']}"
        )
        if "max_temperature_c" in data:
            text += f", max {data['max_temperature_c']:.1f} C"
        if "throttle_events" in data:
            text += f", {data['throttle_events']} throttle events"
        return text


class Runner:
    """Runs ``process(frame) -> Detections`` over a source and feeds the sinks.

    Args:
        source: A ``ubiq.hardware.sources`` source (context manager, iterable of Frames).
        process: The pipeline; it may expose ``last_inference_ms`` for metrics.
        sinks: Objects with ``write(frame, detections)`` and ``close()``.
        max_frames: Stop after this many frames (``None``: until the source ends).
        on_frame: Optional callback after each frame (for progress displays).
        health: Optional ``HealthMonitor``; sampled at most every ``health.interval_s``
            (only a clock check per frame), its events logged at WARNING.
        on_event: Optional callback for health events (e.g. to write them to a sink).
    """

    def __init__(
        self,
        source,
        process: Callable[[Frame], Detections],
        sinks: Sequence = (),
        *,
        max_frames: int | None = None,
        on_frame: Callable[[Frame, Detections], None] | None = None,
        health: HealthMonitor | None = None,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        if max_frames is not None and max_frames < 1:
            raise ConfigError(f"--max-frames must be >= 1, got {max_frames}")
        self.source = source
        self.process = process
        self.sinks = list(sinks)
        self.max_frames = max_frames
        self.on_frame = on_frame
        self.health = health
        self._watchdog = Watchdog()
        self.on_event = on_event
        self._next_health_at = 0.0
        self._stop = threading.Event()
        self._stop_reason = "signal"
        self._first_frame_at: float | None = None
        self._last_frame_done_at: float | None = None

    def stop(self, reason: str = "signal") -> None:
        """Asks the loop to end after the current frame (thread- and signal-safe)."""
        self._stop_reason = reason
        self._stop.set()
        stop_source = getattr(self.source, "stop", None)
        if stop_source is not None:
            stop_source()

    def run(self) -> RunSummary:
        """Processes frames until the source ends, ``max_frames``, a signal or ``stop()``.

        Returns:
            The run's summary; sinks are closed whatever happens.
        """
        summary = RunSummary()
        restore = self._install_signal_handlers()
        self._first_frame_at = self._last_frame_done_at = None
        self._next_health_at = 0.0
        try:
            with self.source:
                notify("READY=1")  # under systemd Type=notify: the source is open
                self._loop(summary)
        except KeyboardInterrupt:
            summary.stopped_by = "signal"
        finally:
            if self._first_frame_at is not None and self._last_frame_done_at is not None:
                summary.elapsed_s = self._last_frame_done_at - self._first_frame_at
            summary.dropped_frames = int(getattr(self.source, "dropped_frames", 0))
            summary.reconnects = int(getattr(self.source, "reconnects", 0))
            summary.peak_rss_mb = peak_rss_mb()
            if self.health is not None:
                summary.max_temperature_c = self.health.max_temperature_c
                summary.throttle_events = self.health.throttle_events
            notify("STOPPING=1")
            self._close_sinks()
            restore()
        return summary

    def _frames(self) -> Iterator[tuple[Frame, object, float]]:
        """Frames, each with the pipeline's ``prepare`` result and its duration in ms.

        For files the preparation (resize, normalise) runs one frame ahead in a thread of
        its own, so it overlaps inference; live sources are prepared in the loop, so a
        frame never waits in a queue while a newer one arrives.
        """
        prepare = getattr(self.process, "prepare", None)
        if prepare is None or getattr(self.source, "is_live", True):
            for frame in self.source:
                yield frame, None, 0.0
            return
        ready: queue.Queue = queue.Queue(maxsize=2)
        halt = threading.Event()
        done = object()

        def halted() -> bool:
            return halt.is_set() or self._stop.is_set()

        def hand_over(item: object) -> bool:
            """Puts ``item`` unless the loop has stopped listening; False when halted."""
            while not halted():
                try:
                    ready.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        def work() -> None:
            try:
                for frame in self.source:
                    began = time.perf_counter()
                    item = (frame, prepare(frame), (time.perf_counter() - began) * 1e3)
                    if not hand_over(item):
                        return
            except BaseException as error:  # noqa: BLE001 - handed to the loop and re-raised
                hand_over(error)
                return
            hand_over(done)

        thread = threading.Thread(target=work, name="ubiq-prefetch", daemon=True)
        thread.start()
        try:
            while True:
                try:
                    item = ready.get(timeout=0.05)
                except queue.Empty:
                    if self._stop.is_set() or not thread.is_alive():
                        return
                    continue
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            halt.set()
            stop_source = getattr(self.source, "stop", None)
            if stop_source is not None and thread.is_alive():
                stop_source()  # unblocks a worker waiting on the source
            thread.join(timeout=5.0)
            if thread.is_alive():
                logger.warning("the prefetch thread did not stop within 5 s")

    def _loop(self, summary: RunSummary) -> None:
        complete = getattr(self.process, "complete", None)
        for frame, prepared, prepare_ms in self._frames():
            if self._stop.is_set():
                break
            began = time.perf_counter() - prepare_ms / 1e3
            if self._first_frame_at is None:
                self._first_frame_at = began
            if prepared is not None and complete is not None:
                detections = complete(frame, prepared)
            else:
                detections = self.process(frame)
            for sink in self.sinks:
                sink.write(frame, detections)
            self._watchdog.ping()
            self._last_frame_done_at = time.perf_counter()
            summary.latency_ms.append((self._last_frame_done_at - began) * 1e3)
            inference_ms = getattr(self.process, "last_inference_ms", None)
            if inference_ms is not None:
                summary.inference_ms.append(inference_ms)
            summary.frames += 1
            summary.detections += len(detections)
            summary.frames_with_detections += bool(len(detections))
            if self.on_frame is not None:
                self.on_frame(frame, detections)
            if self.health is not None and self._last_frame_done_at >= self._next_health_at:
                self._sample_health(self._last_frame_done_at)
            if any(getattr(sink, "stop_requested", False) for sink in self.sinks):
                summary.stopped_by = "window"
                break
            if self.max_frames is not None and summary.frames >= self.max_frames:
                summary.stopped_by = "max-frames"
                break
        if self._stop.is_set():
            summary.stopped_by = self._stop_reason

    def _sample_health(self, now: float) -> None:
        """Samples the health monitor; a failing sensor read is logged, never fatal."""
        self._next_health_at = now + self.health.interval_s
        try:
            _health, events = self.health.sample()
        except (OSError, ValueError) as error:
            logger.warning("health sample failed: %s", error)
            return
        for event in events:
            logger.warning("%s: %s", event.kind, dict(event.payload))
            if self.on_event is not None:
                self.on_event(event)

    def _close_sinks(self) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            except (OSError, UbiqError) as error:
                logger.error("could not close %s: %s", type(sink).__name__, error)

    def _install_signal_handlers(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {}

        def handle(signum, _frame) -> None:
            if self._stop.is_set():
                # A second signal: do not wait for anything; sinks still close in run().
                raise KeyboardInterrupt
            logger.warning("received %s; stopping", signal.Signals(signum).name)
            self.stop("signal")

        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, handle)

        def restore() -> None:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

        return restore
