"""Streaming voice activity detection with Silero VAD, run by onnxruntime alone (no torch).

:class:`SileroVad` gives the speech probability of each 512-sample (32 ms) frame of 16 kHz
audio, keeping the model's recurrent state and the 64 samples of context that Silero VAD
v5 and later prepend to every frame (exactly as ``silero_vad.utils_vad.OnnxWrapper``).
:class:`VadSegmenter` turns those probabilities, and the energy of the audio, into
``speech.start`` and ``speech.end`` events.

The model decides that there is speech, with the hysteresis of Silero's
``get_speech_timestamps``:

- a segment begins on the first frame whose probability is ``>= threshold``;
- a segment is *confirmed* once it has lasted ``min_speech_ms`` with no model silence
  running: ``speech.start`` is emitted then, and only a confirmed segment gets a
  ``speech.end``, so a blip shorter than ``min_speech_ms`` gives no event and every
  ``speech.start`` is followed by exactly one ``speech.end``;
- *model silence* starts at the first frame whose probability is below ``neg_threshold``
  and lasts until a frame ``>= threshold`` (a frame in between neither cancels nor ends
  it);
- a segment that reaches ``max_speech_s`` is ended at the end of that frame.

Frame energy places the boundaries and speeds up the end: the model's probability sits on
a 32 ms grid and lags the end of speech by 100-250 ms in noise, the energy does neither.

- *level*: every 8 ms, the power of the 48 ms around it (five 16 ms windows, hop 8 ms),
  both over the whole band and in 8 bands from 187 Hz to 8 kHz;
- *noise floor*: per band, the median power of the last 2 s of audio outside segments
  (leaving out the 200 ms before each onset), fixed when a segment begins. Two detectors
  compare a level with it: the broadband power, and the mean over the bands of each
  band's power over its own floor (which sees speech that coloured noise, such as
  traffic rumble, hides from the broadband power);
- *loud*: a level above the floor, by either detector, by ``energy_margin_db`` or 4
  robust standard deviations of that detector's noise level, whichever is more; a lone
  loud level (not 2 in a row) does not count;
- *depth*: how far the segment's loudest level rose above that threshold. The energy is
  used only when the floor is known (128 ms of non-speech audio seen) and the depth is at
  least 6 dB; otherwise the model alone decides, and ``t_start``/``t_end`` are the onset
  frame's start and the start of the first model-silent frame;
- *last loud level*: the last loud level that is also within ``dynamic_range_db`` (35
  dB) of the segment's loudest broadband level. Fainter sound after speech is echo or
  reverberation (clean audio shows it, noise hides it), not words. Where loud levels
  resume after more than 48 ms without one, they move ``t_end`` only from the 4th in a
  row, or from one 1 dB over the threshold: shorter, fainter runs are most often the
  noise crossing the threshold (they still count as sound for *quiet*);
- *echo*: a loud level at least ``echo_db`` (12 dB) fainter, above the noise, than the
  loudest of the last 300 ms is compared with the audio 60-300 ms before it. Where its
  48 ms match a 12 dB louder stretch at some delay by a correlation of ``echo_rho`` (0.5)
  or more, between 100 Hz and 1.5 kHz, the best scaled copy of that stretch is taken away;
  if what is left is not 3 dB above the noise floor (nor loud), the level is an echo of
  earlier speech, not the last loud level. A discrete echo (a voice repeated 60-300 ms
  later, fainter) otherwise stands above the noise after the last word and holds the
  segment open; a faint final consonant is no copy of what came before, so it stays;
- *quiet*: the time since the last loud level of the segment.

A segment ends at the end of the first frame where one of these holds:

- model silence has lasted ``min_silence_ms`` and quiet ``confirm_quiet_ms`` (a pause
  the model misses but the energy shows, such as the "ts" of "lights off", does not end
  a command);
- quiet has lasted ``quiet_ms`` and the depth is at least 12 dB: the energy ends it
  although the model may still say speech (below 12 dB a pause may be speech sunk in the
  noise). That is ``quiet_ms`` with no echo level either, or ``quiet_ms`` plus 32 ms
  since the last loud level: the echo of a word may fill the pause before the next. The
  next segment then waits until the probability falls below ``neg_threshold`` or the
  audio is loud again;
- model silence has lasted ``min_silence_ms + 256 ms`` (noise the energy cannot tell
  from speech).

Boundaries (``VadEvent.t_start`` and ``t_end``), unpadded, in seconds of source audio:

- ``t_start``: the first loud level of the run of loud levels (gaps under 100 ms) at the
  model's onset, at most ``max_refine_ms`` before the onset and never before the previous
  segment's ``t_end``, plus the 20 ms by which a level's 48 ms spread a sharp onset;
- ``t_end``: the last loud level of the segment less those 20 ms, plus the speech
  expected to lie buried under the noise after it: ``tail_ms_per_db * (tail_db - depth)``
  ms, kept within 0-100 ms (0 for clean audio, ~70 ms at 20 dB SNR, ~100 ms at 10 dB);
  never more than ``max_refine_ms`` before the model silence nor after the decision.

``VadEvent.samples`` holds the audio from ``t_start - speech_pad_ms`` to ``t_end +
speech_pad_ms`` (as far as the stream, the buffer and the previous segment's audio allow;
``samples_start`` says where it begins).

Measured with ``benchmarks/vad_bounds.py --clips 20 --seeds 0,1,2,3,4,5`` (the tuning
set: espeak-ng phrases in white noise, 120 per condition; the true end is the end of the
last phoneme, see :class:`~ubiq.models.datasets.commands.Clip`): every start and end
within 100 ms of the true one, clean, at 20 dB and at 10 dB SNR; ``speech.end`` at most
253 ms after the end of speech; no phrase split in two. On fresh seeds 151-154 the same
(240 of 240; 238 with the echo test off), ends -8/+54/+35 ms on average, worst 96 ms. In
pink and brown noise the ends are less sure (seeds 155-156: pink 37 of 40 within 100 ms at
20 and at 10 dB, brown 34 and 30, ends up to 270 ms late); the echo test neither helps nor
hurts there. The echo test was tuned on espeak-ng's ``+m2``, ``+announcer`` and ``+f5``
variants (echoes of 15/256 to 26/256 at 130-154 ms) and is measured on ``+f4`` by
``benchmarks/speech_bar.py``, which holds that voice out: at 20 dB SNR it took en+f4 from
76 to 130-132 of 132 clips within 100 ms, and its command events over 300 ms from 8 of 135
to none; it costs no measurable time (real-time factor 0.019-0.020 with and without it).

The model file ships in the ``silero-vad`` wheel (MIT licence); ``pip install --no-deps
silero-vad`` installs it without torch. This module never imports that package: it only
locates its data folder.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from ubiq.types import AudioChunk

from .silero import CONTEXT_SAMPLES, FRAME_SAMPLES, SAMPLE_RATE, SileroVad, find_silero_model

__all__ = [
    "CONTEXT_SAMPLES",
    "FRAME_SAMPLES",
    "SAMPLE_RATE",
    "SUBFRAME_SAMPLES",
    "SileroVad",
    "VadEvent",
    "VadOptions",
    "VadSegmenter",
    "find_silero_model",
]

logger = logging.getLogger(__name__)

SUBFRAME_SAMPLES = 128
"""Samples per energy sub-frame (8 ms), four per model frame."""
_EPSILON_S = 1e-9
_TIME_TOL_S = 1e-6  # times closer than this (1/62 sample) are equal

# Energy tracking (module docstring); the values were measured with benchmarks/vad_bounds.py.
_LEVEL_WINDOW = 5  # 16 ms spectra averaged into a level (48 ms), centred on a sub-frame
_CENTRE = _LEVEL_WINDOW // 2
_PER_FRAME = FRAME_SAMPLES // SUBFRAME_SAMPLES
_EDGE_S = 0.020  # how far a level's 48 ms spread a sharp edge (taken back)
_BANDS = 8  # equal-width bands from _LOWEST_BIN to 8 kHz, each weighed by its own noise
_LOWEST_BIN = 3  # 187 Hz: leaves out the rumble that dominates pink and brown noise
_BAND_STARTS = np.linspace(_LOWEST_BIN, SUBFRAME_SAMPLES + 1, _BANDS + 1).astype(int)[:-1]
_WINDOW = np.hanning(2 * SUBFRAME_SAMPLES)
_WINDOW_INDEX = np.arange(_PER_FRAME)[:, None] * SUBFRAME_SAMPLES + np.arange(2 * SUBFRAME_SAMPLES)
_SPECTRUM_SCALE = 2.0 / (2 * SUBFRAME_SAMPLES * float(np.sum(_WINDOW**2)))
_POWER_FLOOR = 1e-10  # -100 dB: digital silence
_NOISE_HISTORY = 250  # levels (2 s) of non-speech audio the floor is taken from
_MIN_NOISE = 16  # levels (128 ms) needed before the floor is trusted
_ONSET_GUARD_S = 0.2  # levels this close before an onset may be speech: not noise
_SPREAD_Z = 4.0  # loud: above the floor by this many robust std of the noise level
_MIN_RUN = 2  # loud levels in a row that count (a lone one is noise)
_USABLE_DB = 6.0  # depth from which the energy places the boundaries
_FAST_DB = 12.0  # depth from which quiet alone ends a segment
_MAX_GAP_S = 0.1  # longest quiet gap inside the onset's run of loud levels
_HOLD_MS = 256.0  # model silence past min_silence_ms that ends a segment regardless
_TAIL_CAP_MS = 100.0  # most speech assumed buried under the noise after the last loud level
# The echo test (module docstring); the values were measured on voices with an echo that the
# benchmarks do not test on (espeak-ng's +m2, +announcer and +f5 variants).
_ECHO_STEP = 4  # the echo test looks at 100 Hz-1.5 kHz, kept at 4 kHz (one sample in 4)
_ECHO_MIN = int(0.060 * SAMPLE_RATE) // _ECHO_STEP  # shortest delay looked for (4 kHz samples)
_ECHO_MAX = int(0.300 * SAMPLE_RATE) // _ECHO_STEP  # longest
_ECHO_MAX_S = _ECHO_MAX * _ECHO_STEP / SAMPLE_RATE
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
_ECHO_HOLD_S = 0.032  # quiet past quiet_ms that ends a segment whose last sound was an echo
# Sound resuming after a gap (a 48 ms level's width) moves a segment's end only from 4 loud
# levels in a row, or a level 1 dB over the threshold: noise crosses the threshold for 2-3
# levels now and then, and such a blip after the last word made ends ~100-190 ms late
# (speech_bar.py, 20 and 10 dB). 6 levels also dropped the faint final "s" of "minutes".
# (It still holds the segment open: a faint word after a pause is not cut off.)
_BLIP_GAP_S = 0.048
_BLIP_RUN = 4
_BLIP_DB = 1.0
_RESIDUAL_DB = 3.0  # what the echo leaves must rise this far above the noise to be speech


@dataclass(frozen=True)
class VadOptions:
    """How probabilities and energy become speech segments (rules in the module docstring).

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
            that makes a fading level an echo (module docstring); 0 turns the echo test off.
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
    """A segment boundary found by :class:`VadSegmenter`.

    Attributes:
        kind: ``"speech.start"`` or ``"speech.end"``.
        t_start: Estimated start of speech in seconds of source audio, unpadded (module
            docstring).
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


class VadSegmenter:
    """Streams audio chunks through Silero VAD and emits speech segments.

    Chunks may have any length: they are cut into 512-sample frames and a remainder is
    kept for the next chunk (chunks are assumed contiguous). Audio is kept only as long
    as a segment, its padding or the boundary refinement can need it.

    Args:
        options: Segmentation rules.
        vad: The probability model (``None``: a new :class:`SileroVad`); anything with
            ``reset()`` and ``probability(frame) -> float`` works.
        sample_rate: Must be 16000.

    Raises:
        ValueError: For another sample rate.
    """

    def __init__(
        self,
        options: VadOptions | None = None,
        vad: SileroVad | None = None,
        sample_rate: int = SAMPLE_RATE,
    ) -> None:
        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"sample_rate must be {SAMPLE_RATE}, got {sample_rate}")
        self.options = options if options is not None else VadOptions()
        self.vad = vad if vad is not None else SileroVad()
        self.sample_rate = sample_rate
        self._frame_s = FRAME_SAMPLES / sample_rate
        self._sub_s = SUBFRAME_SAMPLES / sample_rate
        self.reset()

    @property
    def in_speech(self) -> bool:
        """Whether a confirmed segment is open (a ``speech.start`` awaits its end)."""
        return self._confirmed

    @property
    def noise_floor_db(self) -> float | None:
        """Median broadband power (dB of full scale) of the recent non-speech audio, if known."""
        if len(self._noise) < _MIN_NOISE:
            return None
        power = np.median([powers[_BANDS] for _, powers in self._noise])
        return 10.0 * math.log10(max(float(power), _POWER_FLOOR))

    def reset(self) -> None:
        """Forgets the stream: model state, buffered audio, noise floor and any segment."""
        self.vad.reset()
        self._pending = np.zeros(0, np.float32)
        self._pending_start_s = 0.0
        self._frames: deque[tuple[float, np.ndarray]] = deque()
        self._recent = np.zeros((0, _BANDS + 1))
        self._recent_times: list[float] = []
        self._last_half = np.zeros(SUBFRAME_SAMPLES)
        self._floor = np.ones(_BANDS + 1)
        self._levels: deque[tuple[float, np.ndarray]] = deque()
        self._noise: deque[tuple[float, np.ndarray]] = deque(maxlen=_NOISE_HISTORY)
        self._triggered = False
        self._confirmed = False
        self._latched = False
        self._onset_s = 0.0
        self._start_s = 0.0
        self._silence_start_s: float | None = None
        self._thresholds: np.ndarray | None = None
        self._last_loud_s: float | None = None
        self._last_echo_s: float | None = None
        self._last_word_s: float | None = None
        self._peak_db = -math.inf
        self._peak_level_db = -math.inf
        self._recent_db: deque[tuple[float, float]] = deque()
        self._band = np.zeros(0)
        self._band_start_s = 0.0
        self._band_history = np.zeros(len(_ECHO_FILTER) - 1)
        self._run = 0
        self._run_peak = -math.inf
        self._previous_end_s = -math.inf
        self._previous_audio_end_s = -math.inf
        self.last_probability: float | None = None

    def feed(self, chunk: AudioChunk) -> list[VadEvent]:
        """Processes the next chunk of the stream.

        Args:
            chunk: Mono 16 kHz audio (int16 or float32), following the previous chunk.

        Returns:
            The events its frames produced, in order (often none).

        Raises:
            TypeError: For something other than an :class:`~ubiq.types.AudioChunk`.
            ValueError: For another sample rate.
        """
        if not isinstance(chunk, AudioChunk):
            raise TypeError(f"chunk must be an AudioChunk, got {type(chunk).__name__}")
        if chunk.sample_rate != self.sample_rate:
            raise ValueError(
                f"chunk.sample_rate must be {self.sample_rate}, got {chunk.sample_rate}"
            )
        if len(self._pending) == 0:
            self._pending_start_s = chunk.start_s
        self._pending = np.concatenate([self._pending, chunk.as_float32()])
        events: list[VadEvent] = []
        while len(self._pending) >= FRAME_SAMPLES:
            frame, self._pending = self._pending[:FRAME_SAMPLES], self._pending[FRAME_SAMPLES:]
            start_s = self._pending_start_s
            self._pending_start_s += self._frame_s
            events.extend(self._step(frame, start_s))
        return events

    def flush(self) -> list[VadEvent]:
        """Ends the stream: processes the last partial frame and closes an open segment.

        The segmenter is reset afterwards, ready for a new stream.

        Returns:
            The remaining events (a ``speech.end`` when a confirmed segment was open).
        """
        events: list[VadEvent] = []
        audio_end_s = self._pending_start_s + len(self._pending) / self.sample_rate
        if len(self._pending):
            frame = np.zeros(FRAME_SAMPLES, np.float32)
            frame[: len(self._pending)] = self._pending
            events.extend(self._step(frame, self._pending_start_s, audio_end_s))
        elif self._frames:
            audio_end_s = self._frames[-1][0] + self._frame_s
        if self._triggered:
            events.extend(self._finish(self._end_estimate(audio_end_s), audio_end_s))
        self.reset()
        return events

    # --- the state machine ----------------------------------------------------------------

    def _step(
        self, frame: np.ndarray, start_s: float, audio_end_s: float | None = None
    ) -> list[VadEvent]:
        """Runs one frame through the model, the energy tracker and the state machine."""
        options = self.options
        end_s = start_s + self._frame_s if audio_end_s is None else audio_end_s
        probability = self.vad.probability(frame)
        self.last_probability = probability
        self._frames.append((start_s, frame))
        if options.echo_rho > 0:
            self._add_band(frame, start_s)
        self._add_levels(frame, start_s)
        events: list[VadEvent] = []
        if self._latched and (probability < options.exit_threshold or self._resumed()):
            self._latched = False
        if probability >= options.threshold:
            self._silence_start_s = None
            if not self._triggered and not self._latched:
                self._begin(start_s)
        elif (
            self._triggered
            and probability < options.exit_threshold
            and self._silence_start_s is None
        ):
            self._silence_start_s = start_s
        if (
            self._triggered
            and not self._confirmed
            and self._silence_start_s is None
            and end_s - self._onset_s >= options.min_speech_ms / 1e3 - _EPSILON_S
        ):
            self._confirmed = True
            if self._energy_usable():
                self._start_s = self._refine_start()
            events.append(VadEvent("speech.start", self._start_s, self._start_s, end_s))
        if self._triggered:
            reason = self._end_reason(end_s)
            if reason is not None:
                events.extend(self._finish(self._end_estimate(end_s), end_s))
                # The model's probability lags: no new segment on it until it falls.
                self._latched = reason == "quiet"
            elif end_s - self._start_s >= options.max_speech_s - _EPSILON_S:
                events.extend(self._finish(end_s, end_s))
        if not self._triggered:
            # Keep only what the padding and refinement of a segment starting next needs.
            keep_s = end_s - (options.speech_pad_ms + options.max_refine_ms) / 1e3
            while self._frames and self._frames[0][0] + self._frame_s <= keep_s:
                self._frames.popleft()
            while self._levels and self._levels[0][0] < keep_s - _TIME_TOL_S:
                self._levels.popleft()
        return events

    def _begin(self, onset_s: float) -> None:
        """Opens a segment at the frame starting at ``onset_s``."""
        self._triggered, self._confirmed, self._onset_s = True, False, onset_s
        self._start_s = max(onset_s, self._previous_end_s)
        self._set_threshold(onset_s)
        self._last_loud_s, self._peak_db, self._run = None, -math.inf, 0
        self._last_echo_s = self._last_word_s = None
        self._peak_level_db = -math.inf
        self._recent_db = deque()
        lowest = max(onset_s - self.options.max_refine_ms / 1e3, self._previous_end_s)
        earlier = [(t, level) for t, level in self._levels if t > lowest - _TIME_TOL_S]
        if earlier:
            excess = self._excess(np.array([level for _, level in earlier]))
            for (time_s, level), over in zip(earlier, excess.tolist(), strict=True):
                self._track(time_s, over, level)

    def _end_reason(self, end_s: float) -> str | None:
        """Why the open segment ends at the end of this frame (``"model"``, ``"quiet"``)."""
        options = self.options
        silent_s = -math.inf if self._silence_start_s is None else end_s - self._silence_start_s
        model_silent = silent_s >= options.min_silence_ms / 1e3 - _EPSILON_S
        if not self._energy_usable():
            return "model" if model_silent else None
        heard_s = self._levels[-1][0]
        quiet_s = heard_s - (self._last_loud_s if self._last_loud_s is not None else heard_s)
        # An echo is not speech, but sound the echo test explains may still be a pause
        # between words: it ends a segment only after _ECHO_HOLD_S more quiet.
        echo_s = heard_s - (self._last_echo_s if self._last_echo_s is not None else -math.inf)
        enough_s = options.quiet_ms / 1e3 - _EPSILON_S
        if self._depth() >= _FAST_DB and (
            min(quiet_s, echo_s) >= enough_s or quiet_s >= enough_s + _ECHO_HOLD_S
        ):
            return "quiet"
        if model_silent and quiet_s >= options.confirm_quiet_ms / 1e3 - _EPSILON_S:
            return "model"
        if silent_s >= (options.min_silence_ms + _HOLD_MS) / 1e3 - _EPSILON_S:
            return "model"
        return None

    def _finish(self, end_s: float, emitted_at: float) -> list[VadEvent]:
        """Closes the open segment; a confirmed one gives a ``speech.end`` with its audio."""
        events = []
        if self._confirmed:
            pad_s = self.options.speech_pad_ms / 1e3
            earliest = self._frames[0][0] if self._frames else self._start_s
            audio_start = max(self._start_s - pad_s, earliest, self._previous_audio_end_s)
            audio_end = min(end_s + pad_s, emitted_at)
            audio = self._audio(audio_start, audio_end)
            events.append(
                VadEvent("speech.end", self._start_s, end_s, emitted_at, audio, audio_start)
            )
            self._previous_end_s = end_s
            self._previous_audio_end_s = audio_end
        self._triggered = self._confirmed = False
        self._silence_start_s = None
        return events

    def _audio(self, start_s: float, end_s: float) -> np.ndarray:
        """The buffered samples from ``start_s`` to ``end_s``."""
        parts = []
        for frame_start_s, frame in self._frames:
            first = max(0, round((start_s - frame_start_s) * self.sample_rate))
            last = min(FRAME_SAMPLES, round((end_s - frame_start_s) * self.sample_rate))
            if last > first:
                parts.append(frame[first:last])
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    # --- energy -------------------------------------------------------------------------

    def _add_levels(self, frame: np.ndarray, start_s: float) -> None:
        """Computes the levels that this frame completes (they lag the frame by 16 ms)."""
        samples = np.concatenate([self._last_half, frame.astype(np.float64)])
        self._last_half = samples[-SUBFRAME_SAMPLES:]
        spectra = np.fft.rfft(samples[_WINDOW_INDEX] * _WINDOW, axis=1)
        spectra = spectra.real**2 + spectra.imag**2
        halves = np.square(samples).reshape(-1, SUBFRAME_SAMPLES).sum(axis=1)
        powers = np.empty((_PER_FRAME, _BANDS + 1))
        powers[:, :_BANDS] = np.add.reduceat(spectra, _BAND_STARTS, axis=1) * _SPECTRUM_SCALE
        powers[:, _BANDS] = (halves[:-1] + halves[1:]) / (2 * SUBFRAME_SAMPLES)
        rows = np.concatenate([self._recent, powers])
        times = [*self._recent_times, *(start_s + i * self._sub_s for i in range(_PER_FRAME))]
        self._recent, self._recent_times = rows[1 - _LEVEL_WINDOW :], times[1 - _LEVEL_WINDOW :]
        if len(rows) < _LEVEL_WINDOW:
            return
        sums = np.cumsum(np.concatenate([np.zeros((1, _BANDS + 1)), rows]), axis=0)
        levels = (sums[_LEVEL_WINDOW:] - sums[:-_LEVEL_WINDOW])[-_PER_FRAME:] / _LEVEL_WINDOW
        centres = times[_CENTRE : len(times) - _CENTRE][-len(levels) :]
        excess = self._excess(levels)
        for time_s, level, over in zip(centres, levels, excess.tolist(), strict=True):
            self._levels.append((time_s, level))
            if self._triggered:
                if time_s > self._start_s - _TIME_TOL_S:
                    self._track(time_s, over, level)
            elif not (self._latched and over > 0.0):
                self._noise.append((time_s, level))

    def _excess(self, levels: np.ndarray) -> np.ndarray:
        """How far levels rise above the loud threshold (dB, the larger of the two
        detectors); ``-inf`` while the threshold is unknown."""
        if self._thresholds is None:
            return np.full(len(levels), -math.inf)
        return np.max(_levels_db(levels, self._floor) - self._thresholds, axis=1)

    def _track(self, time_s: float, excess: float, level: np.ndarray) -> None:
        """Notes a level of the open segment: a loud one within ``dynamic_range_db`` of the
        loudest so far is the segment's last loud level, unless the echo test explains it
        (then it is the last echo level). The last loud level that is not a short, faint run
        after a gap is the last word's, which places the end."""
        self._run = self._run + 1 if excess > 0.0 else 0
        self._run_peak = max(self._run_peak, excess) if self._run > 1 else excess
        level_db = 10.0 * math.log10(max(float(level[_BANDS]), _POWER_FLOOR))
        # The recent loudest power above the noise (the echo test's first, cheap sieve).
        heard_db = 10.0 * math.log10(max(float(level[_BANDS] - self._floor[_BANDS]), _POWER_FLOOR))
        while self._recent_db and self._recent_db[0][0] < time_s - _ECHO_MAX_S - _TIME_TOL_S:
            self._recent_db.popleft()
        while self._recent_db and self._recent_db[-1][1] <= heard_db:
            self._recent_db.pop()
        self._recent_db.append((time_s, heard_db))
        if self._run >= _MIN_RUN:
            self._peak_db = max(self._peak_db, excess)
            self._peak_level_db = max(self._peak_level_db, level_db)
            options = self.options
            if options.echo_rho > 0 and heard_db <= self._recent_db[0][1] - options.echo_db:
                residual = self._echo_residual(time_s)
                if residual is not None:
                    level_db = 10.0 * math.log10(max(residual, _POWER_FLOOR))
                    over_db = level_db - 10.0 * math.log10(self._floor[_BANDS])
                    if over_db <= max(self._thresholds[1], _RESIDUAL_DB):
                        self._last_echo_s = time_s
                        return
            if level_db < self._peak_level_db - options.dynamic_range_db:
                return
            self._last_loud_s = time_s
            run_start_s = time_s - (self._run - 1) * self._sub_s
            if (
                self._last_word_s is None
                or run_start_s - self._last_word_s <= _BLIP_GAP_S
                or self._run >= _BLIP_RUN
                or self._run_peak >= _BLIP_DB
            ):
                self._last_word_s = time_s

    def _echo_residual(self, time_s: float) -> float | None:
        """The power (per sample) of the 48 ms of audio around ``time_s`` that an echo does
        not explain, or ``None`` when it is not a fainter copy of the audio 60-300 ms before.

        The delay is the one whose copy matches best between 100 Hz and 1.5 kHz (where a
        voice stands above white noise), found at 4 kHz; the copy must match by
        ``echo_rho`` there and be ``echo_db`` louder. The residual is what is left of the
        broadband power once the best scaled copy (its delay refined at 16 kHz) is taken
        away.
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
        if rho[best] < self.options.echo_rho or energies[best] < energy * 10 ** (
            self.options.echo_db / 10
        ):
            return None
        # The same stretch at 16 kHz, and the copy at the delay found, give or take 3 samples.
        delay = (len(band) - width - best) * _ECHO_STEP
        end_s = self._band_start_s + stop / rate
        audio = self._audio(end_s - (_ECHO_WIDTH + delay + _REFINE) / SAMPLE_RATE, end_s)
        if len(audio) < _ECHO_WIDTH + delay + _REFINE:
            return None
        audio = audio.astype(np.float64)
        now = audio[-_ECHO_WIDTH:]
        explained = 0.0
        for shift in range(-_REFINE, _REFINE + 1):
            first = len(audio) - _ECHO_WIDTH - delay - shift
            then = audio[first : first + _ECHO_WIDTH]
            then_energy = float(then @ then)
            if then_energy > 0.0:
                explained = max(explained, float(now @ then) ** 2 / then_energy)
        return max(float(now @ now) - explained, 0.0) / _ECHO_WIDTH

    def _add_band(self, frame: np.ndarray, start_s: float) -> None:
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

    def _loud_runs(self, levels: list[tuple[float, np.ndarray]]) -> list[float]:
        """Times of the levels that are in runs of at least ``_MIN_RUN`` loud levels."""
        if not levels:
            return []
        excess = self._excess(np.array([level for _, level in levels]))
        return [levels[i][0] for i in _runs((excess > 0.0).tolist())]

    def _set_threshold(self, onset_s: float) -> None:
        """Fixes the noise floor and loud thresholds of a segment from the noise before it."""
        while self._noise and self._noise[-1][0] > onset_s - _ONSET_GUARD_S - _TIME_TOL_S:
            self._noise.pop()
        self._thresholds = None
        if self.options.energy and len(self._noise) >= _MIN_NOISE:
            history = np.array([powers for _, powers in self._noise])
            self._floor = np.maximum(np.median(history, axis=0), _POWER_FLOOR / _BANDS)
            low, middle, high = np.percentile(
                _levels_db(history, self._floor), (16, 50, 84), axis=0
            )
            margin = np.maximum(self.options.energy_margin_db, _SPREAD_Z * (high - low) / 2)
            self._thresholds = middle + margin

    def _depth(self) -> float:
        """How far the segment's loudest level rose above the loud threshold (dB)."""
        return self._peak_db if self._thresholds is not None else -math.inf

    def _energy_usable(self) -> bool:
        return self._depth() >= _USABLE_DB

    def _resumed(self) -> bool:
        """Whether the last model frame was loud (after a segment that quiet ended)."""
        return len(self._loud_runs(list(itertools.islice(reversed(self._levels), _PER_FRAME)))) > 0

    def _refine_start(self) -> float:
        """The start of the run of loud levels at the model's onset."""
        onset, reach = self._onset_s, self.options.max_refine_ms / 1e3
        lowest = max(onset - reach, self._previous_end_s)
        loud = self._loud_runs(
            [(t, level) for t, level in self._levels if t > lowest - _TIME_TOL_S]
        )
        after = onset - self._frame_s - _TIME_TOL_S
        first = next((i for i, t in enumerate(loud) if t > after), None)
        if first is None or loud[first] > onset + reach + _TIME_TOL_S:
            return self._start_s
        while first > 0 and loud[first] - loud[first - 1] <= _MAX_GAP_S:
            first -= 1
        return max(loud[first] + _EDGE_S, lowest)

    def _end_estimate(self, now_s: float) -> float:
        """Where the open segment's speech ends, if it ended now."""
        model_end = self._silence_start_s if self._silence_start_s is not None else now_s
        if not self._energy_usable() or self._last_word_s is None:
            return max(model_end, self._start_s)
        options = self.options
        buried_ms = options.tail_ms_per_db * (options.tail_db - self._depth())
        end = self._last_word_s - _EDGE_S + min(max(buried_ms, 0.0), _TAIL_CAP_MS) / 1e3
        lowest = max(model_end - options.max_refine_ms / 1e3, self._start_s)
        return min(max(end, lowest), now_s)


def _runs(loud: list[bool]) -> list[int]:
    """Indices of the loud levels that are in runs of at least ``_MIN_RUN``."""
    kept: list[int] = []
    start = None
    for index, flag in enumerate([*loud, False]):
        if flag and start is None:
            start = index
        elif not flag and start is not None:
            if index - start >= _MIN_RUN:
                kept.extend(range(start, index))
            start = None
    return kept


def _levels_db(powers: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """``(N, 2)`` levels over the noise floor (dB): band-whitened and broadband."""
    ratios = powers / floor
    levels = np.empty((len(powers), 2))
    levels[:, 0] = ratios[:, :_BANDS].sum(axis=1) / _BANDS
    levels[:, 1] = ratios[:, _BANDS]
    np.maximum(levels, 1e-20, out=levels)
    return 10.0 * np.log10(levels)
