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


_WHWH = np.array([2, 3, 2, 3])
"""Per coordinate ``cx, cy, w, h``, the size its noise scales with: width for x and w,
height for y and h."""

_GAIN_OF = np.array([0, 0, 1])
_TERM_OF = np.array([0, 1, 1])
"""The update's ``cov -= gain[_GAIN_OF] * cov[_TERM_OF]``: ``p -= gp p``, ``c -= gp c``,
``v -= gv c``."""


def _scale(box: np.ndarray) -> np.ndarray:
    """``(N, 4)`` noise scale per coordinate: width for x and w, height for y and h."""
    return np.maximum(box[:, _WHWH], 1.0)


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
        _predict_each(mean, cov, np.asarray(dt, np.float64).reshape(-1, 1))
        return
    # A few whole-array steps, whatever the number of tracks (each numpy call costs about
    # a microsecond on a handful of boxes, so their number is what a frame pays for):
    # [p, c, v] @ transition is [p + 2 dt c + dt^2 v, c + dt v, v], plus the noise.
    dt = float(dt)
    steps = dt / NOMINAL_DT
    transition = np.array([[1.0, 0.0, 0.0], [2.0 * dt, 1.0, 0.0], [dt * dt, dt, 1.0]])
    noise = np.array([POSITION_WEIGHT**2 * steps, 0.0, (VELOCITY_WEIGHT / NOMINAL_DT) ** 2 * steps])
    scale = _scale(mean[:, :, 0])
    scale *= scale
    cov[...] = cov @ transition + scale[:, :, None] * noise
    mean[:, :, 0] += dt * mean[:, :, 1]
    _floor_size(mean)


def _predict_each(mean: np.ndarray, cov: np.ndarray, dt: np.ndarray) -> None:
    """:func:`predict` with a time step per track (``dt`` of shape ``(N, 1)``)."""
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
    _floor_size(mean)


def _floor_size(mean: np.ndarray) -> None:
    """A box cannot shrink through zero: its size stops at 1 pixel, and its size velocity
    with it."""
    size = mean[:, 2:, 0]
    if size.min() < 1.0:
        small = size < 1.0
        np.maximum(size, 1.0, out=size)
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
    noise = _scale(mean[:, :, 0])
    noise *= POSITION_WEIGHT
    noise *= noise
    noise += cov[:, :, 0]
    gain = cov[:, :, :2] / noise[:, :, None]  # [p, c] / (p + r): position and velocity gains
    innovation = box - mean[:, :, 0]
    cov -= gain[:, :, _GAIN_OF] * cov[:, :, _TERM_OF]
    mean += gain * innovation[:, :, None]
