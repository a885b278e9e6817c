"""Rules on tracked objects: line crossings, zone enter/exit, occupancy, dwell, intrusion,
stationary objects; each emits events into the frame result.

Every rule reads ``result.detections`` after the tracker (each box with its
``tracker_id``) and keeps state per track, so it needs a :class:`~ubiq.pipelines.track.Track`
stage before it. A change of state (a side of a line, inside or outside a zone) counts
only after the point has stayed on the new side for ``min_frames`` frames in a row, so a
box jittering on a line or the edge of a zone never counts twice; its time is the first
frame of that run, so dwell times are exact to the frame. The label of a track is the
class it was given most often (score-weighted) over its last seconds (``label_s``).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence

import numpy as np

from ubiq.errors import ConfigError
from ubiq.pipelines.rules.geometry import Line, Zone, anchor_points
from ubiq.pipelines.rules.lines import LineCrossing
from ubiq.pipelines.rules.paths import PART_OF_TRACKED, covered
from ubiq.pipelines.rules.zones import ZoneWatch
from ubiq.types import FrameResult

__all__ = ["LineCrossing", "Rules", "Stationary", "ZoneWatch"]


EDGE_INSET = 1e-3
"""How far inside the frame's right and bottom borders an anchor point beyond them goes."""


def _label(detections, class_id: int) -> str:
    return detections.label(class_id) if detections is not None else str(class_id)


class Stationary:
    """``object.stationary`` once for a track whose point has stayed within
    ``tolerance`` of its box diagonal for ``seconds`` (a parked car, a left bag).

    ``result.data["stationary"]`` lists the ids that are stationary now, so a rule or an
    app can leave them out.
    """

    def __init__(self, seconds: float = 10.0, tolerance: float = 0.1) -> None:
        if seconds <= 0:
            raise ConfigError(f"stationary seconds must be > 0, got {seconds}")
        self.seconds = seconds
        self.tolerance = tolerance
        self._since: dict[int, tuple[int, np.ndarray, bool]] = {}

    def update(self, result: FrameResult, points: np.ndarray, labels: list[str]) -> None:
        detections = result.detections
        now = result.timestamp_ns
        diagonal = np.hypot(
            detections.xyxy[:, 2] - detections.xyxy[:, 0],
            detections.xyxy[:, 3] - detections.xyxy[:, 1],
        )
        still = []
        for row, track_id in enumerate(detections.tracker_id.tolist()):
            since, origin, reported = self._since.get(track_id, (now, points[row], False))
            if np.hypot(*(points[row] - origin)) > self.tolerance * diagonal[row]:
                since, origin, reported = now, points[row], False
            if (now - since) / 1e9 >= self.seconds:
                still.append(track_id)
                if not reported:
                    reported = True
                    result.add_event(
                        "object.stationary",
                        track_id=track_id,
                        label=labels[row],
                        seconds=round((now - since) / 1e9, 3),
                    )
            self._since[track_id] = (since, origin, reported)
        result.data["stationary"] = still

    def forget(self, track_id: int) -> None:
        self._since.pop(track_id, None)


class Rules:
    """The stage that runs lines, zones and the stationary rule on tracked detections and,
    when the source ends, reports ``{"kind": "counts", "lines": {line: {label: {"in", "out"}}},
    "zones": {zone: {"entered": {label: n}, "occupancy": {label: n}}}}``.

    Args:
        lines: Lines (pixels, or frame fractions resolved at the first frame).
        zones: Zones, likewise.
        anchor: ``center`` or ``bottom`` of each box.
        min_frames: Hysteresis of every line and zone.
        classes: Labels the rules look at (``None``: all).
        dwell_s: Seconds in a zone that make ``zone.dwell`` (``None``: never).
        forbidden: Labels whose entry into any zone is ``zone.intrusion``.
        stationary_s: Seconds without moving that make ``object.stationary`` (``None``: off).
        zone_options: Per zone name, ``dwell_s`` and ``forbidden`` that replace the ones
            above for that zone (``None`` or empty keeps them).
        label_s: A track's label is its score-weighted majority class over its last
            ``label_s`` seconds (``None``: over its whole life). A window, because a
            tracker sometimes hands a track from one object to another (two objects
            passing each other, a box that sat on a false detection before an object
            walked through it): the object being counted is the one the track follows now.
        join_s: See :class:`LineCrossing` and :class:`ZoneWatch` (a track broken on a line,
            or inside a zone, joined to its other half).
        name: Stage name (default ``"rules"``).

    Raises:
        ConfigError: If two lines or two zones share a name, or an option is out of range.
    """

    def __init__(
        self,
        lines: Sequence[Line] = (),
        zones: Sequence[Zone] = (),
        *,
        anchor: str = "center",
        min_frames: int = 3,
        classes: Sequence[str] | None = None,
        dwell_s: float | None = None,
        forbidden: Sequence[str] = (),
        stationary_s: float | None = None,
        zone_options: dict[str, dict] | None = None,
        label_s: float | None = 2.0,
        join_s: float = 1.5,
        name: str = "rules",
    ) -> None:
        if label_s is not None and label_s <= 0:
            raise ConfigError(f"label_s must be > 0 seconds (or None), got {label_s}")
        if join_s < 0:
            raise ConfigError(f"join_s must be >= 0 seconds, got {join_s}")
        self.label_s = label_s
        self.join_s = join_s
        anchor_points(np.zeros((0, 4)), anchor)  # checks the name
        for kind, shapes in (("line", lines), ("zone", zones)):
            names = [s.name for s in shapes]
            duplicate = next((n for n in names if names.count(n) > 1), None)
            if duplicate is not None:
                raise ConfigError(f"two {kind}s are named {duplicate!r}: names must differ")
        self.lines = list(lines)
        self.zones = list(zones)
        self.anchor = anchor
        self.name = name
        self._options = dict(
            min_frames=min_frames, classes=classes, dwell_s=dwell_s, forbidden=forbidden
        )
        self.zone_options = dict(zone_options or {})
        unknown = sorted(set(self.zone_options) - {z.name for z in zones})
        if unknown:
            raise ConfigError(f"zone_options names no zone: {unknown[0]!r}")
        self.stationary = Stationary(stationary_s) if stationary_s is not None else None
        self.line_rules: list[LineCrossing] = []
        self.zone_rules: list[ZoneWatch] = []
        # per track: the window of (ns, class_id, score) and the score totals per class
        self._votes: dict[int, tuple[deque, Counter]] = {}
        # (ns, boxes, anchor points) the tracker did not take, per frame, over join_s
        self._untracked: deque[tuple] = deque()
        self._frame_size: tuple[int, int] | None = None
        self._last: FrameResult | None = None
        self.check_options()

    def check_options(self) -> None:
        """The options' ranges, before any frame (the rules check them again)."""
        options = self._options
        if options["min_frames"] < 1:
            raise ConfigError(f"min_frames must be >= 1, got {options['min_frames']}")
        if options["dwell_s"] is not None and options["dwell_s"] <= 0:
            raise ConfigError(f"dwell_s must be > 0 seconds, got {options['dwell_s']}")

    def resolve(self, frame_size: tuple[int, int]) -> None:
        """Turns fractions into pixels of a ``(width, height)`` frame and checks every shape
        lies in it.

        Raises:
            ConfigError: Naming the line or zone with a point outside the frame.
        """
        options = self._options
        self.line_rules = [
            LineCrossing(
                line.resolve(frame_size),
                min_frames=options["min_frames"],
                classes=options["classes"],
                join_s=self.join_s,
            )
            for line in self.lines
        ]
        self.zone_rules = []
        for zone in self.zones:
            own = self.zone_options.get(zone.name, {})
            dwell_s = own.get("dwell_s")
            self.zone_rules.append(
                ZoneWatch(
                    zone.resolve(frame_size),
                    min_frames=options["min_frames"],
                    classes=options["classes"],
                    dwell_s=options["dwell_s"] if dwell_s is None else dwell_s,
                    forbidden=own.get("forbidden") or options["forbidden"],
                    join_s=self.join_s,
                )
            )
        self._frame_size = frame_size

    def __call__(self, result: FrameResult) -> FrameResult:
        detections = result.detections
        if detections is None or detections.tracker_id is None:
            raise ConfigError("rules need tracked detections: put a Track stage before them")
        frame = result.frame
        size = (frame.width, frame.height)
        if self._frame_size != size:
            self.resolve(size)
        labels = []
        for track_id, class_id, score in zip(
            detections.tracker_id.tolist(),
            detections.class_id.tolist(),
            detections.confidence.tolist(),
            strict=True,
        ):
            window, totals = self._votes.setdefault(track_id, (deque(), Counter()))
            totals[class_id] += score
            if self.label_s is not None:  # running totals over the window, O(1) a frame
                window.append((result.timestamp_ns, class_id, score))
                oldest = result.timestamp_ns - int(self.label_s * 1e9)
                while window[0][0] < oldest:
                    _, voted, weight = window.popleft()
                    totals[voted] -= weight
                    if totals[voted] <= 1e-9:
                        del totals[voted]
            labels.append(_label(detections, max(totals, key=totals.__getitem__)))
        points = self._in_frame(anchor_points(detections.xyxy, self.anchor))
        if (self.line_rules or self.zone_rules) and self.join_s > 0:
            self._remember_untracked(result)
        for rule in self.line_rules:
            rule.update(result, points, labels, self._untracked)
        for rule in self.zone_rules:
            rule.update(result, points, labels, self._untracked)
        if self.stationary is not None:
            self.stationary.update(result, points, labels)
        for event in list(result.events):
            if event.kind == "track.end":
                self._end_track(result, int(event.payload["track_id"]), result.timestamp_ns)
        result.data["counts"] = self.counts()
        self._last = result
        return result

    def _in_frame(self, points: np.ndarray) -> np.ndarray:
        """Anchor points moved into the frame: the feet of a box the frame cuts are at its
        border, inside a zone drawn to that border (a point on a zone's bottom or right
        edge is outside it, so they go a thousandth of a pixel inside the frame)."""
        width, height = self._frame_size
        return np.clip(points, 0.0, [width - EDGE_INSET, height - EDGE_INSET])

    def _remember_untracked(self, result: FrameResult) -> None:
        """Keeps the boxes the tracker was given but did not show, for ``2 * join_s``
        seconds (the faint paths of lines and zones, see :mod:`.paths`)."""
        given = result.data.get("tracker_input")
        rows = result.data.get("tracked_rows")
        now = result.timestamp_ns
        boxes = np.zeros((0, 4))
        if given is not None and rows is not None and len(given):
            left = np.ones(len(given), bool)
            left[rows] = False
            boxes = given.xyxy[left].astype(np.float64)
            shown = result.detections.xyxy
            if len(boxes) and len(shown):
                # a box mostly inside a tracked one is part of that object (a partial or
                # duplicate box), not a faint object of its own
                inside = covered(boxes, shown.astype(np.float64)) >= PART_OF_TRACKED
                boxes = boxes[~inside]
        self._untracked.append((now, boxes, self._in_frame(anchor_points(boxes, self.anchor))))
        # a track is confirmed on a side min_frames after it is first seen: keep twice over
        while (now - self._untracked[0][0]) / 1e9 > 2 * self.join_s:
            self._untracked.popleft()

    def _end_track(self, result: FrameResult, track_id: int, at_ns: int) -> None:
        self._votes.pop(track_id, None)
        for rule in self.line_rules:
            rule.end_track(result, track_id, self._untracked)
        for rule in self.zone_rules:
            rule.end_track(result, track_id, at_ns, self._untracked)
        if self.stationary is not None:
            self.stationary.forget(track_id)

    def counts(self) -> dict:
        """Crossings per line, label and direction; entries and occupancy per zone."""
        return {
            "lines": {
                rule.line.name: dict(sorted(rule.counts.items())) for rule in self.line_rules
            },
            "zones": {
                rule.zone.name: {
                    "entered": dict(sorted(rule.entered.items())),
                    "occupancy": rule.occupancy(),
                }
                for rule in self.zone_rules
            },
        }

    def finish(self) -> list:
        """At the end of the stream every track ends (leaving its zones); then the counts."""
        last = self._last
        if last is None:
            return []
        final = FrameResult(last.frame, detections=last.detections)
        for track_id in list(self._votes):
            self._end_track(final, track_id, last.timestamp_ns)
        for rule in self.zone_rules:
            rule.finish(final)
        final.add_event("counts", **self.counts())
        self._last = None
        return final.events
