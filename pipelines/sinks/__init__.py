"""Sinks: where a pipeline's results go (JSONL, annotated video, a window).

A sink has ``write(frame, detections)`` and ``close()``; ``close`` flushes everything so
nothing already written is lost when a run stops early.
"""

from __future__ import annotations

from typing import Protocol

from ubiq.pipelines.sinks.annotate import annotate
from ubiq.pipelines.sinks.jsonl import JsonlSink
from ubiq.pipelines.sinks.video import VideoSink
from ubiq.pipelines.sinks.window import WindowSink
from ubiq.types import Detections, Frame


class Sink(Protocol):
    """Receives every processed frame."""

    def write(self, frame: Frame, detections: Detections) -> None: ...

    def close(self) -> None: ...


__all__ = ["JsonlSink", "Sink", "VideoSink", "WindowSink", "annotate"]
