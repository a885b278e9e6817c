"""Audio sources: sound files, raw PCM on stdin, microphones (sounddevice) and ``arecord``.

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

import contextlib
import importlib
import logging
import math
import queue
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import wave
from abc import abstractmethod
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO

import numpy as np

from ubiq.errors import BackendUnavailable, ConfigError, DatasetError, SourceError
from ubiq.models.runtime.audio_features import _resampling_kernels, read_wav, resample
from ubiq.types import AudioChunk

from .base import Lifecycle, check_positive

logger = logging.getLogger(__name__)

SOUNDFILE_EXTENSIONS = (".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au")
"""File extensions read through soundfile (``.wav`` goes through the stdlib first)."""
SPEC_FORMS = "a .wav/.flac/.ogg file, -, stdin[:RATE], mic[:INDEX|NAME] or arecord[:DEVICE]"
_POLL_INTERVAL_S = 0.05
_ARECORD_START_S = 0.5


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


class _End:
    """Queue marker: the reader finished (``error`` set when it failed)."""

    def __init__(self, error: SourceError | None = None) -> None:
        self.error = error


class _PipeSource(AudioSource):
    """Raw little-endian int16 mono PCM read from a pipe on a daemon reader thread."""

    def __init__(self, source_id: str, *, input_rate: int, **options: Any) -> None:
        super().__init__(source_id, **options)
        check_positive("input rate", input_rate, integer=True)
        self._native_rate = input_rate
        self._queue: queue.Queue[np.ndarray | _End] = queue.Queue(maxsize=16)

    def _start_reader(self, stream: BinaryIO) -> None:
        self._queue = queue.Queue(maxsize=16)
        block_bytes = 2 * max(256, self.chunk_samples * self._native_rate // self.sample_rate)
        name = f"ubiq-audio-{self.source_id}"
        threading.Thread(
            target=self._read, args=(stream, block_bytes), name=name, daemon=True
        ).start()

    def _read(self, stream: BinaryIO, block_bytes: int) -> None:
        leftover = b""
        try:
            while not self._stop_event.is_set():
                data = stream.read(block_bytes)
                if not data:
                    break
                data, leftover = leftover + data, b""
                if len(data) % 2:
                    data, leftover = data[:-1], data[-1:]
                if not self._put(np.frombuffer(data, "<i2").astype(np.float32) / 32768.0):
                    return
            end = self._end_of_stream()
        except (OSError, ValueError) as error:  # a read on a pipe closed by close()
            end = _End(SourceError(f"reading audio from {self.source_id} failed: {error}"))
        self._put(end)

    def _end_of_stream(self) -> _End:
        return _End()

    def _put(self, item: np.ndarray | _End) -> bool:
        while not self._stop_event.is_set():
            with contextlib.suppress(queue.Full):
                self._queue.put(item, timeout=_POLL_INTERVAL_S)
                return True
        return False

    def _blocks(self) -> Iterator[np.ndarray]:
        while not self._stop_event.is_set():
            try:
                item = self._queue.get(timeout=_POLL_INTERVAL_S)
            except queue.Empty:
                continue
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            yield item


class StdinAudioSource(_PipeSource):
    """Raw little-endian int16 mono PCM on stdin (``arecord -t raw | ubiq ... -``).

    A read blocked on stdin cannot be interrupted: after :meth:`stop` the reader thread
    ends at its next block or at process exit.

    Args:
        input_rate: Samples per second of the PCM on stdin.
        source_id: Name carried by every chunk.
        **options: ``sample_rate``, ``chunk_samples`` and ``realtime`` of :class:`AudioSource`.
    """

    def __init__(self, *, input_rate: int = 16000, source_id: str = "stdin", **options: Any):
        super().__init__(source_id, input_rate=input_rate, **options)

    def _open(self) -> None:
        stream = getattr(sys.stdin, "buffer", None)
        if stream is None:
            raise SourceError("stdin is not available to read audio from")
        self._start_reader(stream)

    def _close(self) -> None:
        pass


class ArecordSource(_PipeSource):
    """An ALSA capture device through ``arecord`` (alsa-utils), recording at ``sample_rate``.

    Args:
        device: The ALSA device, such as ``"default"`` or ``"plughw:1,0"``.
        source_id: Name carried by every chunk.
        **options: ``sample_rate`` and ``chunk_samples`` of :class:`AudioSource`.
    """

    is_live = True

    def __init__(self, device: str = "default", *, source_id: str | None = None, **options: Any):
        options["input_rate"] = options.get("sample_rate", 16000)
        super().__init__(source_id or f"arecord:{device}", **options)
        self.device = device
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: Any = None

    def command(self) -> list[str]:
        """The ``arecord`` command line the source runs."""
        options = ["-f", "S16_LE", "-c", "1", "-r", str(self.sample_rate), "-t", "raw"]
        return ["arecord", "-q", "-D", self.device, *options]

    def _open(self) -> None:
        binary = shutil.which("arecord")
        if binary is None:
            raise BackendUnavailable(
                "arecord", missing="the arecord program", hint="sudo apt-get install alsa-utils"
            )
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in _close
        command = [binary, *self.command()[1:]]
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._stderr)
        stdout = self._process.stdout
        assert stdout is not None  # stdout=PIPE
        # A bad device makes arecord exit at once: wait for its first bytes or its end.
        if select.select([stdout], [], [], _ARECORD_START_S)[0] and not stdout.peek(1):
            end = self._end_of_stream()
            if end.error is not None:
                self._close()
                raise end.error
        self._start_reader(stdout)  # type: ignore[arg-type]

    def _end_of_stream(self) -> _End:
        process, stderr = self._process, self._stderr
        if process is None or stderr is None or self._stop_event.is_set():
            return _End()
        try:
            code = process.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            return _End()
        if code == 0:
            return _End()
        stderr.seek(0)
        lines = stderr.read().decode("utf-8", "replace").strip().splitlines()
        detail = lines[-1] if lines else f"exit status {code}"
        return _End(SourceError(f"arecord on ALSA device {self.device!r} failed: {detail}"))

    def _close(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=2.0)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            if process.stdout is not None:
                process.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


def import_sounddevice() -> ModuleType:
    """Imports sounddevice, or raises :class:`BackendUnavailable` saying what to install."""
    try:
        return importlib.import_module("sounddevice")
    except OSError as error:  # sounddevice raises OSError('PortAudio library not found')
        raise BackendUnavailable(
            "sounddevice",
            missing="the PortAudio library (libportaudio2)",
            hint="sudo apt-get install libportaudio2",
        ) from error
    except ImportError as error:
        raise BackendUnavailable(
            "sounddevice", missing="the sounddevice package", hint="pip install 'ubiq[speech]'"
        ) from error


def _portaudio_error(sounddevice: ModuleType) -> type[Exception]:
    """``sounddevice.PortAudioError`` (a plain ``Exception`` subclass)."""
    return getattr(sounddevice, "PortAudioError", OSError)


def list_microphones() -> list[dict[str, Any]]:
    """Lists the audio input devices PortAudio sees.

    Returns:
        One dict per input device: ``index``, ``name``, ``channels`` (input channels) and
        ``default_samplerate``; ``[]`` without sounddevice, PortAudio or input devices.
    """
    try:
        sounddevice = import_sounddevice()
        devices = list(sounddevice.query_devices())
    except BackendUnavailable as error:
        logger.debug("no microphones listed: %s", error)
        return []
    except (_portaudio_error(sounddevice), OSError, ValueError) as error:
        logger.debug("no microphones listed: %s", error)
        return []
    return [
        {
            "index": index,
            "name": str(device["name"]),
            "channels": int(device["max_input_channels"]),
            "default_samplerate": float(device["default_samplerate"]),
        }
        for index, device in enumerate(devices)
        if device["max_input_channels"] > 0
    ]


class MicrophoneSource(AudioSource):
    """A microphone through sounddevice (PortAudio), captured in its stream callback.

    A device whose default rate is not ``sample_rate`` is captured at its default rate and
    resampled. Blocks the consumer does not take in time (a queue of about 2 s) are
    replaced by silence, so timestamps stay on the audio clock; ``dropped_samples``
    counts them and ``overflows`` counts PortAudio's input overflow flags.

    Args:
        device: A PortAudio device index, a (part of a) device name, or ``None`` for the
            default input device.
        source_id: Name carried by every chunk.
        **options: ``sample_rate`` and ``chunk_samples`` of :class:`AudioSource`.
    """

    is_live = True

    def __init__(
        self, device: int | str | None = None, *, source_id: str | None = None, **options: Any
    ) -> None:
        super().__init__(source_id or ("mic" if device is None else f"mic:{device}"), **options)
        self.device = device
        self.dropped_samples = self.overflows = 0
        self._stream: Any = None
        self._queue: queue.Queue[tuple[int, np.ndarray]] = queue.Queue()
        self._captured = 0

    def _select_device(self, sounddevice: ModuleType) -> tuple[int, dict[str, Any]]:
        inputs = [
            (index, device)
            for index, device in enumerate(sounddevice.query_devices())
            if device["max_input_channels"] > 0
        ]
        found = "; ".join(f"{index}: {device['name']}" for index, device in inputs) or "none"
        wanted = self.device
        if isinstance(wanted, int):
            matches = [(index, device) for index, device in inputs if index == wanted]
        elif isinstance(wanted, str):
            name = wanted.strip().lower()
            matches = [item for item in inputs if item[1]["name"].lower() == name] or [
                item for item in inputs if name in item[1]["name"].lower()
            ]
            if len(matches) > 1:
                raise SourceError(
                    f"microphone name {wanted!r} is ambiguous; input devices: {found}"
                )
        else:
            default = sounddevice.default.device[0]  # an index, -1 for none, or a name
            matches = [item for item in inputs if default in (item[0], item[1]["name"])]
            matches = matches or inputs[:1]
        if not matches:
            what = "no microphone found" if wanted is None else f"no microphone {wanted!r}"
            raise SourceError(f"{what}; input devices: {found}")
        return matches[0]

    def _open(self) -> None:
        sounddevice = import_sounddevice()
        errors = (_portaudio_error(sounddevice), OSError, ValueError)
        try:
            index, info = self._select_device(sounddevice)
        except errors as error:
            raise SourceError(f"cannot list microphones: {error}") from error
        device_rate = int(round(float(info["default_samplerate"])))
        self._native_rate = device_rate if device_rate > 0 else self.sample_rate
        blocksize = max(64, self.chunk_samples * self._native_rate // self.sample_rate)
        self._queue = queue.Queue(maxsize=max(8, 2 * self._native_rate // blocksize))
        self._captured = 0
        try:
            self._stream = sounddevice.InputStream(
                samplerate=self._native_rate,
                channels=1,
                dtype="float32",
                blocksize=blocksize,
                device=index,
                callback=self._callback,
            )
            self._stream.start()
        except errors as error:
            self._close()
            raise SourceError(
                f"cannot open microphone {index} ({info['name']}) at {self._native_rate} Hz: "
                f"{error}"
            ) from error
        logger.info("microphone %d (%s) at %d Hz", index, info["name"], self._native_rate)

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        """PortAudio's callback: queues a copy of the block and never blocks."""
        if status:
            self.overflows += 1
        with contextlib.suppress(queue.Full):  # the consumer fills the gap with silence
            self._queue.put_nowait((self._captured, indata[:, 0].astype(np.float32)))
        self._captured += frames

    def _blocks(self) -> Iterator[np.ndarray]:
        expected = 0
        while not self._stop_event.is_set():
            try:
                offset, block = self._queue.get(timeout=_POLL_INTERVAL_S)
            except queue.Empty:
                continue
            if offset > expected:
                self.dropped_samples += offset - expected
                logger.warning("%s: %d samples lost, filled with silence", self, offset - expected)
                yield np.zeros(offset - expected, np.float32)
            expected = offset + len(block)
            yield block

    def _close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.stop()
            finally:
                stream.close()


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
