"""Audio sources: sound files here; raw PCM on stdin, microphones (sounddevice) and
``arecord`` in :mod:`.audio_live`.

``open_audio_source(spec)`` turns what a user types into an :class:`AudioSource`, a context
manager and an iterable of :class:`ubiq.types.AudioChunk`::

    with open_audio_source("speech.wav", realtime=True) as source:
        for chunk in source:
            ...

Every chunk is float32 mono, exactly ``chunk_samples`` long (a file's last chunk is
zero-padded), at ``sample_rate`` Hz, stamped with audio time (``sample offset / rate`` from
the source's first sample, never wall clock). Other rates are resampled: files whole, live
streams block by block with :class:`StreamResampler`. sounddevice and soundfile are
imported only when a source needs them.
"""

from __future__ import annotations

import importlib
import logging
import math
import threading
import time
import wave
from abc import abstractmethod
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ubiq.errors import BackendUnavailable, ConfigError, DatasetError, SourceError
from ubiq.models.runtime.audio_features import _resampling_kernels, read_wav, resample
from ubiq.types import AudioChunk

from .base import Lifecycle, check_positive

logger = logging.getLogger(__name__)

SOUNDFILE_EXTENSIONS = (".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au")
"""File extensions read through soundfile (``.wav`` goes through the stdlib first)."""
SPEC_FORMS = "a .wav/.flac/.ogg file, -, stdin[:RATE], mic[:INDEX|NAME] or arecord[:DEVICE]"


class StreamResampler:
    """Resamples a stream block by block to exactly the samples that
    :func:`~ubiq.models.runtime.audio_features.resample` gives for the whole stream.

    Output lags input by the sinc kernel's half width (a few ms) until :meth:`flush`.

    Args:
        from_rate: Input samples per second.
        to_rate: Output samples per second.
    """

    def __init__(self, from_rate: int, to_rate: int) -> None:
        divisor = math.gcd(from_rate, to_rate)
        self.from_rate, self.to_rate = from_rate, to_rate
        self._up, self._down = to_rate // divisor, from_rate // divisor
        self._margin = int(_resampling_kernels(self._up, self._down)[0].max()) + 2
        self._buffer = np.zeros(0, np.float32)
        self._base = 0  # input index of _buffer[0], a multiple of _down
        self._fed = self._emitted = 0

    def feed(self, block: np.ndarray) -> np.ndarray:
        """Takes ``(N,)`` float32 input; returns the ``(M,)`` float32 outputs now complete."""
        if self._up == self._down:
            return block
        self._buffer = np.concatenate([self._buffer, block.astype(np.float32, copy=False)])
        self._fed += len(block)
        last = self._fed - 1 - self._margin  # the last input index every kernel can reach
        return self._produce(last * self._up // self._down + 1 if last >= 0 else 0)

    def flush(self) -> np.ndarray:
        """Returns the outputs still held back; call once at the end of the stream."""
        if self._up == self._down:
            return np.zeros(0, np.float32)
        return self._produce(math.ceil(self._fed * self._up / self._down))

    def _produce(self, end: int) -> np.ndarray:
        if end <= self._emitted:
            return np.zeros(0, np.float32)
        start = self._emitted - self._base * self._up // self._down
        out = resample(self._buffer, self.from_rate, self.to_rate)[
            start : start + end - self._emitted
        ]
        self._emitted = end
        keep = (end * self._down // self._up - self._margin) // self._down * self._down
        if keep > self._base:
            self._buffer, self._base = self._buffer[keep - self._base :], keep
        return out


class AudioSource(Lifecycle):
    """A stream of audio: a context manager and an iterable of :class:`AudioChunk`.

    Entering opens the file or device (a :class:`SourceError` in one line on failure);
    leaving releases it. :meth:`stop` may be called from any thread or a signal handler
    and makes iteration end soon.

    Attributes:
        source_id: Name carried by every chunk.
        sample_rate: Samples per second of every chunk.
        chunk_samples: Samples per chunk.
        realtime: Whether chunk ``k`` of a file or stdin is held back until ``(k + 1)``
            chunk durations after the first was asked for (live sources ignore it).
        duration_s: A file's length in seconds once opened; ``None`` for streams.

    Raises:
        ConfigError: If ``sample_rate`` or ``chunk_samples`` is not an integer >= 1.
    """

    is_live: bool = False

    def __init__(
        self, source_id: str, *, sample_rate: int, chunk_samples: int, realtime: bool = False
    ) -> None:
        check_positive("sample_rate", sample_rate, integer=True)
        check_positive("chunk_samples", chunk_samples, integer=True)
        self.source_id = source_id
        self.sample_rate = sample_rate
        self.chunk_samples = chunk_samples
        self.realtime = realtime
        self.duration_s: float | None = None
        self._native_rate = sample_rate  # the rate of what _blocks yields
        self._opened = False
        self._stop_event = threading.Event()

    def _items(self) -> Iterator[AudioChunk]:
        return self._chunks()

    def _chunks(self) -> Iterator[AudioChunk]:
        size, rate = self.chunk_samples, self.sample_rate
        pending, offset, start = np.zeros(0, np.float32), 0, time.monotonic()
        for block in self._resampled_blocks():
            pending = np.concatenate([pending, block]) if len(pending) else block
            while len(pending) >= size:
                if not self._wait_until(start, offset + size):
                    return
                yield AudioChunk(
                    pending[:size].copy(), rate, offset * 10**9 // rate, self.source_id
                )
                pending, offset = pending[size:], offset + size
        if len(pending) and self._wait_until(start, offset + size):
            samples = np.pad(pending, (0, size - len(pending)))
            yield AudioChunk(samples, rate, offset * 10**9 // rate, self.source_id)

    def _resampled_blocks(self) -> Iterator[np.ndarray]:
        resampler = StreamResampler(self._native_rate, self.sample_rate)
        for block in self._blocks():
            yield resampler.feed(block)
        yield resampler.flush()

    def _wait_until(self, start: float, end_sample: int) -> bool:
        """Paces a realtime replay; returns False once the source is stopped."""
        if self.realtime and not self.is_live:
            delay = start + end_sample / self.sample_rate - time.monotonic()
            if delay > 0:
                self._stop_event.wait(delay)
        return not self._stop_event.is_set()

    @abstractmethod
    def _blocks(self) -> Iterator[np.ndarray]:
        """Yields ``(N,)`` float32 mono blocks at ``_native_rate`` until the end or a stop."""


def import_soundfile() -> ModuleType:
    """Imports soundfile, or raises :class:`BackendUnavailable` with the pip command."""
    try:
        return importlib.import_module("soundfile")
    except (ImportError, OSError) as error:
        raise BackendUnavailable(
            "soundfile", missing="the soundfile package", hint="pip install soundfile"
        ) from error


def _read_soundfile(path: Path) -> tuple[np.ndarray, int]:
    soundfile = import_soundfile()
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, OSError, ValueError, TypeError) as error:
        reason = str(error).replace(f"Error opening '{path}': ", "")
        raise SourceError(f"cannot read audio file {path}: {reason}") from error
    return data.mean(axis=1, dtype=np.float32), int(rate)


def _read_wav_file(path: Path) -> tuple[np.ndarray, int]:
    """Integer PCM through the stdlib (``read_wav``); float and extensible WAV through
    soundfile."""
    try:
        with wave.open(str(path), "rb") as handle:
            rate, frames = handle.getframerate(), handle.getnframes()
    except EOFError as error:
        raise SourceError(f"cannot read audio file {path}: truncated WAV header") from error
    except OSError as error:
        raise SourceError(f"cannot read audio file {path}: {error.strerror or error}") from error
    except wave.Error as error:
        if "unknown format" not in str(error):
            raise SourceError(f"cannot read audio file {path}: not a WAV file ({error})") from error
        return _read_soundfile(path)
    if rate <= 0:
        raise SourceError(f"cannot read audio file {path}: invalid sample rate {rate} in header")
    if frames == 0:
        raise SourceError(f"audio file {path} has no samples")
    try:
        return read_wav(path)
    except DatasetError as error:
        raise SourceError(str(error)) from error


class FileAudioSource(AudioSource):
    """A sound file, decoded, mixed to mono and resampled whole when opened.

    Args:
        path: A ``.wav`` file (8/16/24/32-bit PCM; float through soundfile) or another
            file soundfile reads (``.flac``, ``.ogg``, ...).
        source_id: Name carried by every chunk; defaults to ``str(path)``.
        **options: ``sample_rate``, ``chunk_samples`` and ``realtime`` of :class:`AudioSource`.
    """

    def __init__(self, path: str | Path, *, source_id: str | None = None, **options: Any) -> None:
        super().__init__(str(path) if source_id is None else source_id, **options)
        self.path = Path(path)
        self._samples: np.ndarray | None = None

    def _open(self) -> None:
        path = self.path
        if not path.is_file():
            raise SourceError(f"audio file not found: {path}")
        if path.stat().st_size == 0:
            raise SourceError(f"audio file {path} is empty (0 bytes)")
        reader = _read_wav_file if path.suffix.lower() == ".wav" else _read_soundfile
        samples, rate = reader(path)
        if len(samples) == 0 or rate <= 0:
            raise SourceError(f"audio file {path} has no samples")
        self.duration_s = len(samples) / rate
        self._samples = resample(samples, rate, self.sample_rate)

    def _close(self) -> None:
        self._samples = None

    def _blocks(self) -> Iterator[np.ndarray]:
        if self._samples is not None:
            yield self._samples


def open_audio_source(
    spec: str,
    *,
    sample_rate: int = 16000,
    chunk_samples: int = 512,
    realtime: bool = False,
    source_id: str | None = None,
) -> AudioSource:
    """Builds the audio source a spec names; it opens when entered (``with``) or iterated.

    Spec forms: ``-``, ``stdin`` or ``stdin:RATE`` (raw little-endian int16 mono PCM,
    16 kHz by default); ``mic``, ``mic:INDEX`` or ``mic:NAME`` (sounddevice);
    ``arecord`` or ``arecord:DEVICE`` (ALSA through alsa-utils); else a sound file.

    Args:
        spec: What to read, as typed by a user.
        sample_rate: Samples per second of every chunk.
        chunk_samples: Samples per chunk.
        realtime: Pace files and stdin to the wall clock (replaying them as if live).
        source_id: Name carried by every chunk; defaults to the spec.

    Returns:
        An unopened :class:`AudioSource`.

    Raises:
        ConfigError: If an option or the rate in ``stdin:RATE`` is invalid.
        SourceError: If ``spec`` is no file and no other form, or a file of another type.
    """
    from .audio_live import ArecordSource, MicrophoneSource, StdinAudioSource

    if not isinstance(spec, str) or not spec.strip():
        raise SourceError(f"audio source spec must be a non-empty string, got {spec!r}")
    spec = spec.strip()
    options: dict[str, Any] = {"sample_rate": sample_rate, "chunk_samples": chunk_samples}
    name = source_id or spec
    kind, _, argument = spec.partition(":")
    if spec == "-" or kind == "stdin":
        rate = argument or "16000"
        if not rate.isdigit() or int(rate) < 1:
            raise ConfigError(f"the rate in audio source {spec!r} must be a positive integer")
        return StdinAudioSource(input_rate=int(rate), source_id=name, realtime=realtime, **options)
    if kind == "mic":
        device: int | str | None = int(argument) if argument.isdigit() else argument or None
        return MicrophoneSource(device, source_id=name, **options)
    if kind == "arecord":
        return ArecordSource(argument or "default", source_id=name, **options)
    path = Path(spec).expanduser()
    if path.is_dir():
        raise SourceError(f"audio source {spec!r} is a folder; expected {SPEC_FORMS}")
    if not path.is_file():
        raise SourceError(f"audio source {spec!r} not found; expected {SPEC_FORMS}")
    if path.suffix.lower() not in (".wav", *SOUNDFILE_EXTENSIONS):
        raise SourceError(f"audio file {spec!r} has an unsupported type; expected {SPEC_FORMS}")
    return FileAudioSource(path, source_id=name, realtime=realtime, **options)
