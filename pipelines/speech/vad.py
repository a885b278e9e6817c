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

The segmenter's parts live beside it: :class:`VadOptions` and :class:`VadEvent` in
``vad_types``, levels and the noise floor in ``vad_levels``, the echo test in ``vad_echo``
and the loud levels of an open segment in ``vad_segment``.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import deque

import numpy as np

from ubiq.types import AudioChunk

from .silero import CONTEXT_SAMPLES, FRAME_SAMPLES, SAMPLE_RATE, SileroVad, find_silero_model
from .vad_echo import EchoBand
from .vad_levels import PER_FRAME, SUBFRAME_SAMPLES, TIME_TOL_S, LevelMeter, NoiseFloor
from .vad_segment import EDGE_S, SegmentEnergy
from .vad_types import VadEvent, VadOptions

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

_EPSILON_S = 1e-9

# The segment rules (module docstring); the values were measured with benchmarks/vad_bounds.py.
# Levels, the noise floor and the loud threshold are in vad_levels, the echo test in vad_echo,
# the loud levels of an open segment (depth, last word, end) in vad_segment.
_FAST_DB = 12.0  # depth from which quiet alone ends a segment
_MAX_GAP_S = 0.1  # longest quiet gap inside the onset's run of loud levels
_HOLD_MS = 256.0  # model silence past min_silence_ms that ends a segment regardless
_ECHO_HOLD_S = 0.032  # quiet past quiet_ms that ends a segment whose last sound was an echo


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
        return self._noise.floor_db

    def reset(self) -> None:
        """Forgets the stream: model state, buffered audio, noise floor and any segment."""
        self.vad.reset()
        self._pending = np.zeros(0, np.float32)
        self._pending_start_s = 0.0
        self._frames: deque[tuple[float, np.ndarray]] = deque()
        self._meter = LevelMeter(self.sample_rate)
        self._levels: deque[tuple[float, np.ndarray]] = deque()
        self._noise = NoiseFloor()
        self._echo = EchoBand()
        self._triggered = False
        self._confirmed = False
        self._latched = False
        self._onset_s = 0.0
        self._start_s = 0.0
        self._silence_start_s: float | None = None
        self._energy = self._segment_energy()
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
            self._echo.add(frame, start_s)
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
            if self._energy.usable:
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
            while self._levels and self._levels[0][0] < keep_s - TIME_TOL_S:
                self._levels.popleft()
        return events

    def _begin(self, onset_s: float) -> None:
        """Opens a segment at the frame starting at ``onset_s``."""
        self._triggered, self._confirmed, self._onset_s = True, False, onset_s
        self._start_s = max(onset_s, self._previous_end_s)
        self._noise.fix(onset_s, self.options.energy_margin_db, self.options.energy)
        self._energy = self._segment_energy()
        lowest = max(onset_s - self.options.max_refine_ms / 1e3, self._previous_end_s)
        earlier = [(t, level) for t, level in self._levels if t > lowest - TIME_TOL_S]
        if earlier:
            excess = self._noise.excess(np.array([level for _, level in earlier]))
            for (time_s, level), over in zip(earlier, excess.tolist(), strict=True):
                self._energy.track(time_s, over, level)

    def _end_reason(self, end_s: float) -> str | None:
        """Why the open segment ends at the end of this frame (``"model"``, ``"quiet"``)."""
        options = self.options
        silent_s = -math.inf if self._silence_start_s is None else end_s - self._silence_start_s
        model_silent = silent_s >= options.min_silence_ms / 1e3 - _EPSILON_S
        if not self._energy.usable:
            return "model" if model_silent else None
        heard_s = self._levels[-1][0]
        last_loud_s, last_echo_s = self._energy.last_loud_s, self._energy.last_echo_s
        quiet_s = heard_s - (last_loud_s if last_loud_s is not None else heard_s)
        # An echo is not speech, but sound the echo test explains may still be a pause
        # between words: it ends a segment only after _ECHO_HOLD_S more quiet.
        echo_s = heard_s - (last_echo_s if last_echo_s is not None else -math.inf)
        enough_s = options.quiet_ms / 1e3 - _EPSILON_S
        if self._energy.depth >= _FAST_DB and (
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

    def _segment_energy(self) -> SegmentEnergy:
        """A fresh follower of the loud levels of the segment opening now."""
        return SegmentEnergy(self.options, self._noise, self._echo, self._audio, self._sub_s)

    def _add_levels(self, frame: np.ndarray, start_s: float) -> None:
        """Notes the levels that this frame completes (they lag the frame by 16 ms): in the
        open segment, or else in the noise history (unless loud while latched)."""
        centres, levels = self._meter.add(frame, start_s)
        if not centres:
            return
        excess = self._noise.excess(levels)
        for time_s, level, over in zip(centres, levels, excess.tolist(), strict=True):
            self._levels.append((time_s, level))
            if self._triggered:
                if time_s > self._start_s - TIME_TOL_S:
                    self._energy.track(time_s, over, level)
            elif not (self._latched and over > 0.0):
                self._noise.add(time_s, level)

    def _resumed(self) -> bool:
        """Whether the last model frame was loud (after a segment that quiet ended)."""
        recent = list(itertools.islice(reversed(self._levels), PER_FRAME))
        return len(self._noise.loud_runs(recent)) > 0

    def _refine_start(self) -> float:
        """The start of the run of loud levels at the model's onset."""
        onset, reach = self._onset_s, self.options.max_refine_ms / 1e3
        lowest = max(onset - reach, self._previous_end_s)
        loud = self._noise.loud_runs(
            [(t, level) for t, level in self._levels if t > lowest - TIME_TOL_S]
        )
        after = onset - self._frame_s - TIME_TOL_S
        first = next((i for i, t in enumerate(loud) if t > after), None)
        if first is None or loud[first] > onset + reach + TIME_TOL_S:
            return self._start_s
        while first > 0 and loud[first] - loud[first - 1] <= _MAX_GAP_S:
            first -= 1
        return max(loud[first] + EDGE_S, lowest)

    def _end_estimate(self, now_s: float) -> float:
        """Where the open segment's speech ends, if it ended now."""
        model_end = self._silence_start_s if self._silence_start_s is not None else now_s
        return self._energy.end(model_end, self._start_s, now_s)
