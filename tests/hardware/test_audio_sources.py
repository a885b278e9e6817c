"""Tests of ubiq.hardware.sources.audio: files, stdin, a fake sounddevice and a fake arecord."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import io
import subprocess
import sys
import threading
import time
import types
import wave
from pathlib import Path

import numpy as np
import pytest

from ubiq.errors import BackendUnavailable, ConfigError, SourceError
from ubiq.hardware.sources.audio import FileAudioSource, StreamResampler, open_audio_source
from ubiq.hardware.sources.audio_live import (
    ArecordSource,
    MicrophoneSource,
    StdinAudioSource,
    list_microphones,
)
from ubiq.models.runtime.audio_features import resample
from ubiq.types import AudioChunk

REPO = Path(__file__).resolve().parents[2]
CHUNK = 512


def tone(frequency_hz: float, rate: int, count: int, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * frequency_hz * np.arange(count) / rate)).astype(
        np.float32
    )


def to_int16(samples: np.ndarray) -> np.ndarray:
    return np.round(np.clip(samples, -1, 1) * 32767).astype("<i2")


def write_pcm_wav(path: Path, channels: np.ndarray, rate: int, width: int = 2) -> Path:
    """Writes ``(frames, channels)`` float samples as integer PCM of ``width`` bytes."""
    frames = np.atleast_2d(channels.T).T if channels.ndim == 1 else channels
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(frames.shape[1])
        handle.setsampwidth(width)
        handle.setframerate(rate)
        handle.writeframes(to_int16(frames).tobytes())
    return path


def peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


def check_chunks(chunks: list[AudioChunk], rate: int = 16000, size: int = CHUNK) -> np.ndarray:
    """Asserts exact sizes, dtype, rate and audio-time stamps; returns the joined samples."""
    assert chunks
    for index, chunk in enumerate(chunks):
        assert chunk.samples.dtype == np.float32
        assert chunk.samples.shape == (size,)
        assert chunk.sample_rate == rate
        assert chunk.timestamp_ns == index * size * 10**9 // rate
    return np.concatenate([chunk.samples for chunk in chunks])


# --- files ---------------------------------------------------------------------------------


def test_wav_int16_mono_chunks_are_exact_and_last_is_padded(tmp_path: Path) -> None:
    samples = tone(440, 16000, 8100)
    path = write_pcm_wav(tmp_path / "mono.wav", samples, 16000)
    with open_audio_source(str(path)) as source:
        assert source.duration_s == pytest.approx(8100 / 16000)
        chunks = list(source)
    joined = check_chunks(chunks)
    assert len(chunks) == 16  # 15 full chunks and 420 samples padded to 512
    np.testing.assert_allclose(joined[:8100], to_int16(samples) / 32768.0, atol=1e-6)
    assert not joined[8100:].any()
    assert chunks[0].source_id == str(path)


def test_stereo_44k_wav_is_mixed_and_resampled_keeping_pitch(tmp_path: Path) -> None:
    left = tone(440, 44100, 44100, amplitude=0.6)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)
    path = write_pcm_wav(tmp_path / "stereo.wav", stereo, 44100)
    source = open_audio_source(str(path), chunk_samples=400, source_id="mic-test")
    chunks = list(source)  # iterating opens and closes it
    joined = check_chunks(chunks, size=400)
    assert len(chunks) == 40 and len(joined) == 16000  # exactly 1 s at 16 kHz
    assert peak_hz(joined, 16000) == pytest.approx(440, abs=2)
    assert np.abs(joined[1000:15000]).max() == pytest.approx(0.3, abs=0.01)  # the mean of L and R
    assert {chunk.source_id for chunk in chunks} == {"mic-test"}


@pytest.mark.parametrize("subtype", ["PCM_24", "PCM_32", "PCM_U8", "FLOAT"])
def test_other_wav_sample_formats(tmp_path: Path, subtype: str) -> None:
    soundfile = pytest.importorskip("soundfile")
    samples = tone(1000, 16000, 4096)
    soundfile.write(tmp_path / "x.wav", samples, 16000, subtype=subtype)
    joined = check_chunks(list(open_audio_source(str(tmp_path / "x.wav"))))
    atol = 1e-2 if subtype == "PCM_U8" else 1e-5
    np.testing.assert_allclose(joined, samples, atol=atol)


@pytest.mark.parametrize(("suffix", "lossy"), [(".flac", False), (".ogg", True)])
def test_soundfile_formats_round_trip(tmp_path: Path, suffix: str, lossy: bool) -> None:
    soundfile = pytest.importorskip("soundfile")
    samples = tone(440, 22050, 22050)
    path = tmp_path / f"speech{suffix}"
    soundfile.write(path, samples, 22050)
    with open_audio_source(str(path)) as source:
        assert source.duration_s == pytest.approx(1.0)
        joined = check_chunks(list(source))
    assert len(joined) == 16384  # 16000 samples in 32 chunks
    assert peak_hz(joined[:16000], 16000) == pytest.approx(440, abs=2)
    if not lossy:
        expected = resample(soundfile.read(path, dtype="float32")[0], 22050, 16000)
        np.testing.assert_allclose(joined[:16000], expected, atol=1e-6)


def test_flac_without_soundfile_is_backend_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a.flac"
    path.write_bytes(b"fLaC not really")
    monkeypatch.setitem(sys.modules, "soundfile", None)
    with pytest.raises(BackendUnavailable, match="pip install soundfile"):
        open_audio_source(str(path)).open()


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("this is a shopping list, not audio\n")
    no_samples = write_pcm_wav(tmp_path / "silent.wav", np.zeros(0, np.float32), 16000)
    zero_rate = tmp_path / "zero_rate.wav"
    header = bytearray(write_pcm_wav(zero_rate, tone(440, 16000, 100), 16000).read_bytes())
    header[24:28] = (0).to_bytes(4, "little")  # the fmt chunk's sample rate
    zero_rate.write_bytes(bytes(header))
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(header[:30])
    bad_flac = tmp_path / "broken.flac"
    bad_flac.write_text("not flac either")
    return {
        "empty": (empty, "empty"),
        "text": (text, "not a WAV file"),
        "no samples": (no_samples, "no samples"),
        "zero rate": (zero_rate, "invalid sample rate 0"),
        "truncated": (truncated, "truncated WAV header"),
        "bad flac": (bad_flac, "cannot read audio file"),
    }


@pytest.mark.parametrize(
    "case", ["empty", "text", "no samples", "zero rate", "truncated", "bad flac"]
)
def test_bad_audio_files_give_one_line_naming_the_file(tmp_path: Path, case: str) -> None:
    if case == "bad flac":
        pytest.importorskip("soundfile")
    path, problem = _bad_files(tmp_path)[case]
    source = open_audio_source(str(path))
    with pytest.raises(SourceError) as caught:
        source.open()
    message = str(caught.value)
    assert problem in message and str(path) in message and "\n" not in message
    assert caught.value.exit_code == 3


def test_missing_file_folder_and_unknown_specs(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"'nope\.wav' not found.*mic\[:INDEX\|NAME\]"):
        open_audio_source("nope.wav")
    with pytest.raises(SourceError, match="not found"):
        open_audio_source("rtsp://camera/stream")
    with pytest.raises(SourceError, match="is a folder"):
        open_audio_source(str(tmp_path))
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(SourceError, match="unsupported type"):
        open_audio_source(str(tmp_path / "notes.txt"))
    with pytest.raises(SourceError, match="audio file not found"):
        FileAudioSource(tmp_path / "gone.wav", sample_rate=16000, chunk_samples=CHUNK).open()
    with pytest.raises(SourceError, match="non-empty"):
        open_audio_source("  ")
    with pytest.raises(ConfigError, match="chunk_samples"):
        open_audio_source("-", chunk_samples=0)
    with pytest.raises(ConfigError, match="positive integer"):
        open_audio_source("stdin:fast")


def test_realtime_replay_is_paced_and_stop_ends_it(tmp_path: Path) -> None:
    path = write_pcm_wav(tmp_path / "half.wav", tone(440, 16000, 8000), 16000)
    started = time.monotonic()
    chunks = list(open_audio_source(str(path), realtime=True))
    assert time.monotonic() - started >= 0.45
    assert len(chunks) == 16

    long_path = write_pcm_wav(tmp_path / "long.wav", tone(440, 16000, 160000), 16000)
    source = open_audio_source(str(long_path), realtime=True)
    timer = threading.Timer(0.2, source.stop)
    started = time.monotonic()
    timer.start()
    stopped_chunks = list(source)
    assert time.monotonic() - started < 2.0  # the file lasts 10 s
    assert 3 <= len(stopped_chunks) < 30


def test_stream_resampler_matches_whole_signal_resampling() -> None:
    generator = np.random.default_rng(0)
    signal = generator.standard_normal(20000).astype(np.float32) * 0.3
    for from_rate, to_rate in [(44100, 16000), (48000, 16000), (8000, 16000), (16000, 16000)]:
        resampler = StreamResampler(from_rate, to_rate)
        pieces, start = [], 0
        while start < len(signal):
            size = int(generator.integers(1, 2500))
            pieces.append(resampler.feed(signal[start : start + size]))
            start += size
        pieces.append(resampler.flush())
        streamed = np.concatenate(pieces)
        np.testing.assert_allclose(streamed, resample(signal, from_rate, to_rate), atol=1e-6)


# --- stdin ---------------------------------------------------------------------------------


class TrickleStdin:
    """``sys.stdin`` stand-in whose ``buffer`` returns odd-sized reads, like a pipe."""

    def __init__(self, data: bytes) -> None:
        self.buffer = self
        self._data = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._data.read(min(size, 777))


def test_stdin_raw_pcm(monkeypatch: pytest.MonkeyPatch) -> None:
    samples = tone(440, 16000, 5000)
    monkeypatch.setattr(sys, "stdin", TrickleStdin(to_int16(samples).tobytes()))
    source = open_audio_source("-")
    assert isinstance(source, StdinAudioSource) and source.duration_s is None
    joined = check_chunks(list(source))
    assert len(joined) == 5120
    np.testing.assert_allclose(joined[:5000], to_int16(samples) / 32768.0, atol=1e-6)


def test_stdin_at_8k_is_resampled(monkeypatch: pytest.MonkeyPatch) -> None:
    samples = tone(440, 8000, 8000)
    monkeypatch.setattr(sys, "stdin", TrickleStdin(to_int16(samples).tobytes()))
    joined = check_chunks(list(open_audio_source("stdin:8000")))
    assert len(joined) == 16384
    assert peak_hz(joined[:16000], 16000) == pytest.approx(440, abs=2)


def test_stdin_from_a_real_pipe() -> None:
    script = (
        "from ubiq.hardware.sources.audio import open_audio_source\n"
        "chunks = list(open_audio_source('stdin', chunk_samples=1000))\n"
        "print(len(chunks), chunks[-1].timestamp_ns, round(float(chunks[0].samples[1]), 4))\n"
    )
    pcm = to_int16(np.full(2500, 0.25, np.float32)).tobytes()
    result = subprocess.run(
        [sys.executable, "-c", script], input=pcm, capture_output=True, timeout=30, cwd=REPO
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().split() == ["3", "125000000", "0.25"]


# --- microphone through a fake sounddevice -------------------------------------------------


class FakePortAudioError(Exception):
    """Like ``sounddevice.PortAudioError``."""


class FakeCallbackFlags:
    """Like ``sounddevice.CallbackFlags``: falsy when no flag is set."""

    def __init__(self, flags: int = 0) -> None:
        self.flags = flags

    def __bool__(self) -> bool:
        return bool(self.flags)


class FakeDefault:
    """Like ``sounddevice.default``: ``device`` is an ``[input, output]`` pair."""

    def __init__(self) -> None:
        self.device = [1, 3]


def make_fake_sounddevice(devices: list[dict], *, autorun: bool = True) -> types.ModuleType:
    """A module with sounddevice's API: ``query_devices``, ``default``, ``InputStream``,
    ``PortAudioError``. Started streams call back with a 440 Hz tone, 20x faster than real
    time, when ``autorun``."""
    module = types.ModuleType("sounddevice")
    module.PortAudioError = FakePortAudioError
    module.default = FakeDefault()
    module.streams = []

    def query_devices(device=None, kind=None):
        if device is None and kind is None:
            return [dict(entry, index=index) for index, entry in enumerate(devices)]
        return dict(devices[device], index=device)

    class InputStream:
        def __init__(
            self, samplerate=None, blocksize=None, device=None, channels=None, dtype=None,
            latency=None, extra_settings=None, callback=None, finished_callback=None,
            clip_off=None, dither_off=None, never_drop_input=None,
            prime_output_buffers_using_stream_callback=None,
        ):  # fmt: skip
            rates = devices[device].get("rates", (devices[device]["default_samplerate"],))
            if samplerate not in rates:
                raise FakePortAudioError(
                    "Error opening InputStream: Invalid sample rate [PaErrorCode -9997]"
                )
            self.samplerate, self.blocksize, self.device = samplerate, blocksize, device
            self.channels, self.dtype, self.callback = channels, dtype, callback
            self.active = self.closed = False
            self.captured = 0
            self._thread: threading.Thread | None = None
            module.streams.append(self)

        def push(self, frames: int) -> None:
            """Calls the callback once, the way PortAudio's audio thread does."""
            time_index = np.arange(self.captured, self.captured + frames) / self.samplerate
            block = (0.5 * np.sin(2 * np.pi * 440 * time_index)).astype(np.float32)
            self.callback(block[:, None], frames, object(), FakeCallbackFlags())
            self.captured += frames

        def _run(self) -> None:
            while self.active:
                self.push(self.blocksize)
                time.sleep(self.blocksize / self.samplerate / 20)

        def start(self) -> None:
            self.active = True
            if autorun:
                self._thread = threading.Thread(target=self._run, daemon=True)
                self._thread.start()

        def stop(self) -> None:
            self.active = False
            if self._thread is not None:
                self._thread.join()

        def close(self) -> None:
            self.stop()
            self.closed = True

        def __enter__(self):
            self.start()
            return self

        def __exit__(self, *exc_info) -> None:
            self.close()

    module.query_devices = query_devices
    module.InputStream = InputStream
    return module


DEVICES = [
    {"name": "HDA Intel PCH: HDMI 0", "max_input_channels": 0, "default_samplerate": 44100.0},
    {"name": "USB PnP Sound Device", "max_input_channels": 1, "default_samplerate": 48000.0},
    {"name": "ReSpeaker 4 Mic Array", "max_input_channels": 6, "default_samplerate": 16000.0},
    {"name": "pulse", "max_input_channels": 32, "default_samplerate": 44100.0},
]


@pytest.fixture
def fake_sounddevice(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = make_fake_sounddevice(DEVICES)
    monkeypatch.setitem(sys.modules, "sounddevice", module)
    return module


def take(source, count: int) -> list[AudioChunk]:
    chunks = []
    with source:
        for chunk in source:
            chunks.append(chunk)
            if len(chunks) == count:
                break
    return chunks


def test_default_microphone_at_48k_is_resampled(fake_sounddevice: types.ModuleType) -> None:
    source = open_audio_source("mic")
    assert isinstance(source, MicrophoneSource) and source.duration_s is None
    joined = check_chunks(take(source, 40))
    (stream,) = fake_sounddevice.streams
    assert (stream.samplerate, stream.channels, stream.dtype, stream.device) == (
        48000,
        1,
        "float32",
        1,
    )
    assert stream.blocksize == 1536 and stream.closed and not stream.active
    assert peak_hz(joined[200:], 16000) == pytest.approx(440, abs=3)
    assert np.abs(joined[200:]).max() == pytest.approx(0.5, abs=0.01)
    assert source.dropped_samples == 0


def test_microphone_by_index_and_name(fake_sounddevice: types.ModuleType) -> None:
    check_chunks(take(open_audio_source("mic:2"), 5))
    check_chunks(take(open_audio_source("mic:respeaker"), 5))
    assert [stream.device for stream in fake_sounddevice.streams] == [2, 2]
    assert fake_sounddevice.streams[0].samplerate == 16000  # the device's own rate: no resampling


@pytest.mark.parametrize(
    ("spec", "problem"),
    [("mic:0", "no microphone 0"), ("mic:7", "no microphone 7"), ("mic:webcam", "'webcam'")],
)
def test_unknown_microphone_lists_input_devices(
    fake_sounddevice: types.ModuleType, spec: str, problem: str
) -> None:
    with pytest.raises(SourceError) as caught:
        open_audio_source(spec).open()
    message = str(caught.value)
    assert problem in message and "1: USB PnP Sound Device" in message and "HDMI" not in message


def test_no_microphone_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    module = make_fake_sounddevice(DEVICES[:1])
    module.default.device = [-1, 0]
    monkeypatch.setitem(sys.modules, "sounddevice", module)
    with pytest.raises(SourceError, match="no microphone found; input devices: none"):
        open_audio_source("mic").open()
    assert list_microphones() == []


def test_microphone_open_error_is_a_source_error(monkeypatch: pytest.MonkeyPatch) -> None:
    devices = [dict(DEVICES[1], rates=(16000,))]  # claims 48 kHz but refuses it
    monkeypatch.setitem(sys.modules, "sounddevice", make_fake_sounddevice(devices))
    with pytest.raises(SourceError, match="cannot open microphone 0 .*Invalid sample rate"):
        open_audio_source("mic").open()


def test_lost_microphone_blocks_become_silence(monkeypatch: pytest.MonkeyPatch) -> None:
    module = make_fake_sounddevice(DEVICES, autorun=False)
    monkeypatch.setitem(sys.modules, "sounddevice", module)
    source = open_audio_source("mic:2", chunk_samples=160)  # 16 kHz, 160-sample blocks
    with source:
        (stream,) = module.streams
        for _ in range(220):  # the queue holds 200 blocks (2 s)
            stream.push(160)
        iterator = iter(source)
        chunks = [next(iterator) for _ in range(200)]
        for _ in range(30):
            stream.push(160)
        chunks += [next(iterator) for _ in range(30)]
    assert source.dropped_samples == 20 * 160
    joined = check_chunks(chunks, size=160)
    assert not joined[200 * 160 : 220 * 160].any()  # the lost 20 blocks, in place
    assert np.abs(joined[220 * 160 :]).max() > 0.4
    assert chunks[220].timestamp_ns == 220 * 10**7  # audio time kept across the gap


def test_list_microphones(fake_sounddevice: types.ModuleType) -> None:
    assert list_microphones() == [
        {"index": 1, "name": "USB PnP Sound Device", "channels": 1, "default_samplerate": 48000.0},
        {"index": 2, "name": "ReSpeaker 4 Mic Array", "channels": 6, "default_samplerate": 16000.0},
        {"index": 3, "name": "pulse", "channels": 32, "default_samplerate": 44100.0},
    ]


class NoPortAudioFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Makes ``import sounddevice`` fail as it does without libportaudio2."""

    def find_spec(self, name, path=None, target=None):
        if name == "sounddevice":
            return importlib.machinery.ModuleSpec(name, self)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        raise OSError("PortAudio library not found")


def test_missing_portaudio_is_backend_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(sys, "meta_path", [NoPortAudioFinder(), *sys.meta_path])
    with pytest.raises(BackendUnavailable) as caught:
        open_audio_source("mic").open()
    assert "libportaudio2" in str(caught.value)
    assert "sudo apt-get install libportaudio2" in str(caught.value)
    assert caught.value.exit_code == 5
    assert list_microphones() == []


# --- arecord -------------------------------------------------------------------------------

FAKE_ARECORD = """#!{python}
import math, struct, sys, time
open({log!r}, "w").write(" ".join(sys.argv[1:]))
device = sys.argv[sys.argv.index("-D") + 1]
if device != "default" and not device.startswith("plughw"):
    sys.stderr.write("arecord: main:850: audio open error: No such file or directory\\n")
    sys.exit(1)
rate = int(sys.argv[sys.argv.index("-r") + 1])
samples = [round(16000 * math.sin(2 * math.pi * 440 * n / rate)) for n in range(rate)]
sys.stdout.buffer.write(struct.pack("<%dh" % rate, *samples))
sys.stdout.buffer.flush()
if "{mode}" == "live":
    time.sleep(60)
if "{mode}" == "crash":
    sys.stderr.write("arecord: pcm_read:2221: read error: Input/output error\\n")
    sys.exit(1)
"""

FAILING_ARECORD = """#!/bin/sh
echo "arecord: main:850: audio open error: No such file or directory" >&2
exit 1
"""


def install_fake_arecord(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    log = tmp_path / "arecord-args.txt"
    script = folder / "arecord"
    text = FAKE_ARECORD.format(python=sys.executable, log=str(log), mode=mode)
    script.write_text(FAILING_ARECORD if mode == "fail" else text)
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(folder))
    return log


def test_arecord_live_capture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = install_fake_arecord(tmp_path, monkeypatch, "live")
    source = open_audio_source("arecord:plughw:1,0")
    assert isinstance(source, ArecordSource)
    chunks = take(source, 20)
    assert log.read_text() == "-q -D plughw:1,0 -f S16_LE -c 1 -r 16000 -t raw"
    joined = check_chunks(chunks)
    assert peak_hz(joined, 16000) == pytest.approx(440, abs=3)
    assert source._process is None  # the recorder was terminated on close


def test_arecord_stream_end_and_stop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_arecord(tmp_path, monkeypatch, "once")
    chunks = list(open_audio_source("arecord"))  # one second, then arecord exits 0
    assert len(check_chunks(chunks)) == 16384


def test_arecord_bad_device_fails_at_open_with_its_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_arecord(tmp_path, monkeypatch, "fail")
    source = open_audio_source("arecord:hw:9")
    with pytest.raises(SourceError) as caught:
        source.open()
    message = str(caught.value)
    assert "'hw:9'" in message and "audio open error: No such file or directory" in message
    assert source._process is None


def test_arecord_failing_mid_stream_raises_after_its_audio(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_arecord(tmp_path, monkeypatch, "crash")
    chunks = []
    with pytest.raises(SourceError, match="read error: Input/output error"):
        for chunk in open_audio_source("arecord"):
            chunks.append(chunk)
    assert len(chunks) >= 31  # the second of audio it wrote before failing


def test_missing_arecord_is_backend_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BackendUnavailable, match="sudo apt-get install alsa-utils"):
        open_audio_source("arecord").open()
