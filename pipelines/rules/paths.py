"""Where tracks went: their velocity and box sizes, and the faint paths of objects the
tracker did not take (boxes scoring too low to start a track), which the line and zone
rules follow to date a crossing, an entry or an exit the tracks alone miss."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def track_velocity(first: tuple, last: tuple) -> np.ndarray | None:
    """Pixels per second from a track's first ``(ns, point, ...)`` to its last ``(ns, point)``
    sighting (``None`` if both are the same instant)."""
    span_s = (last[0] - first[0]) / 1e9
    if span_s <= 0:
        return None
    return (np.asarray(last[1]) - np.asarray(first[1])) / span_s


def box_sizes(detections) -> np.ndarray:
    """``(N,)`` the longer side of each box."""
    return np.maximum(
        detections.xyxy[:, 2] - detections.xyxy[:, 0],
        detections.xyxy[:, 3] - detections.xyxy[:, 1],
    )


FOLLOW_GAP = 2
"""Frames an untracked object may go unseen while :func:`faint_path` follows it back."""


PART_OF_TRACKED = 0.7
"""Share of an untracked box inside a tracked box that makes it part of that object."""


def covered(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """``(N,)`` the largest share of each box's area inside one of ``others``."""
    corners = np.minimum(boxes[:, None, 2:], others[None, :, 2:])
    corners -= np.maximum(boxes[:, None, :2], others[None, :, :2])
    np.maximum(corners, 0.0, out=corners)
    inter = corners[..., 0] * corners[..., 1]
    area = np.prod(np.maximum(boxes[:, 2:] - boxes[:, :2], 1e-6), axis=1)
    return (inter / area[:, None]).max(axis=1)


def follow(box: np.ndarray, boxes: np.ndarray, steps: int) -> int | None:
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


def faint_path(
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
        found = follow(box, boxes, gap + 1)
        if found is None:
            gap += 1
            if gap > FOLLOW_GAP:
                break
            continue
        box, gap = boxes[found], 0
        times.append(ns)
        points.append(anchors[found])
    if forward:
        return times, np.array(points).reshape(-1, 2)
    return times[::-1], np.array(points[::-1]).reshape(-1, 2)
