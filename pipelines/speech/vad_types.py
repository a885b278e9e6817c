"""What the VAD segmenter takes and gives: :class:`VadOptions` and :class:`VadEvent`.

The rules the options tune are in :mod:`ubiq.pipelines.speech.vad`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["VadEvent", "VadOptions"]


@dataclass(frozen=True)
class VadOptions:
    """How probabilities and energy become speech segments (rules in the ``vad`` docstring).

    The defaults are tuned for spoken commands, where ``speech.end`` should be out within
    300 ms of the end of speech with no command split in two (``benchmarks/vad_bounds.py``).

    Attributes:
        threshold: Probability at or above which a frame is speech.
        neg_threshold: Probability below which a frame in a segment is model silence
            (``None``: ``max(threshold - 0.05, 0.01)``; Silero's own default is
            ``threshold - 0.15``, which ends segments later in noise).
        min_speech_ms: Speech needed before a segment is confirmed and ``speech.start`` is
            emitted; shorter segments give no event (150 ms keeps short words such as
            "stop").
        min_silence_ms: Model silence that ends a segment, counted from the start of the
            first silent frame to the end of the current one (so it acts in whole 32 ms
            frames: 128 ms is 4 frames).
        speech_pad_ms: Audio kept before ``t_start`` and after ``t_end`` in
            ``VadEvent.samples``; the boundaries themselves are not padded.
        max_speech_s: Longest segment; longer speech is split.
        energy: Use the frame energy for the boundaries and the end (``False``: the model
            alone, with boundaries on its 32 ms frame grid).
        energy_margin_db: Least rise (dB) above the noise floor that makes a level loud.
        quiet_ms: Quiet that ends a segment although the model still says speech (with a
            depth of 12 dB or more). It sets the end-of-speech latency (``speech.end``
            comes ``quiet_ms`` plus 30-70 ms after the end of speech), so keep it short,
            but longer than the pauses inside a command: 176 ms bridges the ~190 ms of
            quiet in "what time" at 10 dB SNR, and keeps the latency under 250 ms.
        confirm_quiet_ms: Quiet that model silence also needs to end a segment.
        max_refine_ms: Furthest the energy may move a boundary from the model's.
        tail_db: Depth (dB) at which no speech is assumed buried under the noise.
        tail_ms_per_db: Milliseconds of buried speech added to ``t_end`` per dB of depth
            below ``tail_db`` (0 turns the correction off).
        dynamic_range_db: Sound this far below the segment's loudest level (broadband
            power) does not extend the segment: echo and reverberation after the last
            word, which clean or quiet audio shows and noise hides.
        echo_rho: Least correlation (100 Hz to 1.5 kHz) with the audio 60-300 ms earlier
            that makes a fading level an echo (``vad`` docstring); 0 turns the echo test off.
        echo_db: How much fainter than the loudest level of the last 300 ms (above the
            noise) a level must be before the echo test looks at it.
    """

    threshold: float = 0.5
    neg_threshold: float | None = None
    min_speech_ms: float = 150.0
    min_silence_ms: float = 128.0
    speech_pad_ms: float = 30.0
    max_speech_s: float = 15.0
    energy: bool = True
    energy_margin_db: float = 0.8
    quiet_ms: float = 176.0
    confirm_quiet_ms: float = 64.0
    max_refine_ms: float = 300.0
    tail_db: float = 55.0
    tail_ms_per_db: float = 2.5
    dynamic_range_db: float = 35.0
    echo_rho: float = 0.5
    echo_db: float = 12.0

    def __post_init__(self) -> None:
        durations = ("min_speech_ms", "min_silence_ms", "speech_pad_ms", "energy_margin_db",
                     "quiet_ms", "confirm_quiet_ms", "max_refine_ms", "tail_ms_per_db",
                     "dynamic_range_db", "echo_db")  # fmt: skip
        for name in ("threshold", "tail_db", *durations):
            _check_number(name, getattr(self, name))
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        _check_number("echo_rho", self.echo_rho)
        if not 0.0 <= self.echo_rho < 1.0:
            raise ValueError(
                f"echo_rho must be in [0, 1) (0 turns the echo test off), got {self.echo_rho}"
            )
        if self.neg_threshold is not None:
            _check_number("neg_threshold", self.neg_threshold)
            if not 0.0 < self.neg_threshold <= self.threshold:
                raise ValueError(
                    f"neg_threshold must be in (0, threshold={self.threshold}], "
                    f"got {self.neg_threshold}"
                )
        for name in durations:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not isinstance(self.energy, bool):
            raise ValueError(f"energy must be a bool, got {self.energy!r}")
        _check_number("max_speech_s", self.max_speech_s)
        if self.max_speech_s * 1000 <= self.min_speech_ms + 2 * self.speech_pad_ms:
            raise ValueError(
                f"max_speech_s must exceed min_speech_ms + 2 * speech_pad_ms "
                f"({(self.min_speech_ms + 2 * self.speech_pad_ms) / 1000:g} s), "
                f"got {self.max_speech_s}"
            )

    @property
    def exit_threshold(self) -> float:
        """The resolved ``neg_threshold``."""
        if self.neg_threshold is not None:
            return float(self.neg_threshold)
        return max(self.threshold - 0.05, 0.01)


def _check_number(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


@dataclass(frozen=True, eq=False)
class VadEvent:
    """A segment boundary found by :class:`~ubiq.pipelines.speech.vad.VadSegmenter`.

    Attributes:
        kind: ``"speech.start"`` or ``"speech.end"``.
        t_start: Estimated start of speech in seconds of source audio, unpadded (rules in
            :mod:`ubiq.pipelines.speech.vad`).
        t_end: Estimated end of speech, unpadded (``== t_start`` for a start event).
        emitted_at: Audio time (seconds) of the end of the frame whose processing gave
            the event: ``emitted_at - true_end`` is the end-of-speech latency.
        samples: For ``speech.end``, the ``(N,)`` float32 audio from ``samples_start`` to
            ``min(t_end + speech_pad_ms, emitted_at)``; ``None`` for ``speech.start``.
        samples_start: Time of ``samples[0]``: ``t_start - speech_pad_ms``, or later where
            the stream, the buffer or the previous segment's audio stops it (``None`` for
            ``speech.start``).
    """

    kind: str
    t_start: float
    t_end: float
    emitted_at: float
    samples: np.ndarray | None = None
    samples_start: float | None = None

    @property
    def duration_s(self) -> float:
        """``t_end - t_start``."""
        return self.t_end - self.t_start
