"""What a run did: frames, speed, per-stage time, and counts of what the stages produced."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ubiq.types import FrameResult


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else 0.0


@dataclass
class RunSummary:
    """What a run did.

    Attributes:
        source_id: The source the run read.
        frames: Frames processed.
        elapsed_s: Wall time from the first frame's arrival to the last frame written
            (opening and closing the source are not counted).
        latency_ms: Per-frame time from arrival to the last sink (stages and sinks).
        inference_ms: Per-frame backend time (the sum of the stages' ``*.inference``).
        stage_ms: Per-frame time of each stage by name; ``NAME.prepare`` is the part a
            stage did ahead on the prefetch thread, ``sinks`` is the time of all sinks.
        detections: Total detections over all frames.
        frames_with_detections: Frames with at least one detection.
        labels: Detections per label.
        events: Events per kind.
        dropped_frames: Live frames replaced by a newer one before being processed.
        reconnects: Times a live source reopened.
        stopped_by: ``"end"``, ``"max-frames"``, ``"signal"`` or ``"window"``.
        peak_rss_mb: Peak resident memory of the process.
        max_temperature_c: Hottest temperature seen by the health monitor (``None``: no
            monitor, or no readable sensor).
        throttle_events: Times throttling started (``None``: no monitor).
    """

    source_id: str = ""
    frames: int = 0
    elapsed_s: float = 0.0
    latency_ms: list[float] = field(default_factory=list)
    inference_ms: list[float] = field(default_factory=list)
    stage_ms: dict[str, list[float]] = field(default_factory=dict)
    detections: int = 0
    frames_with_detections: int = 0
    labels: Counter = field(default_factory=Counter)
    events: Counter = field(default_factory=Counter)
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
        return _percentile(values, q)

    def add_time(self, name: str, milliseconds: float) -> None:
        """Records one frame's time of stage ``name``."""
        self.stage_ms.setdefault(name, []).append(milliseconds)

    def count(self, result: FrameResult) -> None:
        """Counts what the stages put into one frame's result."""
        self.frames += 1
        detections = result.detections
        if detections is not None and len(detections):
            self.detections += len(detections)
            self.frames_with_detections += 1
            self.labels.update(detections.label(int(c)) for c in detections.class_id)
        self.events.update(event.kind for event in result.events)
        inference = [v for k, v in result.timings_ms.items() if k.endswith(".inference")]
        if inference:
            self.inference_ms.append(sum(inference))

    def to_dict(self) -> dict:
        """Returns the summary as JSON-safe numbers (health fields only when known)."""
        data = {
            "frames": self.frames,
            "elapsed_s": round(self.elapsed_s, 3),
            "fps": round(self.fps, 2),
            "latency_p50_ms": round(_percentile(self.latency_ms, 50), 2),
            "latency_p90_ms": round(_percentile(self.latency_ms, 90), 2),
            "inference_p50_ms": round(_percentile(self.inference_ms, 50), 2),
            "inference_p90_ms": round(_percentile(self.inference_ms, 90), 2),
            "detections": self.detections,
            "frames_with_detections": self.frames_with_detections,
            "dropped_frames": self.dropped_frames,
            "reconnects": self.reconnects,
            "stopped_by": self.stopped_by,
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "stages": {
                name: {
                    "p50_ms": round(_percentile(values, 50), 3),
                    "p90_ms": round(_percentile(values, 90), 3),
                }
                for name, values in self.stage_ms.items()
            },
            "labels": dict(sorted(self.labels.items())),
            "events": dict(sorted(self.events.items())),
        }
        if self.source_id:
            data["source"] = self.source_id
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
        if data["events"]:
            text += "; events " + ", ".join(f"{k} {v}" for k, v in data["events"].items())
        return text

    def stages_line(self) -> str:
        """Per-stage p50/p90 in one line: ``detect 2.1/2.6 ms, sinks 0.3/0.4 ms``."""
        data = self.to_dict()["stages"]
        return ", ".join(f"{n} {v['p50_ms']:.2f}/{v['p90_ms']:.2f} ms" for n, v in data.items())
