"""A constant-velocity Kalman filter for many boxes at once, in seconds, in numpy.

Each box is ``cx, cy, w, h`` with a velocity per coordinate (pixels per second). With the
noise of each coordinate set from the box's own size and no coupling between coordinates,
the 8x8 covariance of the usual box filter (SORT, ByteTrack, BoT-SORT) is four independent
2x2 blocks, one per coordinate. This module keeps just those blocks, ``(N, 4, 3)`` as
``[var(pos), cov(pos, vel), var(vel)]``, and steps every track with a few array operations
whatever their number: predicting and updating 50 tracks costs about as much as one.

Time is in seconds, so a track predicted across a dropped frame or a 10 FPS camera moves
as far as the object did. The noise is given per nominal frame of 1/30 s (ByteTrack's
weights: 1/20 of the box size for position, 1/160 for velocity) and scaled with the time
step, so the filter behaves the same at any frame rate.
"""

from __future__ import annotations

import numpy as np

NOMINAL_DT = 1.0 / 30.0
"""The frame interval the noise weights are given for (seconds)."""

POSITION_WEIGHT = 1.0 / 20.0
VELOCITY_WEIGHT = 1.0 / 160.0


def xyxy_to_cxcywh(xyxy: np.ndarray) -> np.ndarray:
    """``(N, 4)`` corners -> ``(N, 4)`` centre, width, height (float64)."""
    xyxy = np.asarray(xyxy, np.float64).reshape(-1, 4)
    wh = xyxy[:, 2:] - xyxy[:, :2]
    return np.concatenate([xyxy[:, :2] + wh / 2, wh], axis=1)


def cxcywh_to_xyxy(box: np.ndarray) -> np.ndarray:
    """``(N, 4)`` centre, width, height -> ``(N, 4)`` corners."""
    box = np.asarray(box, np.float64).reshape(-1, 4)
    half = box[:, 2:] / 2
    return np.concatenate([box[:, :2] - half, box[:, :2] + half], axis=1)


def _scale(box: np.ndarray) -> np.ndarray:
    """``(N, 4)`` noise scale per coordinate: width for x and w, height for y and h."""
    scale = np.empty((len(box), 4))
    np.maximum(box[:, 2], 1.0, out=scale[:, 0])
    np.maximum(box[:, 3], 1.0, out=scale[:, 1])
    scale[:, 2] = scale[:, 0]
    scale[:, 3] = scale[:, 1]
    return scale


def initiate(box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts filters at measured boxes, at rest, with a wide velocity uncertainty.

    Args:
        box: ``(N, 4)`` ``cx, cy, w, h``.

    Returns:
        ``mean (N, 4, 2)`` as ``[position, velocity]`` per coordinate and ``cov (N, 4, 3)``.
    """
    box = np.asarray(box, np.float64).reshape(-1, 4)
    mean = np.zeros((len(box), 4, 2))
    mean[:, :, 0] = box
    scale = _scale(box)
    cov = np.zeros((len(box), 4, 3))
    cov[:, :, 0] = (2 * POSITION_WEIGHT * scale) ** 2
    cov[:, :, 2] = (10 * VELOCITY_WEIGHT * scale / NOMINAL_DT) ** 2
    return mean, cov


def predict(mean: np.ndarray, cov: np.ndarray, dt: float | np.ndarray) -> None:
    """Moves every filter ``dt`` seconds ahead, in place.

    Args:
        mean: ``(N, 4, 2)``.
        cov: ``(N, 4, 3)``.
        dt: Seconds, one for all or ``(N,)``.
    """
    if not len(mean):
        return
    if np.ndim(dt):
        dt = np.asarray(dt, np.float64).reshape(-1, 1)
    steps = dt / NOMINAL_DT
    scale = _scale(mean[:, :, 0])
    q_position = (POSITION_WEIGHT * scale) ** 2 * steps
    q_velocity = (VELOCITY_WEIGHT / NOMINAL_DT * scale) ** 2 * steps
    mean[:, :, 0] += dt * mean[:, :, 1]
    p, c, v = cov[:, :, 0], cov[:, :, 1], cov[:, :, 2]
    new_p = p + 2 * dt * c + dt * dt * v + q_position
    new_c = c + dt * v
    cov[:, :, 0] = new_p
    cov[:, :, 1] = new_c
    cov[:, :, 2] = v + q_velocity
    # A box cannot shrink through zero: stop its size velocity instead.
    small = mean[:, 2:, 0] < 1.0
    if small.any():
        np.maximum(mean[:, 2:, 0], 1.0, out=mean[:, 2:, 0])
        mean[:, 2:, 1][small] = 0.0


def update(mean: np.ndarray, cov: np.ndarray, box: np.ndarray) -> None:
    """Corrects every filter with its measured box, in place.

    Args:
        mean: ``(N, 4, 2)``.
        cov: ``(N, 4, 3)``.
        box: ``(N, 4)`` measured ``cx, cy, w, h``.
    """
    if not len(mean):
        return
    box = np.asarray(box, np.float64).reshape(-1, 4)
    r = (POSITION_WEIGHT * _scale(mean[:, :, 0])) ** 2
    p, c, v = cov[:, :, 0], cov[:, :, 1], cov[:, :, 2]
    s = p + r
    gain_p = p / s
    gain_v = c / s
    innovation = box - mean[:, :, 0]
    mean[:, :, 0] += gain_p * innovation
    mean[:, :, 1] += gain_v * innovation
    new_v = v - gain_v * c
    cov[:, :, 1] = (1 - gain_p) * c
    cov[:, :, 0] = (1 - gain_p) * p
    cov[:, :, 2] = new_v
