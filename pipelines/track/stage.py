"""The tracking stage: gives each detection the id of its track and reports track events."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import numpy as np

from ubiq.errors import ConfigError
from ubiq.pipelines.track.tracker import Tracker, TrackerConfig, TrackInfo
from ubiq.types import Detections, Event, FrameResult

TRAIL_LENGTH = 30
"""Centres kept per track for drawing its trail."""


class Track:
    """Tracks ``result.detections`` across frames.

    After this stage ``result.detections`` holds only the objects of confirmed tracks, each
    with its ``tracker_id`` and the tracker's filtered box; ``result.data["trails"]`` maps
    each visible id to its last centres (for drawing); ``result.data["tracker_input"]`` is
    the detections the tracker was given and ``result.data["tracked_rows"]`` the rows of
    them it shows (the rest: low scores, tracks not yet confirmed); ``track.start`` and
    ``track.end`` events carry ``track_id``, ``label``, ``duration_s``, ``first_xyxy`` and
    ``last_xyxy``.
    Tracks still open when the source ends get their ``track.end`` from :meth:`finish`.

    Args:
        tracker: A preset name (``bytetrack``, ``sort``) or a :class:`TrackerConfig`.
        name: Stage name in summaries (default ``"track"``).
        **settings: :class:`TrackerConfig` fields overriding the preset's.

    Raises:
        ConfigError: If the preset or a setting is unknown or out of range.
    """

    def __init__(
        self, tracker: str | TrackerConfig = "bytetrack", *, name: str = "track", **settings: Any
    ) -> None:
        try:
            if isinstance(tracker, TrackerConfig):
                config = tracker
                if settings:
                    config = TrackerConfig(**(vars(tracker) | settings))
            else:
                config = TrackerConfig.preset(tracker, **settings)
        except (TypeError, ValueError) as error:
            raise ConfigError(str(error)) from error
        self.name = name
        self.tracker = Tracker(config)
        self._labels: tuple[str, ...] = ()
        self._trails: dict[int, deque] = {}
        self._last_result: FrameResult | None = None

    def _event(self, result: FrameResult, kind: str, info: TrackInfo, ts_ns: int) -> Event:
        label = (
            self._labels[info.class_id]
            if 0 <= info.class_id < len(self._labels)
            else str(info.class_id)
        )
        return Event(
            kind,
            ts_ns,
            result.source_id,
            {
                "track_id": info.track_id,
                "label": label,
                "duration_s": round(info.duration_s, 3),
                "first_xyxy": list(info.first_xyxy),
                "last_xyxy": list(info.last_xyxy),
            },
        )

    def __call__(self, result: FrameResult) -> FrameResult:
        detections = result.detections
        if detections is None:
            raise ConfigError("track needs detections: put a detection stage before it")
        self._labels = detections.labels or self._labels
        began = time.perf_counter()
        update = self.tracker.update(
            detections.xyxy,
            detections.confidence,
            detections.class_id,
            timestamp_s=result.timestamp_ns / 1e9,
            frame=result.frame.image if self.tracker.config.camera_motion else None,
        )
        result.timings_ms[f"{self.name}.update"] = (time.perf_counter() - began) * 1e3
        rows = update.det_index
        result.data["tracker_input"], result.data["tracked_rows"] = detections, rows
        result.detections = Detections(
            xyxy=update.xyxy.astype(np.float32),
            confidence=detections.confidence[rows],
            class_id=detections.class_id[rows],
            tracker_id=update.track_id,
            keypoints=None if detections.keypoints is None else detections.keypoints[rows],
            labels=detections.labels,
        )
        for info in update.started:
            result.events.append(self._event(result, "track.start", info, result.timestamp_ns))
        for info in update.ended:
            self._trails.pop(info.track_id, None)
            result.events.append(self._event(result, "track.end", info, result.timestamp_ns))
        trails = {}
        for track_id, box in zip(update.track_id.tolist(), update.xyxy, strict=True):
            trail = self._trails.setdefault(track_id, deque(maxlen=TRAIL_LENGTH))
            trail.append(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2))
            trails[track_id] = list(trail)
        result.data["trails"] = trails
        self._last_result = result
        return result

    def finish(self) -> list[Event]:
        """``track.end`` for every track still open; the tracker starts afresh."""
        last = self._last_result
        self._trails.clear()
        if last is None:
            return []
        self._last_result = None
        return [
            self._event(last, "track.end", info, last.timestamp_ns)
            for info in self.tracker.finish()
        ]
