"""Open-vocabulary transcription: PocketSphinx on espeak-ng speech, Whisper adapters on fakes."""

from __future__ import annotations

import importlib.metadata
import logging
import math
import shutil
import sys
import types
import urllib.error
from dataclasses import dataclass

import numpy as np
import pytest

from ubiq.errors import BackendUnavailable, ConfigError, ModelError
from ubiq.pipelines.speech.transcribe import (
    FasterWhisperTranscriber,
    PocketSphinxTranscriber,
    Transcriber,
    Transcript,
    WhisperTranscriber,
    available_engines,
    open_transcriber,
    word_errors,
)

RATE = 16000

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt install espeak-ng)"
)

# espeak-ng's Klatt voice at 140 wpm; the default en-us voice gives about twice the WER.
VOICE, SPEED_WPM, PITCH = "en-us+klatt", 140, 50
SENTENCES = [
    "what time is it",
    "turn on the lights",
    "open the door please",
    "what is the weather today",
    "play some music",
    "set a timer for ten minutes",
    "how are you today",
    "stop the music",
    "where is the nearest station",
]


def speak(text: str) -> np.ndarray:
    from ubiq.models.datasets.commands import synthesize

    return synthesize(text, VOICE, SPEED_WPM, PITCH)


@pytest.fixture(scope="module")
def sphinx() -> PocketSphinxTranscriber:
    pytest.importorskip("pocketsphinx", reason="the [speech] extra is not installed")
    return PocketSphinxTranscriber()


@pytest.fixture
def no_whisper(monkeypatch) -> None:
    """Neither Whisper package importable (None in sys.modules makes import raise)."""
    monkeypatch.setitem(sys.modules, "faster_whisper", None)
    monkeypatch.setitem(sys.modules, "whisper", None)


# --- PocketSphinx, real model -------------------------------------------------------------


@needs_espeak
def test_pocketsphinx_transcribes_espeak_sentences(sphinx) -> None:
    errors = words = 0
    for sentence in SENTENCES:
        audio = speak(sentence)
        transcript = sphinx.transcribe(audio)
        assert transcript.engine == "pocketsphinx"
        assert transcript.text, sentence
        errors += word_errors(sentence, transcript.text)
        words += len(sentence.split())
    # Measured 4/37 (11 %) with pocketsphinx 5.1.1 and espeak-ng 1.51.
    assert errors / words < 0.3


@needs_espeak
def test_pocketsphinx_words_timings_and_confidence(sphinx) -> None:
    audio = speak("what is the weather today")
    transcript = sphinx.transcribe(audio)
    assert transcript.text == "what is the weather today"
    assert " ".join(word.text for word in transcript.words) == transcript.text
    starts = [word.start_s for word in transcript.words]
    assert starts == sorted(starts)
    assert all(w.start_s < w.end_s <= len(audio) / RATE + 0.01 for w in transcript.words)
    assert all(0.0 < word.confidence <= 1.0 for word in transcript.words)
    geometric_mean = math.exp(np.mean([math.log(word.confidence) for word in transcript.words]))
    assert transcript.confidence == pytest.approx(geometric_mean)
    # One decoder reused, yet no state carried over: the same audio decodes the same way.
    assert sphinx.transcribe(speak("set a timer for ten minutes")).text
    assert sphinx.transcribe(audio) == transcript
    assert sphinx.transcribe((audio * 32767).astype(np.int16)).text == transcript.text


def test_pocketsphinx_silence_and_noise_give_empty_transcripts(sphinx) -> None:
    noise = np.random.default_rng(0).normal(0.0, 1e-3, RATE).astype(np.float32)  # -60 dBFS
    for samples in (
        np.zeros(RATE, np.float32),
        np.zeros(0, np.float32),
        noise,  # loud enough to reach the decoder
        noise[:100],  # shorter than one 10 ms frame
    ):
        assert sphinx.transcribe(samples) == Transcript("", 0.0, "pocketsphinx")


def test_pocketsphinx_rejects_bad_samples(sphinx) -> None:
    with pytest.raises(ValueError, match=r"shape \(N,\)"):
        sphinx.transcribe(np.zeros((RATE, 2), np.float32))
    with pytest.raises(ValueError, match="float32"):
        sphinx.transcribe(np.zeros(RATE, np.int32))
    with pytest.raises(ValueError, match="finite"):
        sphinx.transcribe(np.full(RATE, np.nan, np.float32))


def test_pocketsphinx_missing_or_bad_model_files(tmp_path) -> None:
    pytest.importorskip("pocketsphinx")
    with pytest.raises(ModelError, match="lm file .*nope.lm.bin.* does not exist"):
        PocketSphinxTranscriber(lm=tmp_path / "nope.lm.bin")
    corrupt = tmp_path / "corrupt.lm.bin"
    corrupt.write_bytes(b"not a language model" * 10)
    with pytest.raises(ModelError, match="pocketsphinx cannot load its model") as caught:
        PocketSphinxTranscriber(lm=corrupt)
    assert "corrupt.lm.bin" in str(caught.value) and "\n" not in str(caught.value)


def test_pocketsphinx_missing_package(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pocketsphinx", None)
    with pytest.raises(BackendUnavailable, match="pip install pocketsphinx"):
        PocketSphinxTranscriber()


# --- Whisper adapters on fakes that follow the real APIs ----------------------------------


@dataclass
class FakeSegment:
    """faster_whisper.transcribe.Segment."""

    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    words: list | None
    temperature: float


def fake_faster_whisper(texts_and_logprobs, load_error: Exception | None = None):
    """A ``faster_whisper`` module: ``WhisperModel(...).transcribe`` -> (generator, info)."""
    module = types.ModuleType("faster_whisper")
    module.calls = []

    class WhisperModel:
        def __init__(
            self,
            model_size_or_path,
            device="auto",
            device_index=0,
            compute_type="default",
            cpu_threads=0,
            num_workers=1,
            download_root=None,
            local_files_only=False,
            files=None,
            **model_kwargs,
        ):
            if load_error is not None:
                raise load_error
            module.calls.append(("load", model_size_or_path, device, compute_type))

        def transcribe(self, audio, language=None, task="transcribe", beam_size=5, **options):
            module.calls.append(("transcribe", audio.dtype, audio.shape, language, beam_size))

            def segments():  # lazy, as in faster-whisper: decoding happens on iteration
                for index, (text, logprob) in enumerate(texts_and_logprobs):
                    module.calls.append(("segment", index))
                    yield FakeSegment(index, 0, index, index + 1, text, [], logprob, 1.2, 0.01,
                                      None, 0.0)  # fmt: skip

            info = types.SimpleNamespace(language="en", language_probability=1.0, duration=1.0)
            return segments(), info

    module.WhisperModel = WhisperModel
    return module


def fake_whisper(result: dict, load_error: Exception | None = None):
    """An openai-whisper ``whisper`` module: ``load_model(name).transcribe(...)`` -> dict."""
    module = types.ModuleType("whisper")
    module.calls = []

    class Whisper:
        def transcribe(self, audio, *, verbose=None, word_timestamps=False, **decode_options):
            module.calls.append(("transcribe", audio.dtype, audio.shape, decode_options))
            return result

    def load_model(name, device=None, download_root=None, in_memory=False):
        if load_error is not None:
            raise load_error
        module.calls.append(("load", name))
        return Whisper()

    module.load_model = load_model
    return module


def whisper_segment(text: str, avg_logprob: float) -> dict:
    keys = ("id", "seek", "start", "end", "tokens", "temperature", "compression_ratio")
    return {**dict.fromkeys(keys, 0), "text": text, "avg_logprob": avg_logprob,
            "no_speech_prob": 0.01}  # fmt: skip


def offline_hub_error() -> Exception:
    try:
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:  # same bases as the real class
        return FileNotFoundError("cannot find the requested files in the local cache")
    return LocalEntryNotFoundError("cannot find the requested files in the local cache")


SPEECH = (0.1 * np.sin(np.arange(RATE) * 0.05)).astype(np.float32)


def test_faster_whisper_adapter(monkeypatch) -> None:
    fake = fake_faster_whisper([(" Turn on", -0.2), (" the lights.", -0.4)])
    monkeypatch.setitem(sys.modules, "faster_whisper", fake)
    transcriber = FasterWhisperTranscriber()
    transcript = transcriber.transcribe(SPEECH)
    assert transcript == Transcript("Turn on the lights.", math.exp(-0.3), "faster-whisper")
    assert fake.calls == [
        ("load", "tiny.en", "cpu", "int8"),
        ("transcribe", np.float32, (RATE,), "en", 1),
        ("segment", 0),
        ("segment", 1),
    ]
    assert isinstance(transcriber, Transcriber)


def test_faster_whisper_nothing_heard_and_silence(monkeypatch) -> None:
    fake = fake_faster_whisper([])
    monkeypatch.setitem(sys.modules, "faster_whisper", fake)
    transcriber = FasterWhisperTranscriber("base.en")
    assert transcriber.transcribe(SPEECH) == Transcript("", 0.0, "faster-whisper")
    calls = len(fake.calls)
    assert transcriber.transcribe(np.zeros(RATE, np.float32)).text == ""
    assert len(fake.calls) == calls  # digital silence never reaches the model


def test_whisper_adapter(monkeypatch) -> None:
    result = {
        "text": " What time is it?",
        "segments": [whisper_segment(" What time", -0.1), whisper_segment(" is it?", -0.5)],
        "language": "en",
    }
    fake = fake_whisper(result)
    monkeypatch.setitem(sys.modules, "whisper", fake)
    transcriber = WhisperTranscriber()
    assert transcriber.transcribe(SPEECH) == Transcript(
        "What time is it?", math.exp(-0.3), "whisper"
    )
    assert fake.calls == [
        ("load", "tiny.en"),
        ("transcribe", np.float32, (RATE,), {"language": "en", "fp16": False}),
    ]
    hallucination = fake_whisper({"text": " Thank you.", "segments": [], "language": "en"})
    monkeypatch.setitem(sys.modules, "whisper", hallucination)
    assert WhisperTranscriber().transcribe(np.zeros(RATE, np.float32)).text == ""
    assert [call[0] for call in hallucination.calls] == ["load"]


@pytest.mark.parametrize(
    "engine, module, error",
    [
        ("faster-whisper", "faster_whisper", offline_hub_error()),
        ("faster-whisper", "faster_whisper", ValueError("Invalid model size 'tiny.xx'")),
        ("whisper", "whisper", urllib.error.URLError(OSError("Name or service not known"))),
        ("whisper", "whisper", RuntimeError("Model tiny.xx not found;\navailable models = [...]")),
    ],
)
def test_model_that_cannot_load_is_a_model_error(monkeypatch, engine, module, error) -> None:
    factory = fake_faster_whisper if module == "faster_whisper" else fake_whisper
    monkeypatch.setitem(sys.modules, module, factory([], load_error=error))
    with pytest.raises(ModelError) as caught:
        open_transcriber(engine)
    message = str(caught.value)
    assert f"{engine} model 'tiny.en'" in message and "downloaded once" in message
    assert "local model directory" in message and "\n" not in message
    assert caught.value.__cause__ is error


@pytest.mark.parametrize(
    "engine, package", [("faster-whisper", "faster-whisper"), ("whisper", "openai-whisper")]
)
def test_missing_whisper_package_is_backend_unavailable(no_whisper, engine, package) -> None:
    with pytest.raises(BackendUnavailable) as caught:
        open_transcriber(engine)
    assert caught.value.name == engine
    assert package in caught.value.missing and caught.value.hint == f"pip install {package}"


def test_another_whisper_module_is_not_openai_whisper(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "whisper", types.ModuleType("whisper"))  # graphite's
    with pytest.raises(BackendUnavailable, match="openai-whisper"):
        WhisperTranscriber()


# --- choosing an engine -------------------------------------------------------------------


def test_auto_falls_back_to_pocketsphinx(no_whisper, caplog) -> None:
    pytest.importorskip("pocketsphinx")
    with caplog.at_level(logging.INFO, logger="ubiq.pipelines.speech.transcribe"):
        transcriber = open_transcriber("auto")
    assert isinstance(transcriber, PocketSphinxTranscriber)
    assert "transcription engine: pocketsphinx" in caplog.text
    assert "pip install faster-whisper" in caplog.text
    assert "pip install openai-whisper" in caplog.text


def test_auto_prefers_faster_whisper(monkeypatch, caplog) -> None:
    monkeypatch.setitem(sys.modules, "faster_whisper", fake_faster_whisper([(" hi", -0.1)]))
    monkeypatch.setitem(sys.modules, "whisper", fake_whisper({"text": "", "segments": []}))
    with caplog.at_level(logging.INFO, logger="ubiq.pipelines.speech.transcribe"):
        transcriber = open_transcriber()
    assert isinstance(transcriber, FasterWhisperTranscriber)
    assert "transcription engine: faster-whisper" in caplog.text


def test_auto_skips_a_model_that_cannot_load(monkeypatch, caplog) -> None:
    offline = fake_faster_whisper([], load_error=offline_hub_error())
    monkeypatch.setitem(sys.modules, "faster_whisper", offline)
    monkeypatch.setitem(sys.modules, "whisper", fake_whisper({"text": "", "segments": []}))
    with caplog.at_level(logging.INFO, logger="ubiq.pipelines.speech.transcribe"):
        transcriber = open_transcriber("auto")
    assert isinstance(transcriber, WhisperTranscriber)
    assert "transcription engine: whisper" in caplog.text
    assert "faster-whisper model 'tiny.en' cannot be loaded" in caplog.text


def test_explicit_engine_does_not_fall_back(no_whisper) -> None:
    with pytest.raises(BackendUnavailable, match="faster-whisper"):
        open_transcriber("faster-whisper")


@pytest.mark.parametrize("engine", ["vosk", "Whisper", ""])
def test_unknown_engine(engine) -> None:
    with pytest.raises(ConfigError, match=f"got {engine!r}") as caught:
        open_transcriber(engine)
    assert "auto, pocketsphinx, faster-whisper, whisper" in str(caught.value)


def test_available_engines(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "faster_whisper", None)
    monkeypatch.setitem(sys.modules, "whisper", fake_whisper({}))  # importable, no metadata
    engines = {engine["name"]: engine for engine in available_engines()}
    assert list(engines) == ["faster-whisper", "whisper", "pocketsphinx"]
    assert engines["faster-whisper"]["installed"] is False
    assert "pip install faster-whisper" in engines["faster-whisper"]["detail"]
    assert engines["whisper"]["installed"] is True
    try:
        version = importlib.metadata.version("pocketsphinx")
    except importlib.metadata.PackageNotFoundError:
        assert engines["pocketsphinx"]["installed"] is False
    else:
        assert engines["pocketsphinx"]["installed"] is True
        assert f"pocketsphinx {version}" in engines["pocketsphinx"]["detail"]


def test_word_errors_count_substitutions_deletions_and_insertions() -> None:
    assert word_errors("Play some music.", "play some music") == 0  # case and punctuation
    assert word_errors("play some music", "play sum music") == 1
    assert word_errors("play some music", "play music") == 1
    assert word_errors("play some music", "please play some music now") == 2
    assert word_errors("stop", "") == 1
