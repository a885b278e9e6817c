"""The speech pipeline: audio chunks in, speech events out.

::

    AudioChunk -> VadSegmenter -> speech.start
                               -> utterance -> CommandRecognizer -> speech.wake / speech.command
                                            -> Transcriber       -> speech.transcript
                               -> speech.end

Every event is a :class:`ubiq.types.Event` whose payload holds exactly the fields of the
speech JSONL record (:data:`RECORD_KEYS`): ``t_start`` and ``t_end`` in seconds of source
audio, ``text``, ``intent`` (or ``None``), ``slots`` and ``confidence``. Its
``timestamp_ns`` is the audio time at which the event was ready: the end of the chunk
that closed the utterance plus the wall time spent recognising it, so
``timestamp_ns / 1e9 - t_end`` is the delay a live listener would see.

With a wake phrase, commands count only within ``wake_window_s`` after the wake phrase
ends (each accepted command restarts the window); other commands are dropped and logged.

People say the wake phrase and the command in one breath ("hey ubiq, turn on the light"),
often with too short a pause for the VAD to end the utterance between them. So when an
utterance is not, as a whole, a command that counts, it is also cut at its deepest
pauses (:func:`pause_cuts`, at most :data:`MAX_CUTS`): if a head is the wake phrase, the
pipeline emits ``speech.wake`` for the head and, if the rest is a command, a
``speech.command`` for the rest, each with its own ``t_start``/``t_end`` (the cut lies at
the centre of the pause). An utterance that is itself a command (said without the wake
phrase) splits only into the wake phrase and a command: otherwise its first words, taken
for the wake phrase, would open the window (4-8% of the commands of
``benchmarks/wake_command.py --kinds command`` did). ``benchmarks/wake_command.py``
measures it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ubiq.errors import ConfigError, UbiqError
from ubiq.pipelines.speech.recognize import SAMPLE_RATE, CommandRecognizer
from ubiq.pipelines.speech.vad import VadSegmenter
from ubiq.types import AudioChunk, Event, FrameResult

__all__ = ["MAX_CUTS", "RECORD_KEYS", "ListenStats", "SpeechPipeline", "event_record", "pause_cuts"]

logger = logging.getLogger(__name__)

MAX_CUTS = 6
"""Most cuts of one utterance tried for a wake phrase followed by a command."""
_CUT_FRAME_S = 0.010  # energy frames of pause_cuts (20 ms windows, 10 ms apart)
_CUT_CONTEXT_S = 0.2  # how far either side of a pause its depth is measured
_CUT_DEPTH_DB = 3.0  # least dip below the louder context that counts as a pause
_CUT_SPACING_S = 0.06  # closest two cuts


def pause_cuts(
    samples: np.ndarray,
    sample_rate: int = 16000,
    *,
    min_part_s: float = 0.25,
    max_cuts: int = MAX_CUTS,
) -> list[int]:
    """Sample indices of the deepest pauses in an utterance, deepest first.

    A pause is a local minimum of the 20 ms frame power that lies at least
    ``_CUT_DEPTH_DB`` below the loudest frame on each side within 200 ms, and leaves at
    least ``min_part_s`` of audio on both sides.

    Args:
        samples: ``(N,)`` mono samples.
        sample_rate: Samples per second.
        min_part_s: Shortest head or tail a cut may leave.
        max_cuts: Most cuts returned.

    Returns:
        Up to ``max_cuts`` indices into ``samples`` (each the centre of its pause frame),
        at least 60 ms apart; empty when the utterance is too short or has no pause.
    """
    samples = np.asarray(samples, np.float64).reshape(-1)
    hop = max(1, round(_CUT_FRAME_S * sample_rate))
    count = (len(samples) - 2 * hop) // hop + 1
    if count < 3:
        return []
    index = np.arange(count)[:, None] * hop + np.arange(2 * hop)
    power = np.mean(samples[index] ** 2, axis=1)
    level = 10.0 * np.log10(np.maximum(np.convolve(power, np.ones(3) / 3, "same"), 1e-12))
    context = max(1, round(_CUT_CONTEXT_S / _CUT_FRAME_S))
    lowest = max(1, int(np.ceil(min_part_s * sample_rate / hop)) - 1)
    highest = min(count - 2, (len(samples) - round(min_part_s * sample_rate)) // hop - 1)
    found: list[tuple[float, int]] = []
    for i in range(lowest, highest + 1):
        if level[i] > level[i - 1] or level[i] > level[i + 1]:
            continue
        left = level[max(0, i - context) : i].max()
        right = level[i + 1 : i + 1 + context].max()
        depth = min(left, right) - level[i]
        if depth >= _CUT_DEPTH_DB:
            found.append((depth, i * hop + hop))
    cuts: list[int] = []
    spacing = _CUT_SPACING_S * sample_rate
    for _, cut in sorted(found, reverse=True):
        if all(abs(cut - other) >= spacing for other in cuts):
            cuts.append(cut)
            if len(cuts) == max_cuts:
                break
    return cuts


RECORD_KEYS = ("kind", "t_start", "t_end", "text", "intent", "slots", "confidence")
"""The keys of one speech JSONL line, in order."""


def event_record(event: Event) -> dict[str, Any]:
    """The JSONL record of a speech event: exactly :data:`RECORD_KEYS`."""
    payload = event.payload
    return {
        "kind": event.kind,
        "t_start": float(payload["t_start"]),
        "t_end": float(payload["t_end"]),
        "text": str(payload.get("text", "")),
        "intent": payload.get("intent"),
        "slots": dict(payload.get("slots", {})),
        "confidence": float(payload.get("confidence", 0.0)),
    }


@dataclass
class ListenStats:
    """Counters of a run: audio seen, processing time, utterances and events."""

    audio_s: float = 0.0
    processing_s: float = 0.0
    utterances: int = 0
    commands: int = 0
    rejected: int = 0
    outside_wake: int = 0
    wake_splits: int = 0
    transcripts: int = 0

    @property
    def real_time_factor(self) -> float:
        """Processing seconds per second of audio."""
        return self.processing_s / self.audio_s if self.audio_s > 0 else 0.0


class SpeechPipeline:
    """Voice activity, commands, wake phrase and transcripts over a stream of chunks.

    Args:
        segmenter: The voice-activity segmenter.
        recognizer: The command recogniser, or ``None`` (no commands).
        transcriber: An object with ``transcribe(samples) -> Transcript``, or ``None``.
        wake_window_s: Seconds after the wake phrase during which commands count (used
            only when the recogniser's command set has a wake phrase).
        wake_gate: With ``False``, commands count without the wake phrase (which is still
            reported as ``speech.wake``): for benchmarks.
        split_wake: Look for the wake phrase and a command in one utterance (module
            docstring).
        source_id: The ``source_id`` of the events.
    """

    def __init__(
        self,
        segmenter: VadSegmenter,
        recognizer: CommandRecognizer | None = None,
        transcriber: Any = None,
        *,
        wake_window_s: float = 8.0,
        wake_gate: bool = True,
        split_wake: bool = True,
        source_id: str = "0",
    ) -> None:
        if wake_window_s <= 0:
            raise ConfigError(f"wake window must be > 0 seconds, got {wake_window_s}")
        context_ms = float(getattr(recognizer, "context_ms", 0.0))
        options = getattr(segmenter, "options", None)  # a VadSegmenter's (fakes have none)
        if options is not None and context_ms > options.speech_pad_ms:
            # A recogniser that reads phones at the edges of an utterance needs the audio
            # around it (the VAD keeps it anyway; no wait is added): give it that much.
            try:
                segmenter.options = replace(options, speech_pad_ms=context_ms)
            except ConfigError as error:
                logger.warning("keeping the VAD's padding: %s", error)
        self.segmenter = segmenter
        self.recognizer = recognizer
        self.transcriber = transcriber
        self.wake_window_s = float(wake_window_s)
        self.source_id = source_id
        self.wake_gate = bool(wake_gate)
        self.split_wake = bool(split_wake)
        self.stats = ListenStats()
        self.recognitions: list = []  # every Recognition of the run, for reports
        self._awake_until = -1.0

    @property
    def wake(self) -> str | None:
        """The wake phrase, or ``None`` when commands need none."""
        return self.recognizer.commands.wake if self.recognizer is not None else None

    def _event(self, kind: str, t_start: float, t_end: float, ready_s: float, **fields) -> Event:
        payload = {"t_start": round(t_start, 3), "t_end": round(t_end, 3), "text": "",
                   "intent": None, "slots": {}, "confidence": 1.0}  # fmt: skip
        payload.update(fields)
        return Event(kind, int(round(ready_s * 1e9)), self.source_id, payload)

    def feed(self, chunk: AudioChunk) -> list[Event]:
        """Processes one chunk; returns the events it completed, in order."""
        started = time.perf_counter()
        vad_events = self.segmenter.feed(chunk)
        self.stats.audio_s += chunk.duration_s
        events = self._handle(vad_events, started)
        self.stats.processing_s += time.perf_counter() - started
        return events

    def flush(self) -> list[Event]:
        """Ends the stream: closes an utterance still open."""
        started = time.perf_counter()
        events = self._handle(self.segmenter.flush(), started)
        self.stats.processing_s += time.perf_counter() - started
        return events

    def _handle(self, vad_events, started: float) -> list[Event]:
        events: list[Event] = []
        for vad in vad_events:
            if vad.kind == "speech.start":
                ready = vad.emitted_at + (time.perf_counter() - started)
                events.append(self._event("speech.start", vad.t_start, vad.t_start, ready))
                continue
            self.stats.utterances += 1
            samples = np.asarray(vad.samples if vad.samples is not None else [], np.float32)
            if self.recognizer is not None and len(samples):
                events.extend(self._command(vad, samples, started))
            if self.transcriber is not None and len(samples):
                transcript = self.transcriber.transcribe(samples)
                self.stats.transcripts += 1
                ready = vad.emitted_at + (time.perf_counter() - started)
                events.append(
                    self._event("speech.transcript", vad.t_start, vad.t_end, ready,
                                text=transcript.text, confidence=round(transcript.confidence, 4))
                )  # fmt: skip
            ready = vad.emitted_at + (time.perf_counter() - started)
            events.append(self._event("speech.end", vad.t_start, vad.t_end, ready))
        return events

    def _command(self, vad, samples: np.ndarray, started: float) -> list[Event]:
        padded = getattr(self.recognizer, "recognize_padded", None)
        if padded is not None and vad.samples_start is not None:
            # how much audio the VAD kept around the speech (less at a stream's start)
            lead = max(0.0, vad.t_start - vad.samples_start)
            trail = max(0.0, vad.samples_start + len(samples) / SAMPLE_RATE - vad.t_end)
            result = padded(samples, lead, trail)
        else:
            result = self.recognizer.recognize(samples)
        self.recognitions.append(result)
        counts = result.phrase is not None and (
            not self.wake or not self.wake_gate or vad.t_start <= self._awake_until
        )
        if self.wake and self.split_wake and not counts:
            # A whole that is a command said without the wake phrase splits only into the
            # wake phrase and a command: "turn on | the kitchen light" is no wake phrase.
            split = self._split(vad, samples, wake_alone=result.phrase is None)
            if split is not None:
                return self._split_events(vad, split, started)
        ready = vad.emitted_at + (time.perf_counter() - started)
        confidence = round(result.confidence, 4)
        if result.is_wake:
            self._awake_until = vad.t_end + self.wake_window_s
            return [self._event("speech.wake", vad.t_start, vad.t_end, ready,
                                text=result.text, confidence=confidence)]  # fmt: skip
        if result.phrase is None:
            self.stats.rejected += 1
            logger.debug("not a command (best guess %r, %.2f)", result.best, result.confidence)
            return []
        if not counts:
            self.stats.outside_wake += 1
            logger.info("heard %r without the wake phrase %r: ignored", result.text, self.wake)
            return []
        return [self._command_event(vad.t_start, vad.t_end, ready, result)]

    def _command_event(self, t_start: float, t_end: float, ready: float, result) -> Event:
        if self.wake:
            self._awake_until = t_end + self.wake_window_s
        self.stats.commands += 1
        return self._event(
            "speech.command", t_start, t_end, ready, text=result.text,
            intent=result.phrase.intent, slots=dict(result.phrase.slots),
            confidence=round(result.confidence, 4),
        )  # fmt: skip

    def _split(self, vad, samples: np.ndarray, wake_alone: bool = True):
        """The utterance cut at a pause into the wake phrase and what follows, as ``(cut
        time, wake, command or None)``; ``None`` when no head is the wake phrase.

        Cuts are tried deepest pause first; the first whose head is the wake phrase and
        whose rest is a command wins (so a clear pause costs two model runs). Failing that,
        and if ``wake_alone``, the most confident wake head stands alone."""
        offset = vad.samples_start if vad.samples_start is not None else vad.t_start
        wake_only = None
        for cut in pause_cuts(samples, SAMPLE_RATE):
            cut_s = offset + cut / SAMPLE_RATE
            if not vad.t_start < cut_s < vad.t_end:
                continue
            head = self.recognizer.recognize(samples[:cut])
            if not head.is_wake:
                continue
            tail = self.recognizer.recognize(samples[cut:])
            if tail.phrase is not None:
                return cut_s, head, tail
            if wake_alone and (wake_only is None or head.confidence > wake_only[1].confidence):
                wake_only = (cut_s, head, None)
        return wake_only

    def _split_events(self, vad, split, started: float) -> list[Event]:
        cut_s, head, command = split
        self.recognitions.append(head)
        ready = vad.emitted_at + (time.perf_counter() - started)
        self.stats.wake_splits += 1
        self._awake_until = cut_s + self.wake_window_s
        events = [self._event("speech.wake", vad.t_start, cut_s, ready, text=head.text,
                              confidence=round(head.confidence, 4))]  # fmt: skip
        if command is None:
            self.stats.rejected += 1
            return events
        self.recognitions.append(command)
        return [*events, self._command_event(cut_s, vad.t_end, ready, command)]


class SpeechStage:
    """A :class:`SpeechPipeline` as a runner stage: each ``AudioChunk`` result gains the
    speech events it completed; ``finish`` closes an utterance still open at the end.

    Args:
        pipeline: The speech pipeline (VAD, commands, wake phrase, transcripts).
    """

    name = "speech"

    def __init__(self, pipeline: SpeechPipeline) -> None:
        self.pipeline = pipeline

    def __call__(self, result: FrameResult) -> FrameResult:
        result.events.extend(self.pipeline.feed(result.frame))
        return result

    def finish(self) -> list[Event]:
        """Events of an utterance still open when the audio ends."""
        return self.pipeline.flush()


class SpeechJsonlSink:
    """Writes each speech event as one JSON line of exactly :data:`RECORD_KEYS`, flushed as
    it is written.

    Args:
        path: Output file (parent folders are created).

    Raises:
        ConfigError: If the file cannot be opened for writing.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("w", encoding="utf-8", buffering=1)
        except OSError as error:
            raise ConfigError(f"cannot write {self.path}: {error.strerror}") from error

    def write(self, result: FrameResult) -> None:
        for event in result.events:
            if not event.kind.startswith("speech."):
                continue
            try:
                self._file.write(json.dumps(event_record(event), separators=(",", ":")) + "\n")
            except OSError as error:
                raise UbiqError(f"cannot write {self.path}: {error.strerror}") from error

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
