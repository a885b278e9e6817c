"""The runner: pulls frames from a source through a pipeline's stages into its sinks.

Capture runs in the source's own thread; for files, the stages' ``prepare`` (resize,
normalise, and for a model with several streams the start of its inference) runs ahead on
a prefetch thread, as many frames as the stages have in flight (at least two); the loop
runs the stages in order and hands each finished :class:`~ubiq.types.FrameResult` to
every sink. Ctrl-C and SIGTERM stop the loop cleanly: the source is stopped, and every
sink is closed (the video file finalised, the JSONL flushed). :func:`run_many` runs one
runner per source side by side.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ubiq.errors import ConfigError, UbiqError
from ubiq.pipelines.stage import named_stages
from ubiq.pipelines.summary import RunSummary
from ubiq.prefetch import Prefetcher
from ubiq.resources import peak_rss_mb
from ubiq.systemd import Watchdog, notify
from ubiq.types import Event, Frame, FrameResult

if TYPE_CHECKING:
    from ubiq.hardware.health import HealthMonitor

logger = logging.getLogger(__name__)

__all__ = ["RunSummary", "Runner", "check_max_frames", "run_many"]


def check_max_frames(max_frames: int | None) -> None:
    """Validates ``max_frames`` (``None`` or an integer >= 1).

    Raises:
        ConfigError: Naming the value.
    """
    if max_frames is None:
        return
    if isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1:
        raise ConfigError(f"max_frames must be an integer >= 1, got {max_frames!r}")


class Runner:
    """Runs stages over a source's frames and feeds the finished results to the sinks.

    Args:
        source: A ``ubiq.hardware.sources`` source (context manager, iterable of Frames).
        stages: Callables ``result -> result`` (see :mod:`ubiq.pipelines.stage`), in order.
        sinks: Objects with ``write(result)`` and ``close()``.
        max_frames: Stop after this many frames (``None``: until the source ends).
        on_result: Called with each finished result, after the sinks. When the source
            ends, stages with ``finish() -> list[Event]`` (a tracker ending its tracks, a
            speech segmenter closing an utterance) give one more, ``final`` result.
        on_event: Called with each event a frame produced (health events included).
        health: Optional ``HealthMonitor``; sampled at most every ``health.interval_s``
            (only a clock check per frame); its events join the frame's result.
        prefetch: Run the stages' ``prepare`` one frame ahead for files (default True).

    Raises:
        ConfigError: If ``max_frames`` is not ``None`` or an integer >= 1, or a stage is not
            callable.
    """

    def __init__(
        self,
        source,
        stages: Sequence[Callable[[FrameResult], FrameResult]] | Callable,
        sinks: Sequence = (),
        *,
        max_frames: int | None = None,
        on_result: Callable[[FrameResult], None] | None = None,
        on_event: Callable[[Event], None] | None = None,
        health: HealthMonitor | None = None,
        prefetch: bool = True,
    ) -> None:
        check_max_frames(max_frames)
        self.source = source
        self.stages = named_stages(stages)
        self.sinks = list(sinks)
        self.max_frames = max_frames
        self.on_result = on_result
        self.on_event = on_event
        self.health = health
        self.prefetch = prefetch
        self.summary = RunSummary(source_id=str(getattr(source, "source_id", "")))
        self._watchdog = Watchdog()
        self._next_health_at = 0.0
        self._stop = threading.Event()
        self._stop_reason = "signal"
        self._first_frame_at: float | None = None
        self._last_frame_done_at: float | None = None
        self._last_frame: Frame | None = None

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
        restore = self._install_signal_handlers()
        try:
            for _ in self.results():
                pass
        finally:
            restore()
        return self.summary

    def results(self) -> Iterator[FrameResult]:
        """Yields each finished result (after the sinks), opening the source first.

        The summary is in :attr:`summary` once the iterator ends; the sinks and stages are
        closed when it ends or is closed. No signal handlers are installed (see
        :meth:`run`).
        """
        summary = self.summary = RunSummary(source_id=self.summary.source_id)
        for sink in self.sinks:  # a live view reads the runner's summary and health
            attach = getattr(sink, "attach", None)
            if callable(attach):
                attach(self)
        self._first_frame_at = self._last_frame_done_at = None
        self._last_frame = None
        self._next_health_at = 0.0
        try:
            with self.source:
                notify("READY=1")  # under systemd Type=notify: the source is open
                yield from self._loop(summary)
                yield from self._finish(summary)
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
            self._close_all()

    def _preparers(self) -> list[tuple[str, Callable[[Frame], Any]]]:
        return [
            (name, stage.prepare)
            for name, stage in self.stages
            if callable(getattr(stage, "prepare", None))
        ]

    def _frames(self) -> Iterator[tuple[Frame, dict[str, Any], dict[str, float]]]:
        """Frames, each with the stages' ``prepare`` results and their times in ms.

        For files the preparation runs one frame ahead on a thread of its own, so it
        overlaps the stages; live sources are prepared by the stages themselves, so a frame
        never waits in a queue while a newer one arrives.
        """
        preparers = self._preparers()
        if not preparers or not self.prefetch or getattr(self.source, "is_live", True):
            for frame in self.source:
                yield frame, {}, {}
            return

        def produce() -> Iterator[tuple[Frame, dict[str, Any], dict[str, float]]]:
            for frame in self.source:
                prepared, times = {}, {}
                for name, prepare in preparers:
                    began = time.perf_counter()
                    prepared[name] = prepare(frame)
                    times[f"{name}.prepare"] = (time.perf_counter() - began) * 1e3
                yield frame, prepared, times

        # A stage that infers several frames at once needs that many prepared ahead.
        flights = [getattr(stage, "in_flight", 1) for _, stage in self.stages]
        depth = max([2, *(n for n in flights if isinstance(n, int))])
        prefetcher = Prefetcher(produce, maxsize=depth, name="ubiq-prefetch").start()
        try:
            for item in prefetcher:
                if self._stop.is_set():
                    return
                yield item
        finally:
            stop_source = getattr(self.source, "stop", None)
            if stop_source is not None and prefetcher.alive:
                stop_source()  # unblocks a producer waiting on the source
            prefetcher.close()

    def _loop(self, summary: RunSummary) -> Iterator[FrameResult]:
        for frame, prepared, prepare_ms in self._frames():
            if self._stop.is_set():
                break
            began = time.perf_counter() - sum(prepare_ms.values()) / 1e3
            if self._first_frame_at is None:
                self._first_frame_at = began
            self._last_frame = frame
            result = FrameResult(frame, prepared=prepared)
            for name, milliseconds in prepare_ms.items():
                summary.add_time(name, milliseconds)
            for name, stage in self.stages:
                started = time.perf_counter()
                result = stage(result)
                if not isinstance(result, FrameResult):
                    raise UbiqError(
                        f"stage {name!r} returned {type(result).__name__}; a stage must "
                        "return the FrameResult it was given"
                    )
                summary.add_time(name, (time.perf_counter() - started) * 1e3)
            if self.health is not None and time.perf_counter() >= self._next_health_at:
                self._sample_health(result)
            started = time.perf_counter()
            for sink in self.sinks:
                sink.write(result)
            self._watchdog.ping()
            self._last_frame_done_at = time.perf_counter()
            summary.add_time("sinks", (self._last_frame_done_at - started) * 1e3)
            summary.latency_ms.append((self._last_frame_done_at - began) * 1e3)
            summary.count(result)
            if self.on_event is not None:
                for event in result.events:
                    self.on_event(event)
            if self.on_result is not None:
                self.on_result(result)
            yield result
            if any(getattr(sink, "stop_requested", False) for sink in self.sinks):
                summary.stopped_by = "window"
                break
            if self.max_frames is not None and summary.frames >= self.max_frames:
                summary.stopped_by = "max-frames"
                break
        if self._stop.is_set():
            summary.stopped_by = self._stop_reason

    def _finish(self, summary: RunSummary) -> Iterator[FrameResult]:
        """Asks every stage with ``finish() -> list[Event]`` for what is still open when
        the source ends, and hands it to the sinks as one ``final`` result."""
        events: list[Event] = []
        for _name, stage in self.stages:
            finish = getattr(stage, "finish", None)
            if callable(finish):
                events.extend(finish() or ())
        if not events or self._last_frame is None:
            return
        result = FrameResult(self._last_frame, events=events, final=True)
        for sink in self.sinks:
            sink.write(result)
        summary.events.update(event.kind for event in events)
        if self.on_event is not None:
            for event in events:
                self.on_event(event)
        if self.on_result is not None:
            self.on_result(result)
        yield result

    def _sample_health(self, result: FrameResult) -> None:
        """Samples the health monitor into the result's events; a failing sensor read is
        logged, never fatal."""
        self._next_health_at = time.perf_counter() + self.health.interval_s
        try:
            _health, events = self.health.sample()
        except (OSError, ValueError) as error:
            logger.warning("health sample failed: %s", error)
            return
        for event in events:
            logger.warning("%s: %s", event.kind, dict(event.payload))
            result.events.append(event)

    def _close_all(self) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            except (OSError, UbiqError) as error:
                logger.error("could not close %s: %s", type(sink).__name__, error)
        for name, stage in self.stages:
            close = getattr(stage, "close", None)
            if callable(close):
                try:
                    close()
                except (OSError, UbiqError) as error:
                    logger.error("could not close stage %s: %s", name, error)

    def _install_signal_handlers(self) -> Callable[[], None]:
        return install_stop_handlers([self])


def install_stop_handlers(runners: Sequence[Runner]) -> Callable[[], None]:
    """SIGINT and SIGTERM stop every runner (a second signal interrupts at once).

    Returns:
        A function that restores the previous handlers (a no-op off the main thread).
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {}
    stopping = threading.Event()

    def handle(signum, _frame) -> None:
        if stopping.is_set():
            # A second signal: do not wait for anything; sinks still close.
            raise KeyboardInterrupt
        stopping.set()
        logger.warning("received %s; stopping", signal.Signals(signum).name)
        for runner in runners:
            runner.stop("signal")

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, handle)

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    return restore


def run_many(runners: Sequence[Runner]) -> list[RunSummary]:
    """Runs several runners side by side (one thread each), e.g. one per camera.

    A signal stops them all; a runner that fails stops the others, and its error is
    raised once every runner has closed its sinks.

    Returns:
        One summary per runner, in order.
    """
    runners = list(runners)
    if len(runners) == 1:
        return [runners[0].run()]
    errors: list[BaseException] = []

    def work(runner: Runner) -> None:
        try:
            runner.run()
        except BaseException as error:  # noqa: BLE001 - re-raised on the calling thread
            errors.append(error)
            for other in runners:
                other.stop("error")

    threads = [
        threading.Thread(target=work, args=(runner,), name=f"ubiq-run-{position}", daemon=True)
        for position, runner in enumerate(runners)
    ]
    restore = install_stop_handlers(runners)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=0.1)  # short joins let the main thread take signals
    except KeyboardInterrupt:
        for runner in runners:
            runner.stop("signal")
        for thread in threads:
            thread.join(timeout=5.0)
    finally:
        restore()
    if errors:
        raise errors[0]
    return [runner.summary for runner in runners]
