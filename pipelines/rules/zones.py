"""Zones: enter and exit, occupancy, dwell and intrusion per track (see
:mod:`ubiq.pipelines.rules.rules`)."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ubiq.errors import ConfigError
from ubiq.pipelines.rules.geometry import Zone
from ubiq.pipelines.rules.paths import box_sizes, faint_path, track_velocity
from ubiq.types import FrameResult

EDGE_FRAMES = 10
"""Frames of a track's path a straight line is fitted to, to time its entry or exit (see
:meth:`ZoneWatch._crossed_at`)."""


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
    taken_by: int = -1  # that track
    ended_at: int = 0  # dropped by the tracker inside: when it left, should no track join it
    path: deque = field(default_factory=lambda: deque(maxlen=EDGE_FRAMES))  # (ns, x, y)


class ZoneWatch:
    """Enter and exit events of tracks in a polygon, occupancy per label, dwell
    (``zone.dwell`` once a track has stayed ``dwell_s`` seconds) and intrusion
    (``zone.intrusion`` when a track of a ``forbidden`` label enters).

    Times are back-dated over the hysteresis: ``zone.enter`` comes ``min_frames - 1`` frames
    after the point entered and says so (``since_s``: seconds since it entered), and
    ``dwell_s`` runs from the first frame inside to the first frame outside (the first frame
    a straight line fitted to the track's last ``EDGE_FRAMES`` points is on the new side,
    so one jittering box does not move the time), or, for a track the tracker drops while
    inside, to the first frame it was no longer seen in (or, see ``join_s``, when its faint
    path left).

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
            second enter, exit or dwell event; should the old track be seen again, the stay
            comes back to it (and the later track, if seen beside it, is another object
            with a stay of its own from when it was born). A track the tracker drops
            inside stays in the zone until ``join_s`` after it was last seen, for a track
            born inside to join it (its exit comes then, timed as below). A track born
            inside the zone
            and joined to none whose faint path (the boxes the tracker did not take,
            followed back from its first box within ``join_s``) starts with ``min_frames``
            boxes outside entered when that path did: its stay is dated from then; and a
            track the tracker drops inside leaves when its faint path forward left (or
            was last seen), when that is ``min_frames`` frames or more after it was lost.
            0 turns all of these off.
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
        self._dropped: set[int] = set()  # dropped by the tracker inside (see end_track)
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
            velocity = track_velocity(other.first, other.last)
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
        :meth:`~ubiq.pipelines.rules.lines.LineCrossing.update`)."""
        now = result.timestamp_ns
        inside = self.zone.contains(points)
        sizes = box_sizes(result.detections)
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
            state.path.append((now, point[0], point[1]))
            if state.taken and not self._take_back(result, track_id, state, untracked):
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
                    # the box jitters: time the crossing by the track's fitted path
                    crossed = self._crossed_at(state, here)
                    if crossed is not None:
                        state.streak_ts = crossed
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
        self._settle(result)
        self._report_occupancy(result)

    def _settle(self, result: FrameResult, *, all_of_them: bool = False) -> None:
        """Tracks the tracker dropped inside (see :meth:`end_track`): a joined one goes
        (its stay goes on as the later track's), and one that no track joined within
        ``join_s`` of when it was last seen (or every one, ``all_of_them``) leaves."""
        now = result.timestamp_ns
        for track_id in list(self._dropped):
            state = self._tracks[track_id]
            if state.taken:
                self._dropped.discard(track_id)
                del self._tracks[track_id]
            elif all_of_them or (now - state.last[0]) / 1e9 > self.join_s:
                self._dropped.discard(track_id)
                del self._tracks[track_id]
                self._exit(result, track_id, state, state.ended_at)

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
            other.taken, other.taken_by, other.inside = True, track_id, False
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

    def _take_back(
        self, result: FrameResult, track_id: int, state: _ZoneState, untracked: Sequence[tuple]
    ) -> bool:
        """A track whose stay another track carried on (see ``join_s``) is seen again:
        its stay comes back to it, and the other track, when it is seen in this frame too
        (so it is another object), starts a stay of its own; ``False`` when that stay has
        ended (the other track left or was dropped), and the track stays ignored."""
        taker = self._tracks.get(state.taken_by)
        if taker is None or not taker.inside:
            return False
        state.taken, state.inside = False, True
        state.entered_ns, state.dwell_sent = taker.entered_ns, taker.dwell_sent
        taker.inside = False
        if state.taken_by in result.detections.tracker_id.tolist():
            taker.streak_ts = taker.first[0]  # inside since it was born
            self._enter(result, state.taken_by, taker, result.timestamp_ns, untracked)
        else:
            taker.taken, taker.taken_by = True, track_id
        return True

    def _crossed_at(self, state: _ZoneState, here: bool) -> int | None:
        """The first frame a straight line fitted to the track's last points (least
        squares over time) is on the new side (``here``: inside), after its last frame on
        the old side; ``None`` when the fit does not cross in the window."""
        if len(state.path) < max(4, self.min_frames + 2):
            return None
        path = np.array(state.path, np.float64)
        t = (path[:, 0] - path[-1, 0]) / 1e9
        if np.ptp(t) <= 0:
            return None
        design = np.stack([t, np.ones_like(t)], axis=1)
        coef, *_ = np.linalg.lstsq(design, path[:, 1:], rcond=None)
        fitted = np.round(design @ coef, 3)  # a point on the edge stays on it
        flags = self.zone.contains(fitted)
        old_side = np.flatnonzero(flags != here)
        if not len(old_side) or flags[-1] != here or old_side[-1] + 1 >= len(path):
            return None
        return int(path[old_side[-1] + 1, 0])

    def _came_in(self, state: _ZoneState, untracked: Sequence[tuple]) -> int | None:
        """When a track born inside entered, if its faint path (see :func:`faint_path`)
        starts with ``min_frames`` boxes outside: the first frame of the path inside after
        them; else ``None``."""
        if self.join_s <= 0 or not state.first_box:
            return None
        times, path = faint_path(state.first_box, state.first[0], untracked, self.join_s)
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
        carry on from its last box (see :func:`faint_path`), when they left the zone or
        were last seen."""
        state = self._tracks.get(track_id)
        if state is None or state.ended_at:
            return
        if not state.inside or state.taken:
            del self._tracks[track_id]
            return
        left, went_out = self._went_out(state, untracked)
        state.ended_at = left or state.gone_ns or at_ns
        if went_out or self.join_s <= 0:
            del self._tracks[track_id]
            self._exit(result, track_id, state, state.ended_at)
            self._report_occupancy(result)
        else:  # it stays inside (hidden, perhaps) until a track born inside joins it, or
            self._dropped.add(track_id)  # join_s after it was last seen (see _settle)

    def finish(self, result: FrameResult) -> None:
        """The stream ended: the tracks dropped inside that no track joined leave."""
        self._settle(result, all_of_them=True)
        self._report_occupancy(result)

    def _went_out(self, state: _ZoneState, untracked: Sequence[tuple]) -> tuple[int | None, bool]:
        """When a track lost inside left the zone by its faint path forward: the first
        frame of the path's last run outside, or, when the path ends inside, the first
        frame after it; ``None`` without a path or when that is less than ``min_frames``
        frames after the track was lost. And whether the path went out of the zone."""
        if self.join_s <= 0 or not state.last_box or not state.gone_ns:
            return None, False
        times, path = faint_path(
            state.last_box, state.last[0], untracked, self.join_s, forward=True
        )
        if not len(path):
            return None, False
        inside = self.zone.contains(path)
        if not inside[-1]:  # it went out: from the first box of its last run outside
            last_inside = np.flatnonzero(inside)
            left = times[int(last_inside.max()) + 1 if len(last_inside) else 0]
        else:
            after = [ns for ns, _, _ in untracked if ns > times[-1]]
            left = after[0] if after else times[-1]
        # out within min_frames of the loss: no more than the loss says (box jitter)
        frames_later = sum(1 for ns, _, _ in untracked if state.gone_ns <= ns < left)
        return (left if frames_later >= self.min_frames else None), not inside[-1]
