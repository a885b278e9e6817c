"""Frame energy for the VAD segmenter: levels, the noise floor and the loud threshold.

:class:`LevelMeter` gives, every 8 ms, the power of the 48 ms around it, over the whole
band and in 8 bands from 187 Hz to 8 kHz (a *level*). :class:`NoiseFloor` keeps the levels
of the audio outside segments and, when a segment begins, fixes the noise floor and the
threshold above which a level is *loud*. The rules are in the docstring of
:mod:`ubiq.pipelines.speech.vad`.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from .silero import FRAME_SAMPLES

__all__ = [
    "BANDS",
    "MIN_RUN",
    "PER_FRAME",
    "POWER_FLOOR",
    "SUBFRAME_SAMPLES",
    "TIME_TOL_S",
    "LevelMeter",
    "NoiseFloor",
    "levels_db",
    "loud_run_indices",
]

SUBFRAME_SAMPLES = 128
"""Samples per energy sub-frame (8 ms), four per model frame."""
TIME_TOL_S = 1e-6  # times closer than this (1/62 sample) are equal

# The values were measured with benchmarks/vad_bounds.py.
_LEVEL_WINDOW = 5  # 16 ms spectra averaged into a level (48 ms), centred on a sub-frame
_CENTRE = _LEVEL_WINDOW // 2
PER_FRAME = FRAME_SAMPLES // SUBFRAME_SAMPLES
BANDS = 8  # equal-width bands from _LOWEST_BIN to 8 kHz, each weighed by its own noise
_LOWEST_BIN = 3  # 187 Hz: leaves out the rumble that dominates pink and brown noise
_BAND_STARTS = np.linspace(_LOWEST_BIN, SUBFRAME_SAMPLES + 1, BANDS + 1).astype(int)[:-1]
_WINDOW = np.hanning(2 * SUBFRAME_SAMPLES)
_WINDOW_INDEX = np.arange(PER_FRAME)[:, None] * SUBFRAME_SAMPLES + np.arange(2 * SUBFRAME_SAMPLES)
_SPECTRUM_SCALE = 2.0 / (2 * SUBFRAME_SAMPLES * float(np.sum(_WINDOW**2)))
POWER_FLOOR = 1e-10  # -100 dB: digital silence
_NOISE_HISTORY = 250  # levels (2 s) of non-speech audio the floor is taken from
_MIN_NOISE = 16  # levels (128 ms) needed before the floor is trusted
_ONSET_GUARD_S = 0.2  # levels this close before an onset may be speech: not noise
_SPREAD_Z = 4.0  # loud: above the floor by this many robust std of the noise level
MIN_RUN = 2  # loud levels in a row that count (a lone one is noise)


class LevelMeter:
    """Turns a stream of 512-sample frames into levels, four per frame.

    A level is a ``(BANDS + 1,)`` power: the power in each band, then the broadband power.
    The levels lag the frames by 16 ms (half a level), and the first frame gives none.

    Args:
        sample_rate: Samples per second of the frames (16000).
    """

    def __init__(self, sample_rate: int) -> None:
        self._sub_s = SUBFRAME_SAMPLES / sample_rate
        self._recent = np.zeros((0, BANDS + 1))
        self._recent_times: list[float] = []
        self._last_half = np.zeros(SUBFRAME_SAMPLES)

    def add(self, frame: np.ndarray, start_s: float) -> tuple[list[float], np.ndarray]:
        """Computes the levels that this frame completes.

        Args:
            frame: ``(FRAME_SAMPLES,)`` audio following the previous frame.
            start_s: Time of ``frame[0]`` (seconds).

        Returns:
            The times of the levels' centres and the ``(K, BANDS + 1)`` levels (``K`` is
            ``PER_FRAME``, or 0 until enough audio has been seen).
        """
        samples = np.concatenate([self._last_half, frame.astype(np.float64)])
        self._last_half = samples[-SUBFRAME_SAMPLES:]
        spectra = np.fft.rfft(samples[_WINDOW_INDEX] * _WINDOW, axis=1)
        spectra = spectra.real**2 + spectra.imag**2
        halves = np.square(samples).reshape(-1, SUBFRAME_SAMPLES).sum(axis=1)
        powers = np.empty((PER_FRAME, BANDS + 1))
        powers[:, :BANDS] = np.add.reduceat(spectra, _BAND_STARTS, axis=1) * _SPECTRUM_SCALE
        powers[:, BANDS] = (halves[:-1] + halves[1:]) / (2 * SUBFRAME_SAMPLES)
        rows = np.concatenate([self._recent, powers])
        times = [*self._recent_times, *(start_s + i * self._sub_s for i in range(PER_FRAME))]
        self._recent, self._recent_times = rows[1 - _LEVEL_WINDOW :], times[1 - _LEVEL_WINDOW :]
        if len(rows) < _LEVEL_WINDOW:
            return [], np.zeros((0, BANDS + 1))
        sums = np.cumsum(np.concatenate([np.zeros((1, BANDS + 1)), rows]), axis=0)
        levels = (sums[_LEVEL_WINDOW:] - sums[:-_LEVEL_WINDOW])[-PER_FRAME:] / _LEVEL_WINDOW
        centres = times[_CENTRE : len(times) - _CENTRE][-len(levels) :]
        return centres, levels


class NoiseFloor:
    """The levels of the recent non-speech audio, and the floor and loud thresholds fixed
    from them when a segment begins.

    Attributes:
        history: ``(time_s, level)`` of up to 2 s of non-speech levels.
        floor: ``(BANDS + 1,)`` median power of the noise, per band and broadband (ones
            until first fixed; kept when a later segment has too little noise to fix it).
        thresholds: ``(2,)`` loud thresholds (dB over the floor) of the band-whitened and
            the broadband detector, or ``None`` while unknown.
    """

    def __init__(self) -> None:
        self.history: deque[tuple[float, np.ndarray]] = deque(maxlen=_NOISE_HISTORY)
        self.floor = np.ones(BANDS + 1)
        self.thresholds: np.ndarray | None = None

    def add(self, time_s: float, level: np.ndarray) -> None:
        """Notes a level of non-speech audio."""
        self.history.append((time_s, level))

    @property
    def floor_db(self) -> float | None:
        """Median broadband power (dB of full scale) of the recent noise, if known."""
        if len(self.history) < _MIN_NOISE:
            return None
        power = np.median([powers[BANDS] for _, powers in self.history])
        return 10.0 * math.log10(max(float(power), POWER_FLOOR))

    def fix(self, onset_s: float, margin_db: float, enabled: bool = True) -> None:
        """Fixes the floor and loud thresholds of a segment from the noise before it.

        Levels within 200 ms of ``onset_s`` may be speech: they are forgotten first.

        Args:
            onset_s: Start of the segment's first frame.
            margin_db: Least rise above the floor that makes a level loud.
            enabled: ``False`` leaves the thresholds unknown (the model alone decides).
        """
        while self.history and self.history[-1][0] > onset_s - _ONSET_GUARD_S - TIME_TOL_S:
            self.history.pop()
        self.thresholds = None
        if enabled and len(self.history) >= _MIN_NOISE:
            history = np.array([powers for _, powers in self.history])
            self.floor = np.maximum(np.median(history, axis=0), POWER_FLOOR / BANDS)
            low, middle, high = np.percentile(levels_db(history, self.floor), (16, 50, 84), axis=0)
            margin = np.maximum(margin_db, _SPREAD_Z * (high - low) / 2)
            self.thresholds = middle + margin

    def excess(self, levels: np.ndarray) -> np.ndarray:
        """How far ``(N, BANDS + 1)`` levels rise above the loud threshold (dB, the larger of
        the two detectors); ``-inf`` while the threshold is unknown."""
        if self.thresholds is None:
            return np.full(len(levels), -math.inf)
        return np.max(levels_db(levels, self.floor) - self.thresholds, axis=1)

    def loud_runs(self, levels: list[tuple[float, np.ndarray]]) -> list[float]:
        """Times of the levels that are in runs of at least ``MIN_RUN`` loud levels."""
        if not levels:
            return []
        excess = self.excess(np.array([level for _, level in levels]))
        return [levels[i][0] for i in loud_run_indices((excess > 0.0).tolist())]


def loud_run_indices(loud: list[bool]) -> list[int]:
    """Indices of the loud levels that are in runs of at least ``MIN_RUN``."""
    kept: list[int] = []
    start = None
    for index, flag in enumerate([*loud, False]):
        if flag and start is None:
            start = index
        elif not flag and start is not None:
            if index - start >= MIN_RUN:
                kept.extend(range(start, index))
            start = None
    return kept


def levels_db(powers: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """``(N, 2)`` levels over the noise floor (dB): band-whitened and broadband."""
    ratios = powers / floor
    levels = np.empty((len(powers), 2))
    levels[:, 0] = ratios[:, :BANDS].sum(axis=1) / BANDS
    levels[:, 1] = ratios[:, BANDS]
    np.maximum(levels, 1e-20, out=levels)
    return 10.0 * np.log10(levels)
