"""Rules on tracked objects: line crossings, zone enter/exit, occupancy, dwell, intrusion,
stationary objects; each emits events into the frame result.

Every rule reads ``result.detections`` after the tracker (each box with its
``tracker_id``) and keeps state per track, so it needs a :class:`~ubiq.pipelines.track.Track`
stage before it. A change of state (a side of a line, inside or outside a zone) counts
only after the point has stayed on the new side for ``min_frames`` frames in a row, so a
box jittering on a line or the edge of a zone never counts twice; its time is the first
frame of that run, so dwell times are exact to the frame. The label of a track is the
class it was given most often over its life.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ubiq.errors import ConfigError
from ubiq.pipelines.rules.geometry import Line, Zone, anchor_points
from ubiq.types import FrameResult


def _label(detections, class_id: int) -> str:
    return detections.label(class_id) if detections is not None else str(class_id)


@dataclass
class _LineState:
    side: int = 0  # confirmed side: -1, +1, 0 unknown
    candidate: int = 0
    streak: int = 0
    counted: set = field(default_factory=set)
    along: float = 0.5  # projection of the last point on the confirmed side


class LineCrossing:
    """Counts the tracks crossing a line, once per track and direction.

    Args:
        line: The line (already in pixels).
        min_frames: Frames on the new side before a crossing counts.
        classes: Count only these labels (``None``: all).
        margin: How far past its ends (as a fraction of its length) a crossing still
            counts; a track passing beside the line does not cross it.
        merge_s: A crossing within this many seconds of another in the same direction, at
            nearly the same place on the line (within ``merge_along`` of its length), by a
            track that appeared while the earlier track is no longer seen, is the same
            object whose track broke in two: it is not counted again (0 turns this off).
        merge_along: See ``merge_s``.
    """

    def __init__(
        self,
        line: Line,
        *,
        min_frames: int = 3,
        classes: Sequence[str] | None = None,
        margin: float = 0.05,
        merge_s: float = 1.0,
        merge_along: float = 0.15,
    ) -> None:
        if min_frames < 1:
            raise ConfigError(f"min_frames must be >= 1, got {min_frames}")
        self.merge_s = merge_s
        self.merge_along = merge_along
        self._recent: list[tuple[int, float, str, int]] = []  # ns, along, direction, track
        self.line = line
        self.min_frames = min_frames
        self.classes = None if classes is None else set(classes)
        self.margin = margin
        self.counts: dict[str, dict[str, int]] = {}
        self._tracks: dict[int, _LineState] = {}

    def update(self, result: FrameResult, points: np.ndarray, labels: list[str]) -> None:
        detections = result.detections
        sides = np.sign(self.line.side(points)).astype(int)
        along = self.line.along(points)
        for row, track_id in enumerate(detections.tracker_id.tolist()):
            side = int(sides[row])
            if side == 0:
                continue
            state = self._tracks.setdefault(track_id, _LineState())
            if side == state.side:
                state.candidate, state.streak = 0, 0
                state.along = float(along[row])
                continue
            if side == state.candidate:
                state.streak += 1
            else:
                state.candidate, state.streak = side, 1
            if state.streak < self.min_frames:
                continue
            previous = state.side
            where = (state.along + float(along[row])) / 2
            state.side, state.candidate, state.streak = side, 0, 0
            state.along = float(along[row])
            if previous == 0:
                continue  # the first side a track is seen on: no crossing
            if not -self.margin <= where <= 1 + self.margin:
                continue  # passed beside the line
            direction = "in" if side > 0 else "out"
            label = labels[row]
            if direction in state.counted or (self.classes and label not in self.classes):
                continue
            if self._same_object(result, track_id, where, direction):
                state.counted.add(direction)
                continue
            state.counted.add(direction)
            per_label = self.counts.setdefault(label, {"in": 0, "out": 0})
            per_label[direction] += 1
            result.add_event(
                "line.cross",
                line=self.line.name,
                track_id=track_id,
                label=label,
                direction=direction,
            )

    def _same_object(
        self, result: FrameResult, track_id: int, where: float, direction: str
    ) -> bool:
        """Whether this crossing repeats a recent one by a track that broke off (see
        ``merge_s``); records it otherwise."""
        now = result.timestamp_ns
        self._recent = [c for c in self._recent if (now - c[0]) / 1e9 <= self.merge_s]
        seen = set(result.detections.tracker_id.tolist())
        for _, along, other_direction, other in self._recent:
            if (
                other_direction == direction
                and other != track_id
                and other not in seen
                and abs(along - where) <= self.merge_along
            ):
                return True
        self._recent.append((now, where, direction, track_id))
        return False

    def forget(self, track_id: int) -> None:
        self._tracks.pop(track_id, None)


@dataclass
class _ZoneState:
    inside: bool = False
    candidate: bool = False
    streak: int = 0
    streak_ts: int = 0
    entered_ns: int = 0
    label: str = ""
    dwell_sent: bool = False


class ZoneWatch:
    """Enter and exit events of tracks in a polygon, occupancy per label, dwell
    (``zone.dwell`` once a track has stayed ``dwell_s`` seconds) and intrusion
    (``zone.intrusion`` when a track of a ``forbidden`` label enters).

    Args:
        zone: The zone (already in pixels).
        min_frames: Frames inside (or outside) before an enter (or exit) counts.
        classes: Watch only these labels (``None``: all).
        dwell_s: Seconds in the zone that make a ``zone.dwell`` event (``None``: never).
        forbidden: Labels whose entry is a ``zone.intrusion``.
    """

    def __init__(
        self,
        zone: Zone,
        *,
        min_frames: int = 3,
        classes: Sequence[str] | None = None,
        dwell_s: float | None = None,
        forbidden: Sequence[str] = (),
    ) -> None:
        if min_frames < 1:
            raise ConfigError(f"min_frames must be >= 1, got {min_frames}")
        if dwell_s is not None and dwell_s <= 0:
            raise ConfigError(f"dwell_s must be > 0 seconds, got {dwell_s}")
        self.zone = zone
        self.min_frames = min_frames
        self.classes = None if classes is None else set(classes)
        self.dwell_s = dwell_s
        self.forbidden = set(forbidden)
        self.entered: dict[str, int] = {}
        self._tracks: dict[int, _ZoneState] = {}
        self._occupancy: dict[str, int] = {}

    def occupancy(self) -> dict[str, int]:
        """Tracks inside now, per label."""
        counts = Counter(s.label for s in self._tracks.values() if s.inside)
        return dict(sorted(counts.items()))

    def _exit(self, result: FrameResult, track_id: int, state: _ZoneState, at_ns: int) -> None:
        state.inside = False
        result.add_event(
            "zone.exit",
            zone=self.zone.name,
            track_id=track_id,
            label=state.label,
            dwell_s=round((at_ns - state.entered_ns) / 1e9, 3),
        )

    def update(self, result: FrameResult, points: np.ndarray, labels: list[str]) -> None:
        now = result.timestamp_ns
        inside = self.zone.contains(points)
        for row, track_id in enumerate(result.detections.tracker_id.tolist()):
            label = labels[row]
            if self.classes and label not in self.classes:
                continue
            state = self._tracks.setdefault(track_id, _ZoneState())
            state.label = label
            here = bool(inside[row])
            if here == state.inside:
                state.candidate, state.streak = state.inside, 0
            else:
                if state.streak == 0 or state.candidate != here:
                    state.candidate, state.streak, state.streak_ts = here, 0, now
                state.streak += 1
                if state.streak >= self.min_frames:
                    state.streak = 0
                    if here:
                        state.inside, state.entered_ns, state.dwell_sent = (
                            True,
                            state.streak_ts,
                            False,
                        )
                        self.entered[label] = self.entered.get(label, 0) + 1
                        result.add_event(
                            "zone.enter", zone=self.zone.name, track_id=track_id, label=label
                        )
                        if label in self.forbidden:
                            result.add_event(
                                "zone.intrusion",
                                zone=self.zone.name,
                                track_id=track_id,
                                label=label,
                            )
                    else:
                        self._exit(result, track_id, state, state.streak_ts)
            if (
                state.inside
                and self.dwell_s is not None
                and not state.dwell_sent
                and (now - state.entered_ns) / 1e9 >= self.dwell_s
            ):
                state.dwell_sent = True
                result.add_event(
                    "zone.dwell",
                    zone=self.zone.name,
                    track_id=track_id,
                    label=label,
                    dwell_s=round((now - state.entered_ns) / 1e9, 3),
                )
        self._report_occupancy(result)

    def _report_occupancy(self, result: FrameResult) -> None:
        occupancy = self.occupancy()
        result.data.setdefault("occupancy", {})[self.zone.name] = occupancy
        if occupancy != self._occupancy:
            self._occupancy = occupancy
            result.add_event("zone.occupancy", zone=self.zone.name, counts=occupancy)

    def end_track(self, result: FrameResult, track_id: int, at_ns: int) -> None:
        """The tracker dropped ``track_id``: it leaves the zone if it was inside."""
        state = self._tracks.pop(track_id, None)
        if state is not None and state.inside:
            self._exit(result, track_id, state, at_ns)
            self._report_occupancy(result)


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
        name: str = "rules",
    ) -> None:
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
        self._votes: dict[int, Counter] = {}
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
            votes = self._votes.setdefault(track_id, Counter())
            votes[class_id] += score
            labels.append(_label(detections, votes.most_common(1)[0][0]))
        points = anchor_points(detections.xyxy, self.anchor)
        for rule in self.line_rules:
            rule.update(result, points, labels)
        for rule in self.zone_rules:
            rule.update(result, points, labels)
        if self.stationary is not None:
            self.stationary.update(result, points, labels)
        for event in list(result.events):
            if event.kind == "track.end":
                self._end_track(result, int(event.payload["track_id"]), result.timestamp_ns)
        result.data["counts"] = self.counts()
        self._last = result
        return result

    def _end_track(self, result: FrameResult, track_id: int, at_ns: int) -> None:
        self._votes.pop(track_id, None)
        for rule in self.line_rules:
            rule.forget(track_id)
        for rule in self.zone_rules:
            rule.end_track(result, track_id, at_ns)
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
        final.add_event("counts", **self.counts())
        self._last = None
        return final.events
