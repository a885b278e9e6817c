"""Live audio sources: raw PCM on stdin, ``arecord`` (ALSA) and microphones (sounddevice).

Built by :func:`ubiq.hardware.sources.audio.open_audio_source`; each streams blocks at the
device's rate through a :class:`~ubiq.hardware.sources.audio.StreamResampler`.
sounddevice is imported only when a microphone is opened.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import queue
import select
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Any, BinaryIO

import numpy as np

from ubiq.errors import BackendUnavailable, SourceError

from .audio import AudioSource
from .base import check_positive

logger = logging.getLogger(__name__)

_POLL_INTERVAL_S = 0.05
_ARECORD_START_S = 0.5


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
    """Lists the audio input devices PortAudio sees: what ``mic:N`` (an index) opens.

    Also importable from :mod:`ubiq.hardware.devices`, beside
    :func:`~ubiq.hardware.devices.list_sound_cards` (the ALSA cards, capture or not).

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
