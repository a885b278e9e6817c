"""Learned labels on tracks: each track's crops go through a classifier (a ``ubiq learn``
folder or any classify model), and the track takes the label its answers vote for.

```python
import ubiq

model = ubiq.load_model("ubiq-det-mnv2")
stages = [ubiq.Detect(model), ubiq.Track(), ubiq.ClassifyTracks("my-pets", classes=["cat"])]
```

After :class:`Track`, a track whose crops were answered ``my cat`` is drawn, counted and
written as ``my cat``; tracks the classifier does not know keep the detector's label.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ubiq.errors import ConfigError
from ubiq.pipelines.stage import _model_lock
from ubiq.types import Detections, FrameResult

__all__ = [
    "DEFAULT_EVERY_N_FRAMES",
    "DEFAULT_FORGET_AFTER_FRAMES",
    "DEFAULT_MARGIN",
    "DEFAULT_MAX_TRACKS",
    "DEFAULT_MIN_CONFIDENCE",
    "DEFAULT_SETTLE_VOTES",
    "ClassifyTracks",
    "TrackVotes",
]

UNKNOWN = "unknown"
"""The label a learned classifier answers below a class's threshold (it never votes)."""

DEFAULT_EVERY_N_FRAMES = 3
"""Classify a track at most every 3rd frame it is seen (its first frame included): crops of
neighbouring frames are nearly the same picture, so more often adds time, not evidence."""
DEFAULT_SETTLE_VOTES = 5
"""Stop classifying a track after 5 known answers (about half a second at 30 FPS with
every 3rd frame); its label is settled by then and later frames cost nothing."""
DEFAULT_MARGIN = 0.1
"""Widen each box by 10% of its size on every side before cropping: detector boxes are
tight, and the pictures a classifier learned from usually show a little context."""
DEFAULT_MIN_CONFIDENCE = 0.5
"""An answer whose top probability is below 0.5 counts for nothing (a plain softmax
classifier has no "unknown": a split answer is its way of not knowing)."""
DEFAULT_FORGET_AFTER_FRAMES = 150
"""Drop the votes of a track not seen for 150 frames (its ``track.end`` usually drops them
earlier); a tracker's lost buffer is far shorter."""
DEFAULT_MAX_TRACKS = 1024
"""At most this many tracks' votes are kept; beyond it the longest unseen go first."""

MIN_CROP_PX = 4
"""A crop narrower or lower than this is not classified."""


@dataclass
class TrackVotes:
    """What the classifier said about one track so far.

    Attributes:
        detector_label: The detector's label of the track's last frame.
        votes: Learned label -> summed probability of the known answers for it.
        known: Known answers so far.
        answers: Crops classified so far (known or not).
        next_call: The stage call from which the track may be classified again.
        last_seen: The stage call that last saw the track.
        reported: The label the last ``track.classified`` event gave (``None``: none yet).
    """

    detector_label: str = ""
    votes: dict[str, float] = field(default_factory=dict)
    known: int = 0
    answers: int = 0
    next_call: int = 0
    last_seen: int = 0
    reported: str | None = None

    @property
    def label(self) -> str | None:
        """The learned label with the most votes (``None`` before any known answer)."""
        if not self.votes:
            return None
        return max(self.votes, key=self.votes.__getitem__)

    @property
    def share(self) -> float:
        """The leading label's part of all votes (0 before any known answer)."""
        total = sum(self.votes.values())
        return self.votes[self.label] / total if total > 0 else 0.0


def crop_box(image: np.ndarray, box: Sequence[float], margin: float) -> np.ndarray | None:
    """The part of ``image`` inside ``box`` widened by ``margin`` of its size on each side,
    clipped to the image.

    Args:
        image: ``(H, W, 3)`` uint8 frame.
        box: ``x1, y1, x2, y2`` in frame pixels.
        margin: Fraction of the box's width (height) added left and right (top and bottom).

    Returns:
        The ``(h, w, 3)`` crop (a view), or ``None`` when it is smaller than
        :data:`MIN_CROP_PX` on a side.
    """
    height, width = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    dx, dy = (x2 - x1) * margin, (y2 - y1) * margin
    left, top = max(0, int(np.floor(x1 - dx))), max(0, int(np.floor(y1 - dy)))
    right, bottom = min(width, int(np.ceil(x2 + dx))), min(height, int(np.ceil(y2 + dy)))
    if right - left < MIN_CROP_PX or bottom - top < MIN_CROP_PX:
        return None
    return image[top:bottom, left:right]


class ClassifyTracks:
    """Labels tracked objects with a classifier's classes, voting over each track's life.

    For each tracked detection (``tracker_id >= 0``; with ``classes``, only those whose
    detector label is one of them) the box is cropped with a small margin and classified,
    on the first frame the track is seen and then every ``every_n_frames``-th frame, until
    it has ``settle_votes`` known answers. A known answer adds its probability to its
    label's votes; an ``unknown`` answer (or one under ``min_confidence``) adds nothing.

    A track with votes is relabelled: the output ``labels`` are the detector's labels plus
    the learned ones it lacks, and the track's ``class_id`` points at its leading learned
    label, so sinks draw it and rules count it under that name. Tracks without votes keep
    the detector's label. ``result.data["classify"]`` maps each visible track id to
    ``{"label", "share", "votes", "settled", "detector_label"}`` (tracks with votes only),
    and a ``track.classified`` event (``track_id``, ``label``, ``detector_label``,
    ``share``, ``votes``) marks each time a track's leading label is first known or changes.
    The classifier's time per frame is ``classify.inference``.

    Args:
        classifier: A classifier folder or file (``ubiq learn --out OUT``, a classify
            model, a zoo name), or a loaded one: anything called on a BGR image that answers
            with ``label`` and ``confidence`` (and ``known``, as a learned one does).
        classes: Detector labels whose tracks are classified (``None``: all).
        every_n_frames: Classify a track at most every this many frames.
        settle_votes: Known answers after which a track is no longer classified.
        margin: Fraction of a box's size added on each side of its crop.
        min_confidence: Answers whose probability is below this count for nothing.
        forget_after_frames: Frames after which an unseen track's votes are dropped.
        max_tracks: Most tracks whose votes are kept.
        name: Stage name in summaries (default ``"classify"``).

    Raises:
        ConfigError: If an option is out of range or ``classifier`` is not callable.
        ModelError: If a classifier path names no classifier.
    """

    def __init__(
        self,
        classifier: str | Path | Callable[[np.ndarray], Any],
        *,
        classes: Sequence[str] | None = None,
        every_n_frames: int = DEFAULT_EVERY_N_FRAMES,
        settle_votes: int = DEFAULT_SETTLE_VOTES,
        margin: float = DEFAULT_MARGIN,
        min_confidence: float = DEFAULT_MIN_CONFIDENCE,
        forget_after_frames: int = DEFAULT_FORGET_AFTER_FRAMES,
        max_tracks: int = DEFAULT_MAX_TRACKS,
        name: str = "classify",
    ) -> None:
        for option, value in (
            ("every_n_frames", every_n_frames),
            ("settle_votes", settle_votes),
            ("forget_after_frames", forget_after_frames),
            ("max_tracks", max_tracks),
        ):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{option} must be an integer >= 1, got {value!r}")
        if not 0.0 <= margin <= 1.0:
            raise ConfigError(f"margin must be between 0 and 1, got {margin}")
        if not 0.0 <= min_confidence <= 1.0:
            raise ConfigError(f"min_confidence must be between 0 and 1, got {min_confidence}")
        if classes is not None:
            if isinstance(classes, str):
                raise ConfigError(f"classes must be a list of labels, got the string {classes!r}")
            classes = [str(c) for c in classes]
            if not classes:
                raise ConfigError("classes must name at least one label (None: all)")
        if isinstance(classifier, (str, Path)):
            from ubiq.models.runtime.tasks import Classifier

            classifier = Classifier.load(classifier)
        if not callable(classifier):
            raise ConfigError(
                f"classifier must be a classifier path or callable (image -> answer), "
                f"got {type(classifier).__name__}"
            )
        self.classifier = classifier
        self.classes = None if classes is None else frozenset(classes)
        self.every_n_frames = int(every_n_frames)
        self.settle_votes = int(settle_votes)
        self.margin = float(margin)
        self.min_confidence = float(min_confidence)
        self.forget_after_frames = int(forget_after_frames)
        self.max_tracks = int(max_tracks)
        self.name = name
        learned = tuple(getattr(classifier, "labels", ()) or ())
        self.learned_labels: tuple[str, ...] = tuple(x for x in learned if x != UNKNOWN)
        self.tracks: dict[int, TrackVotes] = {}
        self._calls = 0
        self._lock = _model_lock(classifier)

    # --- one frame ---------------------------------------------------------------------

    def _classify(self, crop: np.ndarray) -> tuple[str, float] | None:
        """``(label, probability)`` of a known answer, else ``None``."""
        if self._lock is None:
            answer = self.classifier(np.ascontiguousarray(crop))
        else:
            with self._lock:
                answer = self.classifier(np.ascontiguousarray(crop))
        label, confidence = str(answer.label), float(answer.confidence)
        if not getattr(answer, "known", True) or label == UNKNOWN:
            return None
        if confidence < self.min_confidence:
            return None
        if label not in self.learned_labels:
            self.learned_labels += (label,)
        return label, confidence

    def _forget(self, result: FrameResult) -> None:
        for event in result.events:
            if event.kind == "track.end":
                self.tracks.pop(int(event.payload.get("track_id", -1)), None)
        oldest = self._calls - self.forget_after_frames
        for track_id in [t for t, v in self.tracks.items() if v.last_seen < oldest]:
            del self.tracks[track_id]
        if len(self.tracks) > self.max_tracks:
            by_age = sorted(self.tracks, key=lambda t: self.tracks[t].last_seen)
            for track_id in by_age[: len(self.tracks) - self.max_tracks]:
                del self.tracks[track_id]

    def __call__(self, result: FrameResult) -> FrameResult:
        detections = result.detections
        if detections is None or detections.tracker_id is None:
            raise ConfigError("classify needs tracked detections: put a Track stage before it")
        self._calls += 1
        call = self._calls
        self._forget(result)
        image = result.frame.image
        spent_s = 0.0
        for row, track_id in enumerate(detections.tracker_id.tolist()):
            if track_id < 0:
                continue
            detector_label = detections.label(int(detections.class_id[row]))
            state = self.tracks.get(track_id)
            if state is None:
                state = self.tracks[track_id] = TrackVotes(next_call=call)
            state.last_seen = call
            state.detector_label = detector_label
            wanted = self.classes is None or detector_label in self.classes
            if not wanted or state.known >= self.settle_votes or call < state.next_call:
                continue
            crop = crop_box(image, detections.xyxy[row], self.margin)
            if crop is None:
                continue
            began = time.perf_counter()
            answer = self._classify(crop)
            spent_s += time.perf_counter() - began
            state.answers += 1
            state.next_call = call + self.every_n_frames
            if answer is not None:
                label, confidence = answer
                state.votes[label] = state.votes.get(label, 0.0) + confidence
                state.known += 1
        if len(self.tracks) > self.max_tracks:
            self._forget(result)
        result.timings_ms[f"{self.name}.inference"] = spent_s * 1e3
        result.detections = self._relabel(result, detections)
        return result

    def _relabel(self, result: FrameResult, detections: Detections) -> Detections:
        """The detections with each voted track's class id on its learned label, and the
        ``data["classify"]`` and ``track.classified`` reports."""
        labels = detections.labels + tuple(
            x for x in self.learned_labels if x not in detections.labels
        )
        class_id = detections.class_id.copy()
        report: dict[int, dict[str, Any]] = {}
        for row, track_id in enumerate(detections.tracker_id.tolist()):
            state = self.tracks.get(track_id) if track_id >= 0 else None
            label = None if state is None else state.label
            if label is None:
                continue
            class_id[row] = labels.index(label)
            report[track_id] = {
                "label": label,
                "share": round(state.share, 4),
                "votes": state.known,
                "settled": state.known >= self.settle_votes,
                "detector_label": state.detector_label,
            }
            if state.reported != label:
                state.reported = label
                result.add_event(
                    "track.classified",
                    track_id=track_id,
                    label=label,
                    detector_label=state.detector_label,
                    share=round(state.share, 4),
                    votes=state.known,
                )
        result.data[self.name] = report
        return Detections(
            xyxy=detections.xyxy,
            confidence=detections.confidence,
            class_id=class_id,
            tracker_id=detections.tracker_id,
            mask=detections.mask,
            keypoints=detections.keypoints,
            labels=labels,
        )

    def finish(self) -> list:
        """Forgets every track when the source ends (nothing is still open to report)."""
        self.tracks.clear()
        self._calls = 0
        return []

    def close(self) -> None:
        """Forgets every track."""
        self.tracks.clear()
