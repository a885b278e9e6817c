"""Multi-object tracking by detection: ByteTrack's association with OC-SORT's recovery.

Every frame, each live track's box is predicted with a Kalman filter (in seconds, see
:mod:`.kalman`), optionally moved by the camera's own motion (:mod:`.motion`), and
matched to the frame's detections by IoU with the Hungarian method:

1. confident detections against confirmed and lost tracks;
2. (OC-SORT's observation-centric recovery) detections still free against the *last
   observed* box of tracks still unmatched, which finds an object again after the
   prediction has drifted during an occlusion;
3. (ByteTrack) low-score detections against confirmed tracks still unmatched: an object
   half hidden keeps its track instead of losing it;
4. confident detections still free against tentative tracks.

A track re-found after missing frames is re-updated along a straight line from its last
observation (OC-SORT's observation-centric re-update), so the velocity it learnt while
coasting does not fling it off. A tentative track is confirmed after ``min_hits`` hits and
a lost one is dropped after ``lost_buffer_s`` seconds without a match, so the behaviour is
the same at 10 or 60 FPS. Matching is per class unless ``class_aware`` is off.

Thresholds are written for a detector whose confident boxes score about 0.9; with
``score_scale="auto"`` they are scaled to the detector at hand (by the 90th percentile of
the scores it has given so far), so a small embedded detector that never scores above 0.5
still starts tracks.

Only numpy, scipy's ``linear_sum_assignment`` and, for camera motion, OpenCV.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from ubiq.pipelines.track import TRACKERS, kalman
from ubiq.types import iou_matrix

TENTATIVE, TRACKED, LOST = 0, 1, 2


@dataclass(frozen=True)
class TrackerConfig:
    """Tracker parameters; the defaults suit both a strong and a small detector.

    Attributes:
        high_threshold: Detections scoring at least this take part in the first
            association (before score scaling).
        low_threshold: Detections below this are ignored.
        new_track_threshold: An unmatched detection scoring at least this starts a track.
        score_scale: ``"auto"`` (thresholds times ``min(1, p90 / 0.9)`` of the scores seen
            so far, never below 0.25) or a fixed factor (``1.0`` uses them as written).
        match_iou: Least IoU of the first association (and of the recovery step).
        low_match_iou: Least IoU of a low-score detection to keep a track.
        tentative_match_iou: Least IoU to confirm a tentative track.
        min_hits: Hits before a track is confirmed and gets an id (tracks found in a
            stream's first frame are confirmed at once).
        lost_buffer_s: Seconds a lost track is kept for re-identification.
        class_aware: Match detections only to tracks of their class. Off, matching ignores
            the class, and where the detector gave one object boxes of several classes
            (IoU >= 0.7) only the best-scoring one is kept: for a detector that hesitates
            between classes, with the label decided later by a majority over the track.
        low_stage: ByteTrack's second association of low-score detections.
        observation_recovery: OC-SORT's recovery: match free detections to the last
            observed box of tracks the prediction lost.
        re_update: OC-SORT's re-update of a re-found track along virtual observations.
        camera_motion: Compensate global camera motion (needs frames).
    """

    high_threshold: float = 0.5
    low_threshold: float = 0.1
    new_track_threshold: float = 0.5
    score_scale: str | float = "auto"
    match_iou: float = 0.4
    low_match_iou: float = 0.5
    tentative_match_iou: float = 0.3
    min_hits: int = 2
    lost_buffer_s: float = 1.0
    class_aware: bool = True
    low_stage: bool = True
    observation_recovery: bool = False
    re_update: bool = False
    camera_motion: bool = False

    def __post_init__(self) -> None:
        for name in (
            "high_threshold",
            "low_threshold",
            "new_track_threshold",
            "match_iou",
            "low_match_iou",
            "tentative_match_iou",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if self.low_threshold > self.high_threshold:
            raise ValueError(
                f"low_threshold must be <= high_threshold, got {self.low_threshold} > "
                f"{self.high_threshold}"
            )
        if self.score_scale != "auto" and not (
            isinstance(self.score_scale, (int, float)) and 0 < self.score_scale <= 1
        ):
            raise ValueError(f"score_scale must be 'auto' or in (0, 1], got {self.score_scale!r}")
        if self.min_hits < 1:
            raise ValueError(f"min_hits must be >= 1, got {self.min_hits}")
        if self.lost_buffer_s < 0:
            raise ValueError(f"lost_buffer_s must be >= 0, got {self.lost_buffer_s}")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> TrackerConfig:
        """The configuration of a named tracker (see :data:`TRACKERS`).

        Raises:
            ValueError: If ``name`` or an override is unknown.
        """
        if name not in TRACKERS:
            raise ValueError(f"tracker must be one of {', '.join(TRACKERS)}, got {name!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown tracker setting {unknown[0]!r}: known are {sorted(known)}")
        base: dict[str, Any] = {}
        if name == "sort":
            base = dict(
                low_stage=False, observation_recovery=False, re_update=False, camera_motion=False
            )
        return cls(**(base | overrides))


@dataclass
class TrackUpdate:
    """What one frame's update produced.

    Attributes:
        det_index: ``(K,)`` rows of the input detections that belong to confirmed tracks.
        track_id: ``(K,)`` their track ids.
        xyxy: ``(K, 4)`` the filtered boxes of those tracks.
        started: Tracks confirmed in this frame.
        ended: Tracks dropped in this frame.
    """

    det_index: np.ndarray
    track_id: np.ndarray
    xyxy: np.ndarray
    started: list[TrackInfo] = field(default_factory=list)
    ended: list[TrackInfo] = field(default_factory=list)


@dataclass(frozen=True)
class TrackInfo:
    """A track's life, for ``track.start`` / ``track.end`` events."""

    track_id: int
    class_id: int
    start_s: float
    last_s: float
    first_xyxy: tuple[float, ...]
    last_xyxy: tuple[float, ...]

    @property
    def duration_s(self) -> float:
        return max(0.0, self.last_s - self.start_s)


def _percentile(values: np.ndarray, q: float) -> float:
    """``np.percentile(values, 100 * q)`` (its default linear interpolation, the same
    float), at a twentieth of its cost on the few dozen scores the tracker keeps."""
    ordered = np.sort(values)
    position = (len(ordered) - 1) * q
    below = int(position)
    if below + 1 >= len(ordered):
        return float(ordered[-1])
    low, high = float(ordered[below]), float(ordered[below + 1])
    fraction = position - below
    # numpy's lerp, which goes from the nearer end
    if fraction >= 0.5:
        return high - (high - low) * (1 - fraction)
    return low + (high - low) * fraction


_NONE = np.zeros(0, np.int64)
_NO_IOU = np.zeros((0, 0), np.float32)

_ARRAYS = (
    "mean",
    "cov",
    "ids",
    "class_id",
    "state",
    "hits",
    "start_s",
    "last_s",
    "first_xyxy",
    "last_obs",
    "snap_mean",
    "snap_cov",
    "missed",
)


def _suppress_across_classes(
    xyxy: np.ndarray, scores: np.ndarray, class_id: np.ndarray, iou: float = 0.7
) -> np.ndarray:
    """``(N,)`` mask keeping each box unless a higher-scoring box of another class covers
    it with at least ``iou`` (same-class duplicates are the detector's NMS's business)."""
    overlap = iou_matrix(xyxy, xyxy)
    higher = scores[None, :] > scores[:, None]
    other = class_id[None, :] != class_id[:, None]
    return ~((overlap >= iou) & higher & other).any(axis=1)


class Tracker:
    """Online multi-object tracker. Call :meth:`update` once per frame, in time order.

    Args:
        config: Parameters (default :class:`TrackerConfig`).

    Example:
        >>> tracker = Tracker()
        >>> out = tracker.update(boxes, scores, classes, timestamp_s=0.0)
    """

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self._motion = None
        if self.config.camera_motion:
            from ubiq.pipelines.track.motion import CameraMotion

            self._motion = CameraMotion()
        self.reset()

    def reset(self) -> None:
        """Forgets every track; ids start again from 1."""
        self.mean = np.zeros((0, 4, 2))
        self.cov = np.zeros((0, 4, 3))
        self.ids = np.zeros(0, np.int64)
        self.class_id = np.zeros(0, np.int64)
        self.state = np.zeros(0, np.int8)
        self.hits = np.zeros(0, np.int64)
        self.start_s = np.zeros(0)
        self.last_s = np.zeros(0)
        self.first_xyxy = np.zeros((0, 4))
        self.last_obs = np.zeros((0, 4))
        self.snap_mean = np.zeros((0, 4, 2))
        self.snap_cov = np.zeros((0, 4, 3))
        self.missed = np.zeros(0, np.int64)
        self._next_id = 1
        self._time_s: float | None = None
        self._frames = 0
        self._scores: deque[np.ndarray] = deque(maxlen=32)
        self._scale = 1.0
        if self._motion is not None:
            self._motion.reset()

    def __len__(self) -> int:
        """Tracks alive (tentative, tracked or lost)."""
        return len(self.ids)

    @property
    def score_scale(self) -> float:
        """The factor the thresholds are multiplied by now."""
        return self._scale

    def _keep(self, keep: np.ndarray) -> None:
        for name in _ARRAYS:
            setattr(self, name, getattr(self, name)[keep])

    def _update_scale(self, scores: np.ndarray) -> None:
        setting = self.config.score_scale
        if setting != "auto":
            self._scale = float(setting)
            return
        if len(scores):
            self._scores.append(scores)
        # The percentile moves slowly: refresh it every frame at first, then every 8th.
        if self._scores and (self._frames <= 8 or self._frames % 8 == 0):
            p90 = _percentile(np.concatenate(self._scores), 0.9)
            self._scale = min(max(p90 / 0.9, 0.25), 1.0)

    @staticmethod
    def _associate(
        iou: np.ndarray, tracks: np.ndarray, dets: np.ndarray, min_iou: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Hungarian matching of ``tracks`` (rows of ``iou``) to ``dets`` (its columns).

        Returns:
            The matched tracks and dets (two aligned arrays), then the unmatched tracks and
            the unmatched dets.
        """
        if not len(tracks) or not len(dets):
            return _NONE, _NONE, tracks, dets
        if len(tracks) == 1 and len(dets) == 1:  # most frames of a quiet scene
            if iou[tracks[0], dets[0]] >= min_iou and iou[tracks[0], dets[0]] > 0.0:
                return tracks, dets, _NONE, _NONE
            return _NONE, _NONE, tracks, dets
        block = iou[tracks][:, dets]  # (np.ix_ is Python code: slower on small arrays)
        block[block < min_iou] = 0.0
        rows, cols = linear_sum_assignment(block, maximize=True)
        good = block[rows, cols] > 0.0
        rows, cols = rows[good], cols[good]
        free_tracks = np.ones(len(tracks), bool)
        free_tracks[rows] = False
        free_dets = np.ones(len(dets), bool)
        free_dets[cols] = False
        return tracks[rows], dets[cols], tracks[free_tracks], dets[free_dets]

    def _re_update(self, track: int, box: np.ndarray, now_s: float) -> None:
        """OC-SORT: replays a re-found track from its last observation along a straight
        line of virtual boxes to ``box``, instead of trusting the coasted velocity."""
        gap = int(self.missed[track])
        mean = self.snap_mean[track : track + 1].copy()
        cov = self.snap_cov[track : track + 1].copy()
        start = kalman.xyxy_to_cxcywh(self.last_obs[track])[0]
        end = box[0]
        step = (now_s - self.last_s[track]) / (gap + 1)
        for i in range(1, gap + 1):
            virtual = start + (end - start) * (i / (gap + 1))
            kalman.predict(mean, cov, step)
            kalman.update(mean, cov, virtual[None])
        kalman.predict(mean, cov, step)
        self.mean[track] = mean[0]
        self.cov[track] = cov[0]

    def update(
        self,
        xyxy: np.ndarray,
        scores: np.ndarray,
        class_id: np.ndarray | None = None,
        *,
        timestamp_s: float,
        frame: np.ndarray | None = None,
    ) -> TrackUpdate:
        """Advances the tracks to ``timestamp_s`` and matches this frame's detections.

        Args:
            xyxy: ``(N, 4)`` detection boxes in frame pixels.
            scores: ``(N,)`` detection scores.
            class_id: ``(N,)`` classes (``None``: all one class).
            timestamp_s: The frame's time in seconds (must not go back).
            frame: The image, for camera-motion compensation (ignored when it is off).

        Raises:
            ValueError: If the shapes disagree or time goes back.
        """
        config = self.config
        xyxy = np.asarray(xyxy, np.float64).reshape(-1, 4)
        scores = np.asarray(scores, np.float64).reshape(-1)
        if len(scores) != len(xyxy):
            raise ValueError(f"scores must have shape ({len(xyxy)},), got {scores.shape}")
        class_id = (
            np.zeros(len(xyxy), np.int64)
            if class_id is None
            else np.asarray(class_id, np.int64).reshape(-1)
        )
        if len(class_id) != len(xyxy):
            raise ValueError(f"class_id must have shape ({len(xyxy)},), got {class_id.shape}")
        if self._time_s is not None and timestamp_s < self._time_s:
            raise ValueError(f"timestamp_s must not go back: {timestamp_s} after {self._time_s}")
        dt = 0.0 if self._time_s is None else timestamp_s - self._time_s
        self._time_s = timestamp_s
        first_frame = self._frames == 0
        self._frames += 1

        kalman.predict(self.mean, self.cov, dt)
        if self._motion is not None and frame is not None:
            from ubiq.pipelines.track.motion import apply_motion

            apply_motion(self.mean, self._motion.estimate(frame, xyxy))

        if not config.class_aware and len(xyxy) > 1:
            # One object, several class guesses: keep the best box of each cluster, so a
            # detector that hesitates between classes does not start one track per class.
            keep = _suppress_across_classes(xyxy, scores, class_id)
            xyxy, scores, class_id = xyxy[keep], scores[keep], class_id[keep]
            index_map = np.flatnonzero(keep)
        else:
            index_map = None
        self._update_scale(scores)
        scale = self._scale
        high = scores >= config.high_threshold * scale
        low = ~high & (scores >= config.low_threshold * scale)
        high_dets = high.nonzero()[0]
        low_dets = low.nonzero()[0]
        det_boxes = xyxy

        # One IoU matrix of every track's predicted box against every detection serves
        # the three associations that use predictions (a frame then pays one
        # computation, not three, on the handful of boxes a scene has).
        tentative_mask = self.state == TENTATIVE
        iou = _NO_IOU
        if len(self.ids) and len(xyxy):
            iou = iou_matrix(kalman.cxcywh_to_xyxy(self.mean[:, :, 0]), det_boxes)
            if config.class_aware:
                iou[self.class_id[:, None] != class_id[None, :]] = 0.0
        pool = np.flatnonzero(~tentative_mask)
        matched_tracks, matched_dets, free_tracks, free_high = self._associate(
            iou, pool, high_dets, config.match_iou
        )
        found = [(matched_tracks, matched_dets)]
        if config.observation_recovery and len(free_tracks) and len(free_high):
            last_iou = np.zeros((len(self.ids), len(xyxy)), np.float32)
            last_iou[free_tracks] = iou_matrix(self.last_obs[free_tracks], det_boxes)
            if config.class_aware:
                last_iou[self.class_id[:, None] != class_id[None, :]] = 0.0
            more_tracks, more_dets, free_tracks, free_high = self._associate(
                last_iou, free_tracks, free_high, config.match_iou
            )
            found.append((more_tracks, more_dets))
        if config.low_stage and len(low_dets) and len(free_tracks):
            tracked = free_tracks[self.state[free_tracks] == TRACKED]
            more_tracks, more_dets, _, _ = self._associate(
                iou, tracked, low_dets, config.low_match_iou
            )
            found.append((more_tracks, more_dets))
        if len(free_high):
            tentative = np.flatnonzero(tentative_mask)
            more_tracks, more_dets, _, free_high = self._associate(
                iou, tentative, free_high, config.tentative_match_iou
            )
            found.append((more_tracks, more_dets))

        started: list[TrackInfo] = []
        det_of_track = np.full(len(self.ids), -1, np.int64)
        tracks = np.concatenate([pair[0] for pair in found]) if len(found) > 1 else found[0][0]
        if len(tracks):
            dets = np.concatenate([pair[1] for pair in found]) if len(found) > 1 else found[0][1]
            det_of_track[tracks] = dets
            boxes = kalman.xyxy_to_cxcywh(det_boxes[dets])
            if config.re_update:
                for position in np.flatnonzero(self.missed[tracks] > 0):
                    track = tracks[position]
                    self._re_update(track, boxes[position : position + 1], timestamp_s)
            mean, cov = self.mean[tracks], self.cov[tracks]
            kalman.update(mean, cov, boxes)
            self.mean[tracks], self.cov[tracks] = mean, cov
            if config.re_update:  # the state to replay from after a gap
                self.snap_mean[tracks], self.snap_cov[tracks] = mean, cov
            self.last_obs[tracks] = det_boxes[dets]
            self.last_s[tracks] = timestamp_s
            self.missed[tracks] = -1  # 0 once every track's count has gone up below
            self.hits[tracks] += 1
            was_tentative = tentative_mask[tracks]
            self.state[tracks[~was_tentative]] = TRACKED
            if was_tentative.any():
                for track in tracks[was_tentative & (self.hits[tracks] >= config.min_hits)]:
                    self.state[track] = TRACKED
                    self.ids[track] = self._next_id
                    self._next_id += 1
                    started.append(self._info(track))

        # Tracks without a match: tracked ones become lost, tentative ones go.
        unmatched = det_of_track < 0
        self.missed += 1
        self.state[unmatched & (self.state == TRACKED)] = LOST
        expired = (self.state == LOST) & (timestamp_s - self.last_s > config.lost_buffer_s)
        ended = [self._info(track) for track in np.flatnonzero(expired)] if expired.any() else []
        gone = (unmatched & tentative_mask) | expired
        if gone.any():
            self._keep(~gone)
            det_of_track = det_of_track[~gone]

        # New tracks from confident detections nobody claimed (every association above
        # takes its matches out of free_high).
        new = free_high[scores[free_high] >= config.new_track_threshold * scale]
        if len(new):
            confirmed_now = first_frame or config.min_hits <= 1
            mean, cov = kalman.initiate(kalman.xyxy_to_cxcywh(det_boxes[new]))
            count = len(new)
            ids = np.zeros(count, np.int64)
            if confirmed_now:
                ids = np.arange(self._next_id, self._next_id + count, dtype=np.int64)
                self._next_id += count
            self.mean = np.concatenate([self.mean, mean])
            self.cov = np.concatenate([self.cov, cov])
            self.snap_mean = np.concatenate([self.snap_mean, mean])
            self.snap_cov = np.concatenate([self.snap_cov, cov])
            self.ids = np.concatenate([self.ids, ids])
            self.class_id = np.concatenate([self.class_id, class_id[new]])
            self.state = np.concatenate(
                [self.state, np.full(count, TRACKED if confirmed_now else TENTATIVE, np.int8)]
            )
            self.hits = np.concatenate([self.hits, np.ones(count, np.int64)])
            self.start_s = np.concatenate([self.start_s, np.full(count, timestamp_s)])
            self.last_s = np.concatenate([self.last_s, np.full(count, timestamp_s)])
            self.first_xyxy = np.concatenate([self.first_xyxy, det_boxes[new]])
            self.last_obs = np.concatenate([self.last_obs, det_boxes[new]])
            self.missed = np.concatenate([self.missed, np.zeros(count, np.int64)])
            det_of_track = np.concatenate([det_of_track, new])
            if confirmed_now:
                started += [
                    self._info(track) for track in range(len(self.ids) - count, len(self.ids))
                ]

        shown = np.flatnonzero((self.state == TRACKED) & (det_of_track >= 0))
        det_index = det_of_track[shown]
        if index_map is not None:
            det_index = index_map[det_index]
        return TrackUpdate(
            det_index=det_index,
            track_id=self.ids[shown].copy(),
            xyxy=kalman.cxcywh_to_xyxy(self.mean[shown, :, 0]),
            started=started,
            ended=ended,
        )

    def _info(self, track: int) -> TrackInfo:
        return TrackInfo(
            track_id=int(self.ids[track]),
            class_id=int(self.class_id[track]),
            start_s=float(self.start_s[track]),
            last_s=float(self.last_s[track]),
            first_xyxy=tuple(round(float(v), 2) for v in self.first_xyxy[track]),
            last_xyxy=tuple(round(float(v), 2) for v in self.last_obs[track]),
        )

    def finish(self) -> list[TrackInfo]:
        """Ends every confirmed track still alive (the stream is over) and resets."""
        alive = [
            self._info(track)
            for track in np.flatnonzero(self.ids > 0)
            if self.state[track] != TENTATIVE
        ]
        self.reset()
        return alive
