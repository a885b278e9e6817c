"""Line crossings: each track counted once per direction, with hysteresis, joins of broken
tracks and faint paths (see :mod:`ubiq.pipelines.rules.rules`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ubiq.errors import ConfigError
from ubiq.pipelines.rules.geometry import Line
from ubiq.pipelines.rules.paths import box_sizes, faint_path, track_velocity
from ubiq.types import FrameResult

APPROACH_SIZES_PER_S = 0.1
"""Least speed towards the line (box sizes a second, from the oldest to the last) of a faint
path's boxes on the other side of it (see :meth:`LineCrossing.came_across`)."""

REBORN_S = 0.4
"""A track unseen for longer than this before it had a side starts its path again where it
is seen next: a track shown for a frame or two and then lost (often from one box over two
objects passing each other) did not come from where that first box was."""


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
    last_box: tuple = ()  # its box then
    largest: float = 0.0  # the longest side of its boxes so far
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
            (the new box's, or the largest the old track had: a half-hidden object's boxes
            are small) of where the old track's motion puts it, is that object seen again
            after an occlusion (the one in front of it as they passed each other on the line): the
            crossing counts (once). Likewise a track that first shows up on one side when
            the boxes the tracker did not take (scores too low to start a track) lead back
            from its first box, frame by frame over the last ``join_s`` seconds, to at
            least ``min_frames`` boxes on the other side: an object found too faintly to be
            tracked until it was past the line (see :meth:`came_across`); and, when the
            tracker drops a track lost before the line, those boxes leading on from its last
            box to the other side: an object tracked up to the line and too faint after it
            (see :meth:`went_across`). 0 turns all three off.
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
        self._recent: list[tuple] = []  # ns, along, direction, track id, its state
        self.line = line
        self.line_length = float(np.hypot(line.b[0] - line.a[0], line.b[1] - line.a[1]))
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
        sizes = box_sizes(detections)
        boxes = detections.xyxy.tolist()
        for row, track_id in enumerate(detections.tracker_id.tolist()):
            side = int(sides[row])
            state = self._tracks.setdefault(track_id, _LineState())
            point = (float(points[row, 0]), float(points[row, 1]))
            if not state.first or (state.side == 0 and (now - state.last[0]) / 1e9 > REBORN_S):
                state.first = (now, point, float(sizes[row]))
                state.first_box = tuple(boxes[row])
                state.candidate, state.streak = 0, 0
            state.last, state.label = (now, point), labels[row]
            state.last_box = tuple(boxes[row])
            state.largest = max(state.largest, float(sizes[row]))
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
            self._count(result, track_id, state, where, direction, label)

    def _count(
        self,
        result: FrameResult,
        track_id: int,
        state: _LineState,
        where: float,
        direction: str,
        label: str,
    ) -> None:
        """Counts a crossing at ``where`` on the line (0 at A, 1 at B), unless it passed
        beside the line, was counted, is of a class not counted or repeats a broken track's."""
        if not -self.margin <= where <= 1 + self.margin:
            return  # passed beside the line
        if direction in state.counted or (self.classes and label not in self.classes):
            return
        if self._same_object(result, track_id, state, where, direction):
            state.counted.add(direction)
            return
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
        faint path (see :func:`faint_path`) lie on the other side of the line, and its boxes
        there came towards the line (see :meth:`_faint_crossing`)."""
        if self.join_s <= 0 or not state.first_box:
            return None
        times, path = faint_path(state.first_box, state.first[0], untracked, self.join_s)
        return self._faint_crossing(times, path, -side, state.first[2], state.first[1])

    def _faint_crossing(
        self, times: list[int], path: np.ndarray, far_side: int, size: float, near_point
    ) -> float | None:
        """Where a faint path crossed the line, or ``None``. ``path`` runs from its far end
        to the track (``near_point``, its box ``size`` px): its first ``min_frames`` boxes
        must lie on ``far_side`` and its boxes there move along the path at least
        ``APPROACH_SIZES_PER_S`` box sizes a second across the line's direction (a false box
        standing still there, a patch of background the detector likes, that the path
        reaches through a gap is not an object crossing)."""
        if len(path) < self.min_frames:
            return None
        signed = self.line.side(path)
        sides = np.sign(signed).astype(int)
        if not (sides[: self.min_frames] == far_side).all():
            return None
        last = int(np.flatnonzero(sides == far_side).max())  # its last box over there
        span_s = abs(times[last] - times[0]) / 1e9
        towards = far_side * (signed[0] - signed[last]) / self.line_length
        if span_s <= 0 or towards / span_s < APPROACH_SIZES_PER_S * size:
            return None
        nearer = path[last + 1] if last + 1 < len(path) else near_point
        return self._crossing_along(path[last], nearer)

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
        # kept twice join_s: a new track is joined by when it first showed, min_frames ago
        self._gone = {
            k: v for k, v in self._gone.items() if (now - v.last[0]) / 1e9 <= 2 * self.join_s
        }
        for other_id, other in [*self._tracks.items(), *self._gone.items()]:
            if other_id == track_id or other.taken or other.side != -side or other.label != label:
                continue
            last_ns, last_point = other.last
            gap_s = (first_ns - last_ns) / 1e9
            if not 0 < gap_s <= self.join_s:
                continue  # still seen when this one appeared, or too long ago
            velocity = track_velocity(other.first, other.last)
            if velocity is None or not self._heading_for_line(other):
                continue
            expected = np.asarray(last_point) + velocity * gap_s
            miss = float(np.hypot(*(np.asarray(first_point) - expected)))
            # a half-hidden object's boxes are small: its size is its track's largest box
            if miss <= max(size, other.largest) and miss < best_miss:
                best, best_miss = other, miss
        return best

    def _heading_for_line(self, state: _LineState) -> bool:
        """Whether the track was moving towards the line (from its first sighting to its
        last), not away from it."""
        velocity = track_velocity(state.first, state.last)
        if velocity is None:
            return False
        last_point = np.asarray(state.last[1])[None]
        towards = float(self.line.side(last_point + velocity[None])[0])
        return not (
            np.sign(towards) == np.sign(state.side)
            and abs(towards) >= abs(float(self.line.side(last_point)[0]))
        )

    def _same_object(
        self, result: FrameResult, track_id: int, state: _LineState, where: float, direction: str
    ) -> bool:
        """Whether this crossing repeats a recent one by a track that broke off (see
        ``merge_s``); records it otherwise."""
        now = result.timestamp_ns
        self._recent = [c for c in self._recent if (now - c[0]) / 1e9 <= self.merge_s]
        for _, along, other_direction, other, before in self._recent:
            if (
                other_direction == direction
                and other != track_id
                and before.last[0] < state.first[0]  # gone when this track appeared
                and abs(along - where) <= self.merge_along
            ):
                return True
        self._recent.append((now, where, direction, track_id, state))
        return False

    def went_across(self, state: _LineState, untracked: Sequence[tuple]) -> float | None:
        """Where on the line (0 at A, 1 at B) a lost track's object crossed it after it was
        last tracked, or ``None``: when the track was heading for the line and its faint
        path forward (see :func:`faint_path`) ends with at least ``min_frames`` boxes on the
        other side, moving away from it (see :meth:`_faint_crossing`): an object tracked up
        to the line, then scored too low to keep its track."""
        if self.join_s <= 0 or not state.last_box or not self._heading_for_line(state):
            return None
        times, path = faint_path(
            state.last_box, state.last[0], untracked, self.join_s, forward=True
        )
        x1, y1, x2, y2 = state.last_box
        size = max(x2 - x1, y2 - y1)
        return self._faint_crossing(times[::-1], path[::-1], -state.side, size, state.last[1])

    def end_track(self, result: FrameResult, track_id: int, untracked: Sequence[tuple]) -> None:
        """The tracker dropped ``track_id``: the crossing it made after it was last seen, if
        its faint path went across (see :meth:`went_across`), counts now; it is kept
        ``join_s`` for a later track to join."""
        state = self._tracks.pop(track_id, None)
        if state is None or state.side == 0:
            return
        direction = "in" if -state.side > 0 else "out"
        if direction not in state.counted and not state.taken:
            where = self.went_across(state, untracked)
            if where is not None:
                self._count(result, track_id, state, where, direction, state.label)
        if self.join_s > 0:
            self._gone[track_id] = state
