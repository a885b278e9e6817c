"""The VAD segmenter's echo test: is a fading sound a copy of the audio 60-300 ms before it?

A discrete echo (a voice repeated 60-300 ms later, fainter) stands above the noise after
the last word and would hold a segment open. :class:`EchoBand` keeps the stream's
100 Hz-1.5 kHz band (where a voice stands above white noise) at 4 kHz and tells how much of
a level's audio a scaled, delayed copy of earlier audio does not explain. How the segmenter
uses that is in the docstring of :mod:`ubiq.pipelines.speech.vad` (*echo*).

The values were measured on voices with an echo that the benchmarks do not test on
(espeak-ng's ``+m2``, ``+announcer`` and ``+f5`` variants).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .silero import SAMPLE_RATE
from .vad_levels import SUBFRAME_SAMPLES

__all__ = ["ECHO_MAX_S", "EchoBand"]

_ECHO_STEP = 4  # the echo test looks at 100 Hz-1.5 kHz, kept at 4 kHz (one sample in 4)
_ECHO_MIN = int(0.060 * SAMPLE_RATE) // _ECHO_STEP  # shortest delay looked for (4 kHz samples)
_ECHO_MAX = int(0.300 * SAMPLE_RATE) // _ECHO_STEP  # longest
ECHO_MAX_S = _ECHO_MAX * _ECHO_STEP / SAMPLE_RATE
"""Longest echo delay looked for (seconds)."""
_ECHO_WIDTH = 6 * SUBFRAME_SAMPLES  # audio compared: a level's 48 ms (16 kHz samples)
_ECHO_FFT = 2048  # >= the compared audio plus the longest delay, at 4 kHz
_ECHO_KEEP = 2048  # band samples kept (0.5 s at 4 kHz)
_REFINE = 3  # the delay found at 4 kHz is refined by this many 16 kHz samples either way


def _band_filter(low_hz: float, high_hz: float, taps: int = 127) -> np.ndarray:
    """A linear-phase FIR band-pass filter (windowed sinc) at 16 kHz."""
    centre = np.arange(taps) - (taps - 1) / 2

    def lowpass(cutoff_hz: float) -> np.ndarray:
        return 2 * cutoff_hz / SAMPLE_RATE * np.sinc(2 * cutoff_hz / SAMPLE_RATE * centre)

    return (lowpass(high_hz) - lowpass(low_hz)) * np.hamming(taps)


_ECHO_FILTER = _band_filter(100.0, 1500.0)
_ECHO_DELAY = (len(_ECHO_FILTER) - 1) // 2  # the filter's delay (16 kHz samples)


class EchoBand:
    """The last 0.5 s of the stream's 100 Hz-1.5 kHz band at 4 kHz, and the echo test."""

    def __init__(self) -> None:
        self._band = np.zeros(0)
        self._band_start_s = 0.0
        self._band_history = np.zeros(len(_ECHO_FILTER) - 1)

    def add(self, frame: np.ndarray, start_s: float) -> None:
        """Filters a frame to 100 Hz-1.5 kHz and keeps one sample in 4 for the echo test."""
        samples = np.concatenate([self._band_history, frame.astype(np.float64)])
        self._band_history = samples[len(samples) - len(_ECHO_FILTER) + 1 :]
        filtered = np.convolve(samples, _ECHO_FILTER, mode="valid")[::_ECHO_STEP]
        if len(self._band) == 0:
            self._band_start_s = start_s - _ECHO_DELAY / SAMPLE_RATE
        self._band = np.concatenate([self._band, filtered])
        if len(self._band) > 2 * _ECHO_KEEP:
            self._band_start_s += (len(self._band) - _ECHO_KEEP) * _ECHO_STEP / SAMPLE_RATE
            self._band = self._band[-_ECHO_KEEP:]

    def residual(
        self,
        time_s: float,
        audio: Callable[[float, float], np.ndarray],
        echo_rho: float,
        echo_db: float,
    ) -> float | None:
        """The power (per sample) of the 48 ms of audio around ``time_s`` that an echo does
        not explain, or ``None`` when it is not a fainter copy of the audio 60-300 ms before.

        The delay is the one whose copy matches best between 100 Hz and 1.5 kHz (where a
        voice stands above white noise), found at 4 kHz; the copy must match by
        ``echo_rho`` there and be ``echo_db`` louder. The residual is what is left of the
        broadband power once the best scaled copy (its delay refined at 16 kHz) is taken
        away.

        Args:
            time_s: Centre of the level to test.
            audio: ``audio(start_s, end_s)`` gives the buffered 16 kHz samples between two
                times.
            echo_rho: Least correlation of the copy in the band.
            echo_db: How much louder (dB) the copy must be.
        """
        width = _ECHO_WIDTH // _ECHO_STEP
        rate = SAMPLE_RATE / _ECHO_STEP
        stop = min(
            round((time_s + _ECHO_WIDTH / 2 / SAMPLE_RATE - self._band_start_s) * rate),
            len(self._band),
        )
        if stop - width - _ECHO_MAX < 0:
            return None
        band = self._band[stop - width - _ECHO_MAX : stop]
        window = band[-width:]
        energy = float(window @ window)
        if energy <= 0.0:
            return None
        earlier = band[: len(band) - _ECHO_MIN]
        products = np.fft.irfft(
            np.fft.rfft(earlier, _ECHO_FFT) * np.conj(np.fft.rfft(window, _ECHO_FFT)), _ECHO_FFT
        )[: len(earlier) - width + 1]
        sums = np.concatenate([[0.0], np.cumsum(earlier**2)])
        energies = np.maximum(sums[width:] - sums[:-width], 1e-30)
        rho = products / np.sqrt(energies * energy)
        best = int(np.argmax(rho))
        if rho[best] < echo_rho or energies[best] < energy * 10 ** (echo_db / 10):
            return None
        # The same stretch at 16 kHz, and the copy at the delay found, give or take 3 samples.
        delay = (len(band) - width - best) * _ECHO_STEP
        end_s = self._band_start_s + stop / rate
        samples = audio(end_s - (_ECHO_WIDTH + delay + _REFINE) / SAMPLE_RATE, end_s)
        if len(samples) < _ECHO_WIDTH + delay + _REFINE:
            return None
        samples = samples.astype(np.float64)
        now = samples[-_ECHO_WIDTH:]
        explained = 0.0
        for shift in range(-_REFINE, _REFINE + 1):
            first = len(samples) - _ECHO_WIDTH - delay - shift
            then = samples[first : first + _ECHO_WIDTH]
            then_energy = float(then @ then)
            if then_energy > 0.0:
                explained = max(explained, float(now @ then) ** 2 / then_energy)
        return max(float(now @ now) - explained, 0.0) / _ECHO_WIDTH
