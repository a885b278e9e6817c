"""Core value types shared by every pipeline: frames, audio chunks, detections, events and
the per-frame result that a pipeline's stages grow.

They are small, validated at construction and cheap to copy. ``Detections`` is a struct
of arrays (one row per object) in source-frame pixels; its methods return new objects.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Frame:
    """One video frame.

    Attributes:
        image: ``(H, W, 3)`` uint8 array in BGR order.
        index: Position of the frame in its source, counting from 0.
        timestamp_ns: Monotonic capture time (live sources) or presentation time (files).
        source_id: Name of the source the frame came from.
        path: The file the frame was read from, for image files and folders (``None`` for
            cameras, streams and videos).
    """

    image: np.ndarray
    index: int
    timestamp_ns: int
    source_id: str = "0"
    path: str | None = None

    def __post_init__(self) -> None:
        image = self.image
        if not isinstance(image, np.ndarray):
            raise TypeError(f"image must be a numpy array, got {type(image).__name__}")
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must have shape (H, W, 3), got {image.shape}")
        if image.dtype != np.uint8:
            raise ValueError(f"image must be uint8, got {image.dtype}")
        if self.index < 0:
            raise ValueError(f"index must be >= 0, got {self.index}")

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass(frozen=True)
class AudioChunk:
    """A run of mono audio samples from a source.

    Attributes:
        samples: ``(N,)`` int16 or float32 array (float32 in ``[-1, 1]``).
        sample_rate: Samples per second.
        timestamp_ns: Time of the first sample in source audio time, counted from the
            source's first sample (files) or from the start of capture (live sources).
        source_id: Name of the source the audio came from.
    """

    samples: np.ndarray
    sample_rate: int
    timestamp_ns: int
    source_id: str = "0"

    def __post_init__(self) -> None:
        samples = self.samples
        if not isinstance(samples, np.ndarray):
            raise TypeError(f"samples must be a numpy array, got {type(samples).__name__}")
        if samples.ndim != 1:
            raise ValueError(f"samples must have shape (N,), got {samples.shape}")
        if samples.dtype not in (np.int16, np.float32):
            raise ValueError(f"samples must be int16 or float32, got {samples.dtype}")
        if not isinstance(self.sample_rate, int) or self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive int, got {self.sample_rate!r}")
        if self.timestamp_ns < 0:
            raise ValueError(f"timestamp_ns must be >= 0, got {self.timestamp_ns}")

    @property
    def start_s(self) -> float:
        """Time of the first sample in seconds."""
        return self.timestamp_ns / 1e9

    @property
    def duration_s(self) -> float:
        """Length of the chunk in seconds."""
        return len(self.samples) / self.sample_rate

    @property
    def end_s(self) -> float:
        """Time just after the last sample in seconds."""
        return self.start_s + self.duration_s

    def as_float32(self) -> np.ndarray:
        """The samples as float32 in ``[-1, 1]`` (int16 divided by 32768)."""
        if self.samples.dtype == np.int16:
            return self.samples.astype(np.float32) / 32768.0
        return self.samples


def _as_array(name: str, value: Any, dtype: Any, ndim: int) -> np.ndarray:
    array = np.asarray(value, dtype=dtype)
    if array.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {array.shape}")
    return array


@dataclass(frozen=True)
class Detections:
    """Objects found in one frame, as a struct of arrays.

    Attributes:
        xyxy: ``(N, 4)`` float32 boxes ``x1, y1, x2, y2`` in frame pixels.
        confidence: ``(N,)`` float32 scores in ``[0, 1]``.
        class_id: ``(N,)`` int64 class indices.
        tracker_id: Optional ``(N,)`` int64 track ids (``-1`` for unconfirmed).
        mask: Optional ``(N, H, W)`` bool instance masks.
        keypoints: Optional ``(N, K, 2)`` float32 keypoints in frame pixels.
        labels: Class names indexed by ``class_id``.

    Raises:
        ValueError: If a shape or dtype does not match, naming the field.
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    tracker_id: np.ndarray | None = None
    mask: np.ndarray | None = None
    keypoints: np.ndarray | None = None
    labels: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        xyxy = _as_array("xyxy", self.xyxy, np.float32, 2)
        if xyxy.shape[1] != 4:
            raise ValueError(f"xyxy must have shape (N, 4), got {xyxy.shape}")
        count = xyxy.shape[0]
        confidence = _as_array("confidence", self.confidence, np.float32, 1)
        class_id = _as_array("class_id", self.class_id, np.int64, 1)
        for name, array in (("confidence", confidence), ("class_id", class_id)):
            if array.shape[0] != count:
                raise ValueError(f"{name} must have shape ({count},), got {array.shape}")
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "confidence", confidence)
        object.__setattr__(self, "class_id", class_id)
        object.__setattr__(self, "labels", tuple(self.labels))
        if self.tracker_id is not None:
            tracker_id = _as_array("tracker_id", self.tracker_id, np.int64, 1)
            if tracker_id.shape[0] != count:
                raise ValueError(f"tracker_id must have shape ({count},), got {tracker_id.shape}")
            object.__setattr__(self, "tracker_id", tracker_id)
        if self.mask is not None:
            mask = _as_array("mask", self.mask, bool, 3)
            if mask.shape[0] != count:
                raise ValueError(f"mask must have shape ({count}, H, W), got {mask.shape}")
            object.__setattr__(self, "mask", mask)
        if self.keypoints is not None:
            keypoints = _as_array("keypoints", self.keypoints, np.float32, 3)
            if keypoints.shape[0] != count or keypoints.shape[2] != 2:
                raise ValueError(
                    f"keypoints must have shape ({count}, K, 2), got {keypoints.shape}"
                )
            object.__setattr__(self, "keypoints", keypoints)

    @classmethod
    def empty(cls, labels: Sequence[str] = ()) -> Detections:
        """Returns a ``Detections`` with no rows."""
        return cls(
            xyxy=np.zeros((0, 4), np.float32),
            confidence=np.zeros((0,), np.float32),
            class_id=np.zeros((0,), np.int64),
            labels=tuple(labels),
        )

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def __getitem__(self, index: Any) -> Detections:
        """Selects rows by a boolean mask, an index array or a slice."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return Detections(
            xyxy=self.xyxy[index],
            confidence=self.confidence[index],
            class_id=self.class_id[index],
            tracker_id=None if self.tracker_id is None else self.tracker_id[index],
            mask=None if self.mask is None else self.mask[index],
            keypoints=None if self.keypoints is None else self.keypoints[index],
            labels=self.labels,
        )

    def label(self, class_id: int) -> str:
        """Returns the name of ``class_id``, or its number as text when unnamed."""
        if 0 <= class_id < len(self.labels):
            return self.labels[class_id]
        return str(class_id)

    def area(self) -> np.ndarray:
        """Returns the ``(N,)`` box areas in square pixels."""
        widths = np.clip(self.xyxy[:, 2] - self.xyxy[:, 0], 0, None)
        heights = np.clip(self.xyxy[:, 3] - self.xyxy[:, 1], 0, None)
        return widths * heights

    def to_records(self) -> list[dict[str, Any]]:
        """Returns one JSON-safe dict per row: ``xyxy``, ``confidence``, ``class_id``, ``label``
        (and ``track_id`` once tracked)."""
        records = []
        for row in range(len(self)):
            record = {
                "xyxy": [round(float(v), 2) for v in self.xyxy[row]],
                "confidence": round(float(self.confidence[row]), 4),
                "class_id": int(self.class_id[row]),
                "label": self.label(int(self.class_id[row])),
            }
            if self.tracker_id is not None:
                record["track_id"] = int(self.tracker_id[row])
            records.append(record)
        return records


def iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Intersection over union of every pair of boxes.

    Args:
        boxes_a: ``(N, 4)`` boxes ``x1, y1, x2, y2``.
        boxes_b: ``(M, 4)`` boxes ``x1, y1, x2, y2``.

    Returns:
        ``(N, M)`` float32 IoU values.
    """
    a = np.asarray(boxes_a, np.float32).reshape(-1, 4)
    b = np.asarray(boxes_b, np.float32).reshape(-1, 4)
    # Few whole-array steps: the tracker calls this up to four times a frame, on a handful
    # of boxes, where each numpy call costs more than its arithmetic.
    corners = np.minimum(a[:, None, 2:], b[None, :, 2:])
    corners -= np.maximum(a[:, None, :2], b[None, :, :2])
    np.maximum(corners, 0.0, out=corners)
    intersection = corners[..., 0] * corners[..., 1]
    sizes = np.concatenate([a[:, 2:] - a[:, :2], b[:, 2:] - b[:, :2]])
    np.maximum(sizes, 0.0, out=sizes)
    area = sizes[:, 0] * sizes[:, 1]
    union = area[: len(a), None] + area[None, len(a) :]
    union -= intersection
    # union >= intersection >= 0, so a zero union has a zero intersection: 0 / 1e-9 = 0.
    return intersection / np.maximum(union, np.float32(1e-9))


def _check_json_safe(value: Any, path: str) -> None:
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"payload{path} must be a finite number, got {value}")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"payload{path} keys must be strings, got {key!r}")
            _check_json_safe(item, f"{path}.{key}")
        return
    if isinstance(value, (list, tuple)):
        for position, item in enumerate(value):
            _check_json_safe(item, f"{path}[{position}]")
        return
    raise ValueError(f"payload{path} must be JSON-safe, got {type(value).__name__}")


@dataclass(frozen=True)
class Event:
    """Something a pipeline noticed, ready for a sink (JSONL, MQTT, a web page).

    Attributes:
        kind: Dotted event name such as ``"detection"``, ``"line.cross"``, ``"speech.command"``.
        timestamp_ns: When it happened, in the source's clock.
        source_id: The source it came from.
        payload: JSON-safe details (the kind's fields).
        event_id: Unique id (random, 16 hex digits), so a consumer can drop a duplicate
            delivered twice by an at-least-once output.
    """

    kind: str
    timestamp_ns: int
    source_id: str = "0"
    payload: Mapping[str, Any] = field(default_factory=dict)
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])

    def __post_init__(self) -> None:
        if not self.kind or not isinstance(self.kind, str):
            raise ValueError(f"kind must be a non-empty string, got {self.kind!r}")
        _check_json_safe(self.payload, "")

    def to_json(self) -> str:
        """Returns the event as one line of JSON."""
        return json.dumps(
            {
                "kind": self.kind,
                "timestamp_ns": self.timestamp_ns,
                "source_id": self.source_id,
                "id": self.event_id,
                "payload": self.payload,
            },
            separators=(",", ":"),
        )

    def to_record(self, ts: float, frame: int | None = None) -> dict[str, Any]:
        """Returns the flat record every output shares (JSONL, MQTT, webhooks, the web page):
        ``{"kind", "ts", "frame", "id", **payload}``.

        Args:
            ts: Seconds, on the clock the output uses (relative to the first frame for JSONL).
            frame: Index of the frame that produced the event (omitted when ``None``).
        """
        record: dict[str, Any] = {"kind": self.kind, "ts": round(ts, 6)}
        if frame is not None:
            record["frame"] = frame
        record["id"] = self.event_id
        for key, value in self.payload.items():
            record.setdefault(key, value)
        return record


@dataclass
class FrameResult:
    """One frame and what the pipeline's stages added to it, in the order they ran.

    A detection stage sets ``detections``, a tracker adds their ``tracker_id``, a
    segmenter sets ``class_map`` (or instance masks in ``detections.mask``), rules append
    ``events``. Sinks (JSONL, video, MQTT, a web page) read the finished result.

    Attributes:
        frame: The frame (or, for audio pipelines, an ``AudioChunk``).
        detections: Objects found so far (``None`` until a stage sets them).
        class_map: Optional ``(H, W)`` integer class id per pixel, in frame pixels.
        class_labels: Names indexed by the values of ``class_map``.
        events: Events the frame produced.
        data: Anything else a stage wants to hand to later stages or sinks, by name.
        timings_ms: Times the stages report about themselves (``"detect.inference"``).
        prepared: Work done ahead for a stage (by its ``prepare``), by stage name.
        final: True for the one result made when the source ends, which carries only the
            events stages emit then (a track or an utterance still open); its ``frame`` is
            the last frame again, so visual sinks skip it and JSONL writes only its events.
    """

    frame: Any
    detections: Detections | None = None
    class_map: np.ndarray | None = None
    class_labels: tuple[str, ...] = ()
    events: list[Event] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)
    prepared: dict[str, Any] = field(default_factory=dict, repr=False)
    final: bool = False

    @property
    def index(self) -> int:
        """The frame's index in its source."""
        return int(getattr(self.frame, "index", 0))

    @property
    def source_id(self) -> str:
        """The source the frame came from."""
        return str(getattr(self.frame, "source_id", "0"))

    @property
    def timestamp_ns(self) -> int:
        """The frame's timestamp."""
        return int(self.frame.timestamp_ns)

    def add_event(self, kind: str, **payload: Any) -> Event:
        """Appends an event stamped with this frame's time and source; returns it.

        Raises:
            ValueError: If ``kind`` is empty or the payload is not JSON-safe.
        """
        event = Event(kind, self.timestamp_ns, self.source_id, payload)
        self.events.append(event)
        return event
