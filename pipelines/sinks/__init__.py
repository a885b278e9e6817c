"""Sinks: where a pipeline's finished results go (JSONL, annotated video or images, a
window, a callback).

A sink has ``write(result)`` and ``close()``; ``close`` flushes everything so nothing
already written is lost when a run stops early. Drawing is done by annotators
(:mod:`ubiq.pipelines.sinks.annotate`) that every visual sink shares.
"""

from __future__ import annotations

from typing import Protocol

from ubiq.pipelines.sinks.annotate import (
    BoxAnnotator,
    MaskAnnotator,
    annotate,
    default_annotators,
    draw,
)
from ubiq.pipelines.sinks.images import CallbackSink, ImageSink
from ubiq.pipelines.sinks.jsonl import JsonlSink
from ubiq.pipelines.sinks.video import VideoSink, check_video_path
from ubiq.pipelines.sinks.window import WindowSink
from ubiq.types import FrameResult


class Sink(Protocol):
    """Receives every finished frame result."""

    def write(self, result: FrameResult) -> None: ...

    def close(self) -> None: ...


__all__ = [
    "BoxAnnotator",
    "CallbackSink",
    "ImageSink",
    "JsonlSink",
    "MaskAnnotator",
    "Sink",
    "VideoSink",
    "WindowSink",
    "annotate",
    "check_video_path",
    "default_annotators",
    "draw",
]
