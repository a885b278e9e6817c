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
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ubiq.errors import ConfigError
from ubiq.pipelines.speech.recognize import CommandRecognizer
from ubiq.pipelines.speech.vad import VadSegmenter
from ubiq.types import AudioChunk, Event

__all__ = ["RECORD_KEYS", "ListenStats", "SpeechPipeline", "event_record"]

logger = logging.getLogger(__name__)

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
        source_id: str = "0",
    ) -> None:
        if wake_window_s <= 0:
            raise ConfigError(f"wake window must be > 0 seconds, got {wake_window_s}")
        self.segmenter = segmenter
        self.recognizer = recognizer
        self.transcriber = transcriber
        self.wake_window_s = float(wake_window_s)
        self.source_id = source_id
        self.wake_gate = bool(wake_gate)
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
                event = self._command(vad, samples, started)
                if event is not None:
                    events.append(event)
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

    def _command(self, vad, samples: np.ndarray, started: float) -> Event | None:
        result = self.recognizer.recognize(samples)
        self.recognitions.append(result)
        ready = vad.emitted_at + (time.perf_counter() - started)
        confidence = round(result.confidence, 4)
        if result.is_wake:
            self._awake_until = vad.t_end + self.wake_window_s
            return self._event("speech.wake", vad.t_start, vad.t_end, ready,
                               text=result.text, confidence=confidence)  # fmt: skip
        if result.phrase is None:
            self.stats.rejected += 1
            logger.debug("not a command (best guess %r, %.2f)", result.best, result.confidence)
            return None
        if self.wake and self.wake_gate and vad.t_start > self._awake_until:
            self.stats.outside_wake += 1
            logger.info("heard %r without the wake phrase %r: ignored", result.text, self.wake)
            return None
        if self.wake:
            self._awake_until = vad.t_end + self.wake_window_s
        self.stats.commands += 1
        return self._event(
            "speech.command", vad.t_start, vad.t_end, ready, text=result.text,
            intent=result.phrase.intent, slots=dict(result.phrase.slots), confidence=confidence,
        )  # fmt: skip
