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
from dataclasses import dataclass, field

import numpy as np

from ubiq.errors import ConfigError
from ubiq.pipelines.rules.geometry import Line, Zone, anchor_points
from ubiq.types import FrameResult


def _label(detections, class_id: int) -> str:
    return detections.label(class_id) if detections is not None else str(class_id)


def _velocity(first: tuple, last: tuple) -> np.ndarray | None:
    """Pixels per second from a track's first ``(ns, point, ...)`` to its last ``(ns, point)``
    sighting (``None`` if both are the same instant)."""
    span_s = (last[0] - first[0]) / 1e9
    if span_s <= 0:
        return None
    return (np.asarray(last[1]) - np.asarray(first[1])) / span_s


def _box_sizes(detections) -> np.ndarray:
    return np.maximum(
        detections.xyxy[:, 2] - detections.xyxy[:, 0],
        detections.xyxy[:, 3] - detections.xyxy[:, 1],
    )


_FOLLOW_GAP = 2
"""Frames an untracked object may go unseen while :func:`_faint_path` follows it back."""


_PART_OF_TRACKED = 0.7
"""Share of an untracked box inside a tracked box that makes it part of that object."""


def _covered(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """``(N,)`` the largest share of each box's area inside one of ``others``."""
    corners = np.minimum(boxes[:, None, 2:], others[None, :, 2:])
    corners -= np.maximum(boxes[:, None, :2], others[None, :, :2])
    np.maximum(corners, 0.0, out=corners)
    inter = corners[..., 0] * corners[..., 1]
    area = np.prod(np.maximum(boxes[:, 2:] - boxes[:, :2], 1e-6), axis=1)
    return (inter / area[:, None]).max(axis=1)


def _follow(box: np.ndarray, boxes: np.ndarray, steps: int) -> int | None:
    """The row of ``boxes`` that continues ``box`` after ``steps`` frames (the nearest
    centre within half the longer side per step, each side within 2x), or ``None``."""
    if not len(boxes):
        return None
    size = box[2:] - box[:2]
    sizes = boxes[:, 2:] - boxes[:, :2]
    ratio = sizes / np.maximum(size, 1e-6)
    alike = ((ratio >= 0.5) & (ratio <= 2.0)).all(axis=1)
    distance = np.hypot(*((boxes[:, :2] + boxes[:, 2:] - box[:2] - box[2:]) / 2).T)
    distance[~alike | (distance > 0.5 * float(size.max()) * steps)] = np.inf
    row = int(distance.argmin())
    return row if np.isfinite(distance[row]) else None


def _faint_path(
    first_box: tuple,
    first_ns: int,
    untracked: Sequence[tuple],
    window_s: float,
    *,
    forward: bool = False,
) -> tuple[list[int], np.ndarray]:
    """The path of an object before its track began (or, ``forward``, after it was last
    seen): its untracked boxes.

    From the track's first box, back in time over the frames of ``untracked`` (or from its
    last box, forward; at most ``window_s`` seconds, a gap of at most two frames), each step
    takes the nearest untracked box of about the same size (each side within 2x) whose
    centre lies within half its longer side (per frame of gap) of the box before: the
    detections of an object too faint to be tracked (a thin object the detector scores
    under 0.5).

    Returns:
        The frames' times (ns) and ``(K, 2)`` anchor points, oldest first.
    """
    box = np.asarray(first_box, np.float64)
    times: list[int] = []
    points: list[np.ndarray] = []
    gap = 0
    for ns, boxes, anchors in untracked if forward else reversed(untracked):
        if (ns <= first_ns) if forward else (ns >= first_ns):
            continue
        if abs(first_ns - ns) / 1e9 > window_s:
            break
        found = _follow(box, boxes, gap + 1)
        if found is None:
            gap += 1
            if gap > _FOLLOW_GAP:
                break
            continue
        box, gap = boxes[found], 0
        times.append(ns)
        points.append(anchors[found])
    if forward:
        return times, np.array(points).reshape(-1, 2)
    return times[::-1], np.array(points[::-1]).reshape(-1, 2)


@dataclass
class _LineState:
    side: int = 0  # confirmed side: -1, +1, 0 unknown
    candidate: int = 0
    streak: int = 0
    counted: set = field(default_factory=set)
    along: float = 0.5  # projection of the last point on the confirmed side
    first: tuple = ()  # (ns, point, size of the box) when the track was first seen
    first_box: tuple = ()  # its box then
    last: tuple = ()  # (ns, point) when it was last seen
    label: str = ""  # its label when last seen
    taken: bool = False  # a later track was joined to it (see LineCrossing.join_s)


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
        join_s: The other half of a broken track: a track that first shows up on one side
            of the line, while a track of the same label was last seen on the other side
            less than this many seconds before, heading for the line, and the straight
            path between the two crosses the line's segment and lands within a box size
            of where the old track's motion puts it, is that object seen again after an
            occlusion (the one in front of it as they passed each other on the line): the
            crossing counts (once). Likewise a track that first shows up on one side when
            the boxes the tracker did not take (scores too low to start a track) lead back
            from its first box, frame by frame over the last ``join_s`` seconds, to at
            least ``min_frames`` boxes on the other side: an object found too faintly to be
            tracked until it was past the line (see :meth:`came_across`). 0 turns both off.
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
        join_s: float = 1.5,
    ) -> None:
        if min_frames < 1:
            raise ConfigError(f"min_frames must be >= 1, got {min_frames}")
        self.merge_s = merge_s
        self.join_s = join_s
        self._gone: dict[int, _LineState] = {}  # ended tracks, kept join_s for a join
        self.merge_along = merge_along
        self._recent: list[tuple[int, float, str, int]] = []  # ns, along, direction, track
        self.line = line
        self.min_frames = min_frames
        self.classes = None if classes is None else set(classes)
        self.margin = margin
        self.counts: dict[str, dict[str, int]] = {}
        self._tracks: dict[int, _LineState] = {}

    def update(
        self,
        result: FrameResult,
        points: np.ndarray,
        labels: list[str],
        untracked: Sequence[tuple] = (),
    ) -> None:
        """Advances every track's side of the line by this frame.

        Args:
            result: The frame, with tracked detections.
            points: ``(N, 2)`` anchor point of each detection.
            labels: Label of each detection's track.
            untracked: ``(ns, boxes (M, 4), points (M, 2))`` of the boxes the tracker did
                not take, per frame, oldest first, over at least the last ``join_s``
                seconds (see :meth:`came_across`).
        """
        detections = result.detections
        sides = np.sign(self.line.side(points)).astype(int)
        along = self.line.along(points)
        now = result.timestamp_ns
        sizes = _box_sizes(detections)
        for row, track_id in enumerate(detections.tracker_id.tolist()):
            side = int(sides[row])
            state = self._tracks.setdefault(track_id, _LineState())
            point = (float(points[row, 0]), float(points[row, 1]))
            if not state.first:
                state.first = (now, point, float(sizes[row]))
                state.first_box = tuple(detections.xyxy[row].tolist())
            state.last, state.label = (now, point), labels[row]
            if side == 0:
                continue
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
            direction = "in" if side > 0 else "out"
            label = labels[row]
            if previous == 0:
                # the first side a track is seen on: no crossing, unless it is the rest of a
                # track broken on the other side
                other = self._joined(now, track_id, state, side, label)
                if other is not None:
                    other.taken = True
                    state.counted |= other.counted
                    other.counted.add(direction)  # should the old track come back, it crossed
                    where = self._crossing_along(other.last[1], state.first[1])
                else:
                    where = self.came_across(state, side, untracked)
                    if where is None:
                        continue
            if not -self.margin <= where <= 1 + self.margin:
                continue  # passed beside the line
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

    def came_across(self, state: _LineState, side: int, untracked: Sequence[tuple]) -> float | None:
        """Where on the line (0 at A, 1 at B) a track first confirmed on ``side`` crossed
        it before it was tracked, or ``None``: when the oldest ``min_frames`` boxes of its
        faint path (see :func:`_faint_path`) lie on the other side of the line."""
        if self.join_s <= 0 or not state.first_box:
            return None
        _, path = _faint_path(state.first_box, state.first[0], untracked, self.join_s)
        if len(path) < self.min_frames:
            return None
        sides = np.sign(self.line.side(path)).astype(int)
        if not (sides[: self.min_frames] == -side).all():
            return None
        last_before = int(np.flatnonzero(sides == -side).max())
        end = path[last_before + 1] if last_before + 1 < len(path) else state.first[1]
        return self._crossing_along(path[last_before], end)

    def _crossing_along(self, start, end) -> float:
        """Where on the line (0 at A, 1 at B) the straight path ``start -> end`` crosses it."""
        before, after = self.line.side(np.array([start, end]))
        t = before / (before - after) if before != after else 0.5
        point = np.asarray(start) + t * (np.asarray(end) - np.asarray(start))
        return float(self.line.along(point[None])[0])

    def _joined(
        self, now: int, track_id: int, state: _LineState, side: int, label: str
    ) -> _LineState | None:
        """The broken-off first half of a new track (see ``join_s``), or ``None``."""
        if self.join_s <= 0:
            return None
        first_ns, first_point, size = state.first
        best, best_miss = None, np.inf
        self._gone = {k: v for k, v in self._gone.items() if (now - v.last[0]) / 1e9 <= self.join_s}
        for other_id, other in [*self._tracks.items(), *self._gone.items()]:
            if other_id == track_id or other.taken or other.side != -side or other.label != label:
                continue
            last_ns, last_point = other.last
            gap_s = (first_ns - last_ns) / 1e9
            if not 0 < gap_s <= self.join_s:
                continue  # still seen when this one appeared, or too long ago
            velocity = _velocity(other.first, other.last)
            if velocity is None:
                continue
            towards = float(self.line.side(np.asarray(last_point)[None] + velocity[None])[0])
            if np.sign(towards) == np.sign(other.side) and abs(towards) >= abs(
                float(self.line.side(np.asarray(last_point)[None])[0])
            ):
                continue  # it was moving away from the line
            expected = np.asarray(last_point) + velocity * gap_s
            miss = float(np.hypot(*(np.asarray(first_point) - expected)))
            if miss <= size and miss < best_miss:
                best, best_miss = other, miss
        return best

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
        state = self._tracks.pop(track_id, None)
        if state is not None and state.side != 0 and self.join_s > 0:
            self._gone[track_id] = state


@dataclass
class _ZoneState:
    inside: bool = False
    candidate: bool = False
    streak: int = 0
    streak_ts: int = 0
    entered_ns: int = 0
    label: str = ""
    dwell_sent: bool = False
    been_outside: bool = False  # a confirmed run outside (a track born inside has none)
    first: tuple = ()  # (ns, point, size of the box) when the track was first seen
    first_box: tuple = ()  # its box then
    last: tuple = ()  # (ns, point) when it was last seen
    last_box: tuple = ()  # its box then
    gone_ns: int = 0  # the first frame it was not seen in since, 0 while it is seen
    taken: bool = False  # a later track was joined to it (see ZoneWatch.join_s)


class ZoneWatch:
    """Enter and exit events of tracks in a polygon, occupancy per label, dwell
    (``zone.dwell`` once a track has stayed ``dwell_s`` seconds) and intrusion
    (``zone.intrusion`` when a track of a ``forbidden`` label enters).

    Times are back-dated over the hysteresis: ``zone.enter`` comes ``min_frames - 1`` frames
    after the point entered and says so (``since_s``: seconds since it entered), and
    ``dwell_s`` runs from the first frame inside to the first frame outside, or, for a track
    the tracker drops while inside, to the first frame it was no longer seen in (or, see
    ``join_s``, when its faint path left).

    Args:
        zone: The zone (already in pixels).
        min_frames: Frames inside (or outside) before an enter (or exit) counts.
        classes: Watch only these labels (``None``: all).
        dwell_s: Seconds in the zone that make a ``zone.dwell`` event (``None``: never).
        forbidden: Labels whose entry is a ``zone.intrusion``.
        join_s: A track born inside the zone, while a track of the same label that was
            inside was last seen less than this many seconds before, within a box size of
            where that track's motion puts it, is the same object (its track broke while
            it was hidden behind another): it carries on the old track's stay, with no
            second enter, exit or dwell event. A track born inside the zone and joined to
            none whose faint path (the boxes the tracker did not take, followed back from
            its first box within ``join_s``) starts with ``min_frames`` boxes outside
            entered when that path did: its stay is dated from then; and a track the
            tracker drops inside leaves when its faint path forward left (or was last
            seen), when that is ``min_frames`` frames or more after it was lost. 0 turns
            all three off.
    """

    def __init__(
        self,
        zone: Zone,
        *,
        min_frames: int = 3,
        classes: Sequence[str] | None = None,
        dwell_s: float | None = None,
        forbidden: Sequence[str] = (),
        join_s: float = 1.5,
    ) -> None:
        if min_frames < 1:
            raise ConfigError(f"min_frames must be >= 1, got {min_frames}")
        if dwell_s is not None and dwell_s <= 0:
            raise ConfigError(f"dwell_s must be > 0 seconds, got {dwell_s}")
        if join_s < 0:
            raise ConfigError(f"join_s must be >= 0 seconds, got {join_s}")
        self.zone = zone
        self.min_frames = min_frames
        self.classes = None if classes is None else set(classes)
        self.dwell_s = dwell_s
        self.forbidden = set(forbidden)
        self.join_s = join_s
        self.entered: dict[str, int] = {}
        self._tracks: dict[int, _ZoneState] = {}
        self._occupancy: dict[str, int] = {}

    def occupancy(self) -> dict[str, int]:
        """Tracks inside now, per label."""
        counts = Counter(s.label for s in self._tracks.values() if s.inside)
        return dict(sorted(counts.items()))

    def _event(self, result: FrameResult, kind: str, track_id: int, label: str, **more) -> None:
        result.add_event(kind, zone=self.zone.name, track_id=track_id, label=label, **more)

    def _exit(self, result: FrameResult, track_id: int, state: _ZoneState, at_ns: int) -> None:
        state.inside = False
        dwell_s = round((at_ns - state.entered_ns) / 1e9, 3)
        self._event(result, "zone.exit", track_id, state.label, dwell_s=dwell_s)

    def _joined(self, track_id: int, state: _ZoneState) -> _ZoneState | None:
        """The track inside the zone that ``state``, born inside it, continues (see
        ``join_s``), or ``None``."""
        if self.join_s <= 0 or state.been_outside:
            return None
        first_ns, first_point, size = state.first
        best, best_miss = None, np.inf
        for other_id, other in self._tracks.items():
            if other_id == track_id or other.taken or not other.inside:
                continue
            if other.label != state.label or not 0 < (first_ns - other.last[0]) / 1e9 <= (
                self.join_s
            ):
                continue  # another label, still seen when this one appeared, or too long ago
            velocity = _velocity(other.first, other.last)
            if velocity is None:
                velocity = np.zeros(2)
            expected = np.asarray(other.last[1]) + velocity * (first_ns - other.last[0]) / 1e9
            miss = float(np.hypot(*(np.asarray(first_point) - expected)))
            if miss <= size and miss < best_miss:
                best, best_miss = other, miss
        return best

    def update(
        self,
        result: FrameResult,
        points: np.ndarray,
        labels: list[str],
        untracked: Sequence[tuple] = (),
    ) -> None:
        """Advances every track's stay by this frame (``untracked``: as for
        :meth:`LineCrossing.update`)."""
        now = result.timestamp_ns
        inside = self.zone.contains(points)
        sizes = _box_sizes(result.detections)
        seen = set()
        for row, track_id in enumerate(result.detections.tracker_id.tolist()):
            label = labels[row]
            if self.classes and label not in self.classes:
                continue
            state = self._tracks.setdefault(track_id, _ZoneState())
            seen.add(track_id)
            point = (float(points[row, 0]), float(points[row, 1]))
            if not state.first:
                state.first = (now, point, float(sizes[row]))
                state.first_box = tuple(result.detections.xyxy[row].tolist())
            state.last, state.gone_ns = (now, point), 0
            state.last_box = tuple(result.detections.xyxy[row].tolist())
            if state.taken:
                continue  # its object goes on as another track
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
                        self._enter(result, track_id, state, now, untracked)
                    else:
                        state.been_outside = True
                        self._exit(result, track_id, state, state.streak_ts)
            if (
                state.inside
                and self.dwell_s is not None
                and not state.dwell_sent
                and (now - state.entered_ns) / 1e9 >= self.dwell_s
            ):
                state.dwell_sent = True
                dwell_s = round((now - state.entered_ns) / 1e9, 3)
                self._event(result, "zone.dwell", track_id, label, dwell_s=dwell_s)
        for track_id, state in self._tracks.items():
            if track_id not in seen and not state.gone_ns:
                state.gone_ns = now
        self._report_occupancy(result)

    def _enter(
        self,
        result: FrameResult,
        track_id: int,
        state: _ZoneState,
        now: int,
        untracked: Sequence[tuple] = (),
    ) -> None:
        label = state.label
        other = self._joined(track_id, state)
        if other is not None:  # the same object, seen again: its stay goes on
            other.taken, other.inside = True, False
            state.inside, state.entered_ns = True, other.entered_ns
            state.dwell_sent = other.dwell_sent
            return
        entered = state.streak_ts
        came_in = None
        if state.streak_ts == state.first[0]:  # born inside: perhaps seen faintly before
            came_in = self._came_in(state, untracked)
        if came_in is not None:
            entered = came_in
        state.inside, state.entered_ns, state.dwell_sent = True, entered, False
        self.entered[label] = self.entered.get(label, 0) + 1
        since_s = round((now - state.entered_ns) / 1e9, 3)
        self._event(result, "zone.enter", track_id, label, since_s=since_s)
        if label in self.forbidden:
            self._event(result, "zone.intrusion", track_id, label)

    def _came_in(self, state: _ZoneState, untracked: Sequence[tuple]) -> int | None:
        """When a track born inside entered, if its faint path (see :func:`_faint_path`)
        starts with ``min_frames`` boxes outside: the first frame of the path inside after
        them; else ``None``."""
        if self.join_s <= 0 or not state.first_box:
            return None
        times, path = _faint_path(state.first_box, state.first[0], untracked, self.join_s)
        if len(path) < self.min_frames:
            return None
        inside = self.zone.contains(path)
        if inside[: self.min_frames].any():
            return None
        last_outside = int(np.flatnonzero(~inside).max())
        return times[last_outside + 1] if last_outside + 1 < len(times) else state.first[0]

    def _report_occupancy(self, result: FrameResult) -> None:
        occupancy = self.occupancy()
        result.data.setdefault("occupancy", {})[self.zone.name] = occupancy
        if occupancy != self._occupancy:
            self._occupancy = occupancy
            result.add_event("zone.occupancy", zone=self.zone.name, counts=occupancy)

    def end_track(
        self, result: FrameResult, track_id: int, at_ns: int, untracked: Sequence[tuple] = ()
    ) -> None:
        """The tracker dropped ``track_id``: it leaves the zone if it was inside, when it was
        last seen (the first frame without it), or, when the boxes the tracker did not take
        carry on from its last box (see :func:`_faint_path`), when they left the zone or
        were last seen."""
        state = self._tracks.pop(track_id, None)
        if state is not None and state.inside:
            left = self._went_out(state, untracked)
            self._exit(result, track_id, state, left or state.gone_ns or at_ns)
            self._report_occupancy(result)

    def _went_out(self, state: _ZoneState, untracked: Sequence[tuple]) -> int | None:
        """When a track lost inside left the zone by its faint path forward: the first
        frame of the path's last run outside, or, when the path ends inside, the first
        frame after it; ``None`` without a path or when that is less than ``min_frames``
        frames after the track was lost."""
        if self.join_s <= 0 or not state.last_box or not state.gone_ns:
            return None
        times, path = _faint_path(
            state.last_box, state.last[0], untracked, self.join_s, forward=True
        )
        if not len(path):
            return None
        inside = self.zone.contains(path)
        if not inside[-1]:  # it went out: from the first box of its last run outside
            last_inside = np.flatnonzero(inside)
            left = times[int(last_inside.max()) + 1 if len(last_inside) else 0]
        else:
            after = [ns for ns, _, _ in untracked if ns > times[-1]]
            left = after[0] if after else times[-1]
        # out within min_frames of the loss: no more than the loss says (box jitter)
        frames_later = sum(1 for ns, _, _ in untracked if state.gone_ns <= ns < left)
        return left if frames_later >= self.min_frames else None


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
        points = anchor_points(detections.xyxy, self.anchor)
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

    def _remember_untracked(self, result: FrameResult) -> None:
        """Keeps the boxes the tracker was given but did not show, for ``2 * join_s``
        seconds (the faint paths of lines and zones, see :func:`_faint_path`)."""
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
                inside = _covered(boxes, shown.astype(np.float64)) >= _PART_OF_TRACKED
                boxes = boxes[~inside]
        self._untracked.append((now, boxes, anchor_points(boxes, self.anchor)))
        # a track is confirmed on a side min_frames after it is first seen: keep twice over
        while (now - self._untracked[0][0]) / 1e9 > 2 * self.join_s:
            self._untracked.popleft()

    def _end_track(self, result: FrameResult, track_id: int, at_ns: int) -> None:
        self._votes.pop(track_id, None)
        for rule in self.line_rules:
            rule.forget(track_id)
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
        final.add_event("counts", **self.counts())
        self._last = None
        return final.events
