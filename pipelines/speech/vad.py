"""Streaming voice activity detection with Silero VAD, run by onnxruntime alone (no torch).

:class:`SileroVad` gives the speech probability of each 512-sample (32 ms) frame of 16 kHz
audio, keeping the model's recurrent state and the 64 samples of context that Silero VAD
v5 and later prepend to every frame (exactly as ``silero_vad.utils_vad.OnnxWrapper``).
:class:`VadSegmenter` turns those probabilities into ``speech.start`` and ``speech.end``
events with the hysteresis of Silero's ``get_speech_timestamps``:

- a segment begins on the first frame whose probability is ``>= threshold``;
- it ends once the probability has stayed below ``neg_threshold`` for ``min_silence_ms``
  (counted from the start of the first such frame; a frame ``>= threshold`` cancels the
  count, a frame in between neither cancels nor ends it);
- a segment is *confirmed* once it has lasted ``min_speech_ms`` with no silence count
  running: ``speech.start`` is emitted then (at once when ``min_speech_ms`` is 0), and only
  a confirmed segment gets a ``speech.end``. A blip shorter than ``min_speech_ms`` gives
  no event at all, so every ``speech.start`` is followed by exactly one ``speech.end``;
- a segment that reaches ``max_speech_s`` is ended at the end of that frame and the next
  speech frame starts a new one.

Reported boundaries include the padding, as ``get_speech_timestamps`` reports them:
``t_start`` is the onset frame's start minus ``speech_pad_ms`` and ``t_end`` is the start
of the first silent frame plus ``speech_pad_ms`` (never before the previous segment's end
nor past the audio received). The ``speech.end`` event carries the audio between them.

The model file ships in the ``silero-vad`` wheel (MIT licence); ``pip install --no-deps
silero-vad`` installs it without torch. This module never imports that package: it only
locates its data folder.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ubiq.errors import BackendUnavailable, ModelError
from ubiq.types import AudioChunk

__all__ = [
    "CONTEXT_SAMPLES",
    "FRAME_SAMPLES",
    "SAMPLE_RATE",
    "SileroVad",
    "VadEvent",
    "VadOptions",
    "VadSegmenter",
    "find_silero_model",
]

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
FRAME_SAMPLES = 512
"""Samples per frame at 16 kHz (32 ms), the only frame size Silero VAD v5 accepts."""
CONTEXT_SAMPLES = 64
"""Samples of the previous frame prepended to each frame (Silero VAD v5 and later)."""
_STATE_SHAPE = (2, 1, 128)
_HINT = "pip install --no-deps silero-vad"
_EPSILON_S = 1e-9


def find_silero_model() -> Path:
    """Locates ``silero_vad.onnx`` in the installed ``silero-vad`` package (never imports it).

    Returns:
        The path of ``silero_vad/data/silero_vad.onnx``.

    Raises:
        BackendUnavailable: The package or its model file is missing.
    """
    try:
        spec = importlib.util.find_spec("silero_vad")
    except (ImportError, ValueError):
        spec = None
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / "data" / "silero_vad.onnx"
        if path.is_file():
            return path
    missing = "the silero-vad package" if spec is None else "silero_vad/data/silero_vad.onnx"
    raise BackendUnavailable("silero-vad", missing=missing, hint=_HINT)


class SileroVad:
    """Speech probability of each 32 ms frame of a 16 kHz stream, by Silero VAD v5 in ONNX.

    Args:
        model_path: The ``.onnx`` file (``None``: :func:`find_silero_model`).
        threads: onnxruntime intra-op threads.

    Raises:
        BackendUnavailable: onnxruntime or the silero-vad package is missing.
        ModelError: The file is missing, corrupt, or not a Silero VAD v5 model.
        ValueError: For ``threads`` < 1.
    """

    def __init__(self, model_path: str | Path | None = None, *, threads: int = 1) -> None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive int, got {threads!r}")
        try:
            import onnxruntime as ort
        except ImportError as error:
            raise BackendUnavailable(
                "onnxruntime", missing="the onnxruntime package", hint="pip install onnxruntime"
            ) from error
        path = find_silero_model() if model_path is None else Path(model_path).expanduser()
        if not path.is_file():
            raise ModelError(f"Silero VAD model not found: {path}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises several unrelated types
            raise ModelError(f"cannot load Silero VAD model {path}: {error}") from error
        inputs = {tensor.name for tensor in self._session.get_inputs()}
        if inputs != {"input", "state", "sr"}:
            raise ModelError(
                f"{path} is not a Silero VAD v5 model: inputs must be input, state, sr, "
                f"got {', '.join(sorted(inputs))}"
            )
        self.model_path = path
        self.threads = threads
        self._sample_rate = np.array(SAMPLE_RATE, np.int64)
        self.reset()

    def reset(self) -> None:
        """Forgets the stream: zero recurrent state and zero context."""
        self._state = np.zeros(_STATE_SHAPE, np.float32)
        self._context = np.zeros(CONTEXT_SAMPLES, np.float32)

    def probability(self, chunk: np.ndarray) -> float:
        """Speech probability of the next frame of the stream.

        Args:
            chunk: ``(512,)`` float32 samples in ``[-1, 1]`` at 16 kHz, following the
                previous call's frame.

        Returns:
            The probability, in ``[0, 1]``.

        Raises:
            ValueError: For a frame that is not 512 samples.
        """
        chunk = np.asarray(chunk, np.float32)
        if chunk.shape != (FRAME_SAMPLES,):
            raise ValueError(f"chunk must have shape ({FRAME_SAMPLES},), got {chunk.shape}")
        frame = np.concatenate([self._context, chunk])[None, :]
        output, state = self._session.run(
            None, {"input": frame, "state": self._state, "sr": self._sample_rate}
        )
        self._state = state
        self._context = frame[0, -CONTEXT_SAMPLES:]
        return float(output.reshape(-1)[0])


@dataclass(frozen=True)
class VadOptions:
    """How probabilities become speech segments (rules in the module docstring).

    The defaults are tuned for spoken commands, where ``speech.end`` should be out within
    300 ms of the end of speech. Silero's own defaults (``neg_threshold = threshold -
    0.15``, 250 ms minimum speech) with 160 ms of silence took up to 342 ms at 10 dB SNR
    (``benchmarks/vad_bounds.py``, 60 espeak-ng phrases); ``threshold - 0.05`` and 128 ms
    bring the 95th percentile under 300 ms (mean ~160 ms at 10 dB, ~130 ms clean), and
    150 ms of minimum speech keeps short words such as "stop" that 250 ms dropped.

    Attributes:
        threshold: Probability at or above which a frame is speech.
        neg_threshold: Probability below which a frame in a segment counts as silence
            (``None``: ``max(threshold - 0.05, 0.01)``; Silero's own default is
            ``threshold - 0.15``, which ends segments later in noise, see below).
        min_speech_ms: Speech needed before a segment is confirmed and ``speech.start`` is
            emitted; shorter segments give no event.
        min_silence_ms: Silence that ends a segment, counted from the start of the first
            silent frame to the end of the current one (so it acts in whole 32 ms frames:
            128 ms is 4 frames). It bounds how soon ``speech.end`` comes after the speech
            stops, so keep it small for commands, but long enough not to split a phrase
            at a pause between words.
        speech_pad_ms: Padding added before and after each segment.
        max_speech_s: Longest segment; longer speech is split.
    """

    threshold: float = 0.5
    neg_threshold: float | None = None
    min_speech_ms: float = 150.0
    min_silence_ms: float = 128.0
    speech_pad_ms: float = 30.0
    max_speech_s: float = 15.0

    def __post_init__(self) -> None:
        for name in ("threshold", "min_speech_ms", "min_silence_ms", "speech_pad_ms"):
            _check_number(name, getattr(self, name))
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.neg_threshold is not None:
            _check_number("neg_threshold", self.neg_threshold)
            if not 0.0 < self.neg_threshold <= self.threshold:
                raise ValueError(
                    f"neg_threshold must be in (0, threshold={self.threshold}], "
                    f"got {self.neg_threshold}"
                )
        for name in ("min_speech_ms", "min_silence_ms", "speech_pad_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
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
        t_start: Start of the segment in seconds of source audio, padding included.
        t_end: End of the segment, padding included (``== t_start`` for a start event).
        emitted_at: Audio time (seconds) of the end of the frame whose processing gave
            the event: ``emitted_at - true_end`` is the end-of-speech latency.
        samples: For ``speech.end``, the ``(N,)`` float32 audio from ``t_start`` to
            ``t_end``; ``None`` for ``speech.start``.
    """

    kind: str
    t_start: float
    t_end: float
    emitted_at: float
    samples: np.ndarray | None = None

    @property
    def duration_s(self) -> float:
        """``t_end - t_start``."""
        return self.t_end - self.t_start


class VadSegmenter:
    """Streams audio chunks through Silero VAD and emits speech segments.

    Chunks may have any length: they are cut into 512-sample frames and a remainder is
    kept for the next chunk (chunks are assumed contiguous). Audio is kept only as long
    as a segment or its padding can need it.

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
        self.reset()

    @property
    def in_speech(self) -> bool:
        """Whether a confirmed segment is open (a ``speech.start`` awaits its end)."""
        return self._confirmed

    def reset(self) -> None:
        """Forgets the stream: model state, buffered audio and any open segment."""
        self.vad.reset()
        self._pending = np.zeros(0, np.float32)
        self._pending_start_s = 0.0
        self._frames: deque[tuple[float, np.ndarray]] = deque()
        self._triggered = False
        self._confirmed = False
        self._onset_s = 0.0
        self._start_s = 0.0
        self._silence_start_s: float | None = None
        self._previous_end_s = -math.inf
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
            end_s = audio_end_s
            if self._silence_start_s is not None:
                end_s = min(self._silence_start_s + self.options.speech_pad_ms / 1e3, end_s)
            events.extend(self._finish(end_s, audio_end_s))
        self.reset()
        return events

    def _step(
        self, frame: np.ndarray, start_s: float, audio_end_s: float | None = None
    ) -> list[VadEvent]:
        """Runs one frame through the model and the state machine."""
        options = self.options
        end_s = start_s + self._frame_s if audio_end_s is None else audio_end_s
        pad_s = options.speech_pad_ms / 1e3
        probability = self.vad.probability(frame)
        self.last_probability = probability
        self._frames.append((start_s, frame))
        events: list[VadEvent] = []
        if probability >= options.threshold:
            self._silence_start_s = None
            if not self._triggered:
                self._triggered, self._confirmed, self._onset_s = True, False, start_s
                earliest = self._frames[0][0]
                self._start_s = max(start_s - pad_s, earliest, self._previous_end_s)
        elif self._triggered and probability < options.exit_threshold:
            if self._silence_start_s is None:
                self._silence_start_s = start_s
            if end_s - self._silence_start_s >= options.min_silence_ms / 1e3 - _EPSILON_S:
                events.extend(self._finish(min(self._silence_start_s + pad_s, end_s), end_s))
        if (
            self._triggered
            and not self._confirmed
            and self._silence_start_s is None
            and end_s - self._onset_s >= options.min_speech_ms / 1e3 - _EPSILON_S
        ):
            self._confirmed = True
            events.append(VadEvent("speech.start", self._start_s, self._start_s, end_s))
        if self._triggered and end_s - self._start_s >= options.max_speech_s - _EPSILON_S:
            cut_s = end_s
            if self._silence_start_s is not None:
                cut_s = min(self._silence_start_s + pad_s, end_s)
            events.extend(self._finish(cut_s, end_s))
        if not self._triggered:
            # Keep only what the padding of a segment starting at the next frame needs.
            while self._frames and self._frames[0][0] + self._frame_s <= end_s - pad_s:
                self._frames.popleft()
        return events

    def _finish(self, end_s: float, emitted_at: float) -> list[VadEvent]:
        """Closes the open segment; a confirmed one gives a ``speech.end`` with its audio."""
        events = []
        if self._confirmed:
            audio = self._audio(self._start_s, end_s)
            events.append(VadEvent("speech.end", self._start_s, end_s, emitted_at, audio))
            self._previous_end_s = end_s
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
