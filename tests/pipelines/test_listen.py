"""``ubiq listen`` end to end: real espeak-ng speech, Silero VAD and PocketSphinx commands."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ubiq.cli import main
from ubiq.models.datasets.commands import make_clip
from ubiq.models.runtime.audio_features import write_wav
from ubiq.pipelines.speech.commands import CommandSet
from ubiq.pipelines.speech.listen import RECORD_KEYS, SpeechPipeline, pause_cuts
from ubiq.pipelines.speech.recognize import Recognition, SphinxCommandRecognizer

COMMANDS_YAML = """\
wake: hey ubiq
slots:
  room: [kitchen, bedroom]
pronunciations:
  ubiq: Y UW B IH K
intents:
  light: "turn {state:on|off} the {room} light"
  time: what time is it
"""


def _speak(path, texts, *, voice="en-us", snr_db=None, gap_s=1.0, seed=0):
    """Writes the texts one after another into one WAV; returns their true (start, end)."""
    rng = np.random.default_rng(seed)
    parts, bounds, offset = [], [], 0.0
    for text in texts:
        clip = make_clip(text, voice, 150, 50, snr_db=snr_db, lead_s=gap_s, tail_s=0.2, rng=rng)
        parts.append(clip.samples)
        bounds.append((offset + clip.t_start, offset + clip.t_end))
        offset += clip.duration_s
    parts.append(np.zeros(16000, np.float32))
    write_wav(path, np.concatenate(parts), 16000)
    return bounds


@pytest.fixture(scope="module")
def commands_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("commands") / "commands.yaml"
    path.write_text(COMMANDS_YAML)
    return path


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_listen_emits_commands_with_intent_slots_and_exact_jsonl(tmp_path, commands_file, capsys):
    wav = tmp_path / "talk.wav"
    bounds = _speak(wav, ["turn off the kitchen light", "what time is it"])
    out = tmp_path / "events.jsonl"
    code = main(
        ["listen", "--source", str(wav), "--commands", str(commands_file), "--wake-window", "60",
         "--engine", "pocketsphinx", "--jsonl", str(out)]
    )  # fmt: skip
    assert code == 0
    records = _records(out)
    for record in records:
        assert tuple(record) == RECORD_KEYS
        assert isinstance(record["t_start"], float) and isinstance(record["confidence"], float)
    kinds = [r["kind"] for r in records]
    assert kinds.count("speech.start") == 2 and kinds.count("speech.end") == 2
    # the file has a wake phrase and none was said: the commands are heard but not emitted
    assert "speech.command" not in kinds
    assert "2 utterances" in capsys.readouterr().err
    for record, (start, end) in zip([r for r in records if r["kind"] == "speech.end"], bounds):
        assert abs(record["t_start"] - start) < 0.15 and abs(record["t_end"] - end) < 0.2


def test_wake_phrase_opens_a_window_for_commands(tmp_path, commands_file):
    wav = tmp_path / "talk.wav"
    _speak(wav, ["what time is it", "hey ubiq", "turn off the kitchen light"])
    out = tmp_path / "events.jsonl"
    code = main(
        ["listen", "--source", str(wav), "--commands", str(commands_file), "--jsonl", str(out),
         "--engine", "pocketsphinx", "--quiet"]
    )  # fmt: skip
    assert code == 0
    heard = [r for r in _records(out) if r["kind"] in ("speech.wake", "speech.command")]
    assert [r["kind"] for r in heard] == ["speech.wake", "speech.command"]
    command = heard[1]
    assert command["text"] == "turn off the kitchen light"
    assert command["intent"] == "light"
    assert command["slots"] == {"state": "off", "room": "kitchen"}
    assert 0.0 <= command["confidence"] <= 1.0
    assert command["t_start"] > heard[0]["t_end"]


def test_without_wake_phrase_commands_are_emitted(tmp_path):
    commands = tmp_path / "commands.txt"
    commands.write_text("what time is it\nturn on the light\n")
    wav = tmp_path / "talk.wav"
    _speak(wav, ["turn on the light"], snr_db=20)
    out = tmp_path / "events.jsonl"
    assert main(["listen", "--source", str(wav), "--commands", str(commands),
                 "--jsonl", str(out), "--quiet"]) == 0  # fmt: skip
    commands_heard = [r for r in _records(out) if r["kind"] == "speech.command"]
    assert [(r["text"], r["intent"], r["slots"]) for r in commands_heard] == [
        ("turn on the light", "turn on the light", {})
    ]


def test_pipeline_drops_a_command_outside_the_wake_window():
    class Scripted:
        name = "scripted"
        commands = CommandSet.from_phrases(["lights on"], wake="hey ubiq")

        def __init__(self):
            self.answers = iter(["hey ubiq", "lights on", "lights on"])

        def recognize(self, samples):
            text = next(self.answers)
            if text == "hey ubiq":
                return Recognition(text, None, True, 0.9, text)
            return Recognition(text, self.commands.lookup(text), False, 0.8, text)

    class Vad:
        def __init__(self, ends):
            self.ends = list(ends)

        def feed(self, chunk):
            from ubiq.pipelines.speech.vad import VadEvent

            if not self.ends:
                return []
            t0, t1 = self.ends.pop(0)
            return [VadEvent("speech.end", t0, t1, t1 + 0.1, np.ones(1600, np.float32))]

        def flush(self):
            return []

    from ubiq.types import AudioChunk

    pipeline = SpeechPipeline(Vad([(1, 2), (3, 4), (20, 21)]), Scripted(), wake_window_s=5)
    kinds = []
    for _ in range(3):
        kinds += [e.kind for e in pipeline.feed(AudioChunk(np.zeros(512, np.float32), 16000, 0))]
    assert kinds == ["speech.wake", "speech.end", "speech.command", "speech.end", "speech.end"]
    assert pipeline.stats.outside_wake == 1 and pipeline.stats.commands == 1


def test_sphinx_pronounces_words_outside_the_dictionary_with_espeak(tmp_path):
    recognizer = SphinxCommandRecognizer(CommandSet.from_phrases(["turn on the zorblax", "quux"]))
    assert recognizer.pronounced["zorblax"] == "Z AO R B L AE K S"
    assert set(recognizer.pronounced) == {"quux", "zorblax"}


def test_sphinx_names_words_it_cannot_pronounce_without_espeak(monkeypatch):
    from ubiq.pipelines.speech import g2p

    g2p.espeak_phonemes.cache_clear()
    monkeypatch.setattr(g2p.shutil, "which", lambda name: None)
    with pytest.raises(Exception, match=r"dictionary: quux, zorblax, and espeak-ng is not"):
        SphinxCommandRecognizer(CommandSet.from_phrases(["turn on the zorblax", "quux"]))
    g2p.espeak_phonemes.cache_clear()


def test_a_wake_name_outside_the_dictionary_is_heard(tmp_path):
    """'hey mycroft': PocketSphinx has no 'mycroft'; espeak-ng pronounces it."""
    commands = tmp_path / "commands.yaml"
    commands.write_text("wake: hey mycroft\nintents:\n  time: what time is it\n")
    wav = tmp_path / "talk.wav"
    _speak(wav, ["hey mycroft", "what time is it"], snr_db=20)
    out = tmp_path / "events.jsonl"
    code = main(["listen", "--source", str(wav), "--commands", str(commands), "--engine",
                 "pocketsphinx", "--jsonl", str(out), "--quiet"])  # fmt: skip
    assert code == 0
    heard = [(r["kind"], r["text"]) for r in _records(out) if r["kind"].startswith("speech.")]
    heard = [h for h in heard if h[0] in ("speech.wake", "speech.command")]
    assert heard == [("speech.wake", "hey mycroft"), ("speech.command", "what time is it")]


@pytest.mark.parametrize(
    ("setup", "message", "code"),
    [
        ("empty_wav", "is empty", 3),
        ("text_wav", "cannot read audio file", 3),
        ("bad_rate", "sample rate", 3),
        ("empty_commands", "has no commands", 2),
        ("oov", "outside the pronunciation dictionary: blorp, and espeak-ng is not", 2),
        ("no_espeak", "cannot spell 'turn on the light' in phones: espeak-ng is not installed", 2),
        ("model_without_commands", "need --commands", 2),
        ("engine_model_without_model", "needs --model", 2),
        ("missing_model", "not found", 4),
    ],
)
def test_bad_input_is_one_line_and_nonzero(tmp_path, capsys, monkeypatch, setup, message, code):
    good_wav = tmp_path / "ok.wav"
    write_wav(good_wav, np.zeros(1600, np.float32), 16000)
    commands = tmp_path / "c.txt"
    commands.write_text("turn on the light\n")
    args = ["listen", "--source", str(good_wav), "--commands", str(commands)]
    if setup == "empty_wav":
        (tmp_path / "e.wav").write_bytes(b"")
        args[2] = str(tmp_path / "e.wav")
    elif setup == "text_wav":
        (tmp_path / "t.wav").write_text("this is not audio\n")
        args[2] = str(tmp_path / "t.wav")
    elif setup == "bad_rate":
        data = bytearray(good_wav.read_bytes())
        data[24:28] = (0).to_bytes(4, "little")  # the fmt chunk's sample rate
        (tmp_path / "r.wav").write_bytes(bytes(data))
        args[2] = str(tmp_path / "r.wav")
    elif setup == "empty_commands":
        commands.write_text("# nothing yet\n")
    elif setup == "oov":  # a word outside the dictionary, and no espeak-ng to pronounce it
        commands.write_text("turn on the blorp\n")
        from ubiq.pipelines.speech import g2p

        g2p.espeak_phonemes.cache_clear()
        monkeypatch.setattr(g2p.shutil, "which", lambda name: None)
        args += ["--engine", "pocketsphinx"]
    elif setup == "no_espeak":  # the phone recogniser spells every phrase with espeak-ng
        from ubiq.pipelines.speech import g2p, phones

        phones.phrase_phones.cache_clear()
        g2p.espeak_phonemes.cache_clear()
        monkeypatch.setattr(g2p.shutil, "which", lambda name: None)
    elif setup == "model_without_commands":
        args = ["listen", "--source", str(good_wav), "--model", "x.onnx"]
    elif setup == "engine_model_without_model":
        args += ["--engine", "model"]
    elif setup == "missing_model":
        args += ["--model", str(tmp_path / "missing.onnx")]
    assert main(args) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert err[0].startswith("ubiq listen: error:")


def test_listen_runs_without_torch(tmp_path):
    """The speech runtime is numpy, onnxruntime and PocketSphinx: never torch or silero_vad's
    Python package (whose import pulls torch)."""
    import subprocess
    import sys

    wav = tmp_path / "talk.wav"
    _speak(wav, ["what time is it"])
    commands = tmp_path / "commands.txt"
    commands.write_text("what time is it\n")
    code = (
        "import sys\n"
        "from ubiq.cli import main\n"
        f"assert main(['listen', '--source', {str(wav)!r}, '--commands', {str(commands)!r},"
        " '--quiet']) == 0\n"
        "heavy = [m for m in ('torch', 'ultralytics', 'silero_vad') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.stdout.strip().endswith("ok"), result.stderr[-2000:]


def _tone(freq: float, seconds: float, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(round(seconds * 16000)) / 16000
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_pause_cuts_find_the_pause_between_two_words():
    rng = np.random.default_rng(0)
    gap = (rng.standard_normal(1600) * 1e-3).astype(np.float32)  # 100 ms, 50 dB down
    samples = np.concatenate([_tone(300, 0.5), gap, _tone(600, 0.7)])
    cuts = pause_cuts(samples, 16000)
    assert cuts, "no pause found"
    assert 8000 <= cuts[0] <= 9600  # inside the gap
    assert pause_cuts(_tone(300, 1.2), 16000) == []  # a steady sound has no pause
    # a part shorter than min_part_s is never left: the gap is 0.5 s from the start
    assert all(abs(c - 8800) > 800 for c in pause_cuts(samples, 16000, min_part_s=0.6))
    assert pause_cuts(np.zeros(100, np.float32), 16000) == []


class _ToneRecognizer:
    """A recogniser that hears 300 Hz as the wake phrase and 600 Hz as "lights on"."""

    name = "tones"
    commands = CommandSet.from_phrases(["lights on"], wake="hey ubiq")

    def recognize(self, samples):
        spectrum = np.abs(np.fft.rfft(samples, 16000))  # 1 Hz bins
        low, high = spectrum[280:320].sum(), spectrum[580:620].sum()
        if low > 4 * high:
            return Recognition("hey ubiq", None, True, 0.9, "hey ubiq")
        if high > 4 * low:
            return Recognition(
                "lights on", self.commands.lookup("lights on"), False, 0.8, "lights on"
            )
        return Recognition("", None, False, 0.5, "_unknown_")


class _OneUtterance:
    """A VAD that reports the whole fed audio as one utterance starting at 1 s."""

    def __init__(self, samples):
        self.samples = samples

    def feed(self, chunk):
        from ubiq.pipelines.speech.vad import VadEvent

        if self.samples is None:
            return []
        samples, self.samples = self.samples, None
        end = 1.0 + len(samples) / 16000
        return [VadEvent("speech.end", 1.0, end, end + 0.2, samples, 1.0)]

    def flush(self):
        return []


@pytest.mark.parametrize("split", [True, False])
def test_wake_phrase_and_command_in_one_utterance(split):
    from ubiq.types import AudioChunk

    rng = np.random.default_rng(1)
    gap = (rng.standard_normal(1600) * 1e-3).astype(np.float32)
    samples = np.concatenate([_tone(300, 0.5), gap, _tone(600, 0.7)])
    pipeline = SpeechPipeline(_OneUtterance(samples), _ToneRecognizer(), split_wake=split)
    events = pipeline.feed(AudioChunk(np.zeros(512, np.float32), 16000, 0))
    said = [(e.kind, e.payload["text"]) for e in events]
    if not split:  # the whole is neither: nothing but the end
        assert said == [("speech.end", "")]
        return
    assert said == [
        ("speech.wake", "hey ubiq"),
        ("speech.command", "lights on"),
        ("speech.end", ""),
    ]
    wake, command = events[0].payload, events[1].payload
    assert wake["t_start"] == 1.0 and command["t_end"] == pytest.approx(1.0 + len(samples) / 16000)
    assert wake["t_end"] == command["t_start"]
    assert 1.5 <= wake["t_end"] <= 1.6  # the cut lies in the pause
    assert pipeline.stats.commands == 1 and pipeline.stats.wake_splits == 1


def test_a_split_without_a_command_still_wakes():
    from ubiq.types import AudioChunk

    rng = np.random.default_rng(2)
    gap = (rng.standard_normal(1600) * 1e-3).astype(np.float32)
    samples = np.concatenate([_tone(300, 0.5), gap, _tone(450, 0.7)])  # wake, then other speech
    pipeline = SpeechPipeline(_OneUtterance(samples), _ToneRecognizer())
    events = pipeline.feed(AudioChunk(np.zeros(512, np.float32), 16000, 0))
    assert [e.kind for e in events] == ["speech.wake", "speech.end"]
    assert pipeline.stats.rejected == 1 and pipeline.stats.commands == 0


class _ByLengthRecognizer:
    """Hears the whole utterance as ``whole``, anything up to 0.6 s as the wake phrase and
    anything else as no command."""

    name = "by-length"
    commands = CommandSet.from_phrases(["turn on the kitchen light"], wake="hey ubiq")

    def __init__(self, whole_samples, whole):
        self.whole_samples, self.whole = whole_samples, whole

    def recognize(self, samples):
        if len(samples) == self.whole_samples:
            if self.whole == "command":
                phrase = self.commands.lookup("turn on the kitchen light")
                return Recognition("turn on the kitchen light", phrase, False, 0.9, "")
            return Recognition("", None, False, 0.5, "_unknown_")
        if len(samples) <= 0.6 * 16000:
            return Recognition("hey ubiq", None, True, 0.6, "hey ubiq")
        return Recognition("", None, False, 0.5, "_unknown_")


@pytest.mark.parametrize(("whole", "woken"), [("command", False), ("unknown", True)])
def test_a_command_said_without_the_wake_phrase_is_no_wake_phrase(whole, woken):
    # "turn on | the kitchen light": its head may sound like the wake phrase to the model,
    # but an utterance that is itself a command only splits into the wake phrase and a
    # command. Other speech ("hey ubiq, what a day") may still wake.
    from ubiq.types import AudioChunk

    rng = np.random.default_rng(3)
    gap = (rng.standard_normal(1600) * 1e-3).astype(np.float32)
    samples = np.concatenate([_tone(300, 0.5), gap, _tone(450, 0.7)])
    recognizer = _ByLengthRecognizer(len(samples), whole)
    pipeline = SpeechPipeline(_OneUtterance(samples), recognizer)
    events = pipeline.feed(AudioChunk(np.zeros(512, np.float32), 16000, 0))
    kinds = [e.kind for e in events]
    assert kinds == (["speech.wake", "speech.end"] if woken else ["speech.end"])
    assert pipeline.stats.commands == 0
    assert pipeline.stats.outside_wake == (0 if woken else 1)
