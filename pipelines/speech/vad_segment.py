"""What the energy says about one open VAD segment: its loud levels, depth and end.

:class:`SegmentEnergy` follows the levels of a segment from its onset: the runs of loud
levels, the *depth*, the *last loud level* (less echoes and faint blips after a gap) and
the end of speech they give. The rules and the terms are in the docstring of
:mod:`ubiq.pipelines.speech.vad`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

import numpy as np

from .vad_echo import ECHO_MAX_S, EchoBand
from .vad_levels import BANDS, MIN_RUN, POWER_FLOOR, TIME_TOL_S, NoiseFloor
from .vad_types import VadOptions

__all__ = ["EDGE_S", "SegmentEnergy"]

# The values were measured with benchmarks/vad_bounds.py.
EDGE_S = 0.020  # how far a level's 48 ms spread a sharp edge (taken back)
_USABLE_DB = 6.0  # depth from which the energy places the boundaries
_TAIL_CAP_MS = 100.0  # most speech assumed buried under the noise after the last loud level
# Sound resuming after a gap (a 48 ms level's width) moves a segment's end only from 4 loud
# levels in a row, or a level 1 dB over the threshold: noise crosses the threshold for 2-3
# levels now and then, and such a blip after the last word made ends ~100-190 ms late
# (speech_bar.py, 20 and 10 dB). 6 levels also dropped the faint final "s" of "minutes".
# (It still holds the segment open: a faint word after a pause is not cut off.)
_BLIP_GAP_S = 0.048
_BLIP_RUN = 4
_BLIP_DB = 1.0
_RESIDUAL_DB = 3.0  # what the echo leaves must rise this far above the noise to be speech


class SegmentEnergy:
    """The loud levels of one segment, made when it opens (after the floor is fixed).

    Args:
        options: The segmenter's options.
        noise: The noise floor and thresholds, fixed for this segment.
        echo: The stream's band for the echo test.
        audio: ``audio(start_s, end_s)`` gives the buffered samples between two times.
        level_s: Time between levels (8 ms).

    Attributes:
        last_loud_s: Time of the last loud level (not an echo, within
            ``dynamic_range_db`` of the loudest), or ``None``.
        last_echo_s: Time of the last loud level the echo test explained, or ``None``.
        last_word_s: Time of the last loud level that is not a short, faint run after a
            gap (it places the end), or ``None``.
    """

    def __init__(
        self,
        options: VadOptions,
        noise: NoiseFloor,
        echo: EchoBand,
        audio: Callable[[float, float], np.ndarray],
        level_s: float,
    ) -> None:
        self.options = options
        self._noise = noise
        self._echo = echo
        self._audio = audio
        self._level_s = level_s
        self.last_loud_s: float | None = None
        self.last_echo_s: float | None = None
        self.last_word_s: float | None = None
        self._peak_db = -math.inf
        self._peak_level_db = -math.inf
        self._recent_db: deque[tuple[float, float]] = deque()
        self._run = 0
        self._run_peak = -math.inf

    @property
    def depth(self) -> float:
        """How far the segment's loudest level rose above the loud threshold (dB)."""
        return self._peak_db if self._noise.thresholds is not None else -math.inf

    @property
    def usable(self) -> bool:
        """Whether the energy is deep enough to place the boundaries."""
        return self.depth >= _USABLE_DB

    def track(self, time_s: float, excess: float, level: np.ndarray) -> None:
        """Notes a level of the open segment: a loud one within ``dynamic_range_db`` of the
        loudest so far is the segment's last loud level, unless the echo test explains it
        (then it is the last echo level). The last loud level that is not a short, faint run
        after a gap is the last word's, which places the end.

        Args:
            time_s: Centre of the level.
            excess: Its rise above the loud threshold (dB; ``-inf`` while unknown).
            level: The ``(BANDS + 1,)`` level.
        """
        self._run = self._run + 1 if excess > 0.0 else 0
        self._run_peak = max(self._run_peak, excess) if self._run > 1 else excess
        level_db = 10.0 * math.log10(max(float(level[BANDS]), POWER_FLOOR))
        # The recent loudest power above the noise (the echo test's first, cheap sieve).
        heard_db = 10.0 * math.log10(
            max(float(level[BANDS] - self._noise.floor[BANDS]), POWER_FLOOR)
        )
        while self._recent_db and self._recent_db[0][0] < time_s - ECHO_MAX_S - TIME_TOL_S:
            self._recent_db.popleft()
        while self._recent_db and self._recent_db[-1][1] <= heard_db:
            self._recent_db.pop()
        self._recent_db.append((time_s, heard_db))
        if self._run >= MIN_RUN:
            self._peak_db = max(self._peak_db, excess)
            self._peak_level_db = max(self._peak_level_db, level_db)
            options = self.options
            if options.echo_rho > 0 and heard_db <= self._recent_db[0][1] - options.echo_db:
                residual = self._echo.residual(
                    time_s, self._audio, options.echo_rho, options.echo_db
                )
                if residual is not None:
                    level_db = 10.0 * math.log10(max(residual, POWER_FLOOR))
                    over_db = level_db - 10.0 * math.log10(self._noise.floor[BANDS])
                    if over_db <= max(self._noise.thresholds[1], _RESIDUAL_DB):
                        self.last_echo_s = time_s
                        return
            if level_db < self._peak_level_db - options.dynamic_range_db:
                return
            self.last_loud_s = time_s
            run_start_s = time_s - (self._run - 1) * self._level_s
            if (
                self.last_word_s is None
                or run_start_s - self.last_word_s <= _BLIP_GAP_S
                or self._run >= _BLIP_RUN
                or self._run_peak >= _BLIP_DB
            ):
                self.last_word_s = time_s

    def end(self, model_end_s: float, start_s: float, now_s: float) -> float:
        """Where the segment's speech ends, if it ended now.

        Args:
            model_end_s: Start of the model silence (``now_s`` while the model hears speech).
            start_s: The segment's start.
            now_s: End of the frame being processed.
        """
        if not self.usable or self.last_word_s is None:
            return max(model_end_s, start_s)
        options = self.options
        buried_ms = options.tail_ms_per_db * (options.tail_db - self.depth)
        end = self.last_word_s - EDGE_S + min(max(buried_ms, 0.0), _TAIL_CAP_MS) / 1e3
        lowest = max(model_end_s - options.max_refine_ms / 1e3, start_s)
        return min(max(end, lowest), now_s)
