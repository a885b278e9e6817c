"""The shipped command model, ubiq-commands-demo, on a voice it never heard."""

from __future__ import annotations

import shutil
from importlib.resources import files

import numpy as np
import pytest
from support import play_audio

from ubiq.models.datasets.command_training import HELD_OUT_VOICES
from ubiq.models.datasets.commands import make_clip
from ubiq.models.zoo import get_entry, pull
from ubiq.paths import file_sha256
from ubiq.pipelines.speech.commands import load_commands
from ubiq.pipelines.speech.listen import SpeechPipeline
from ubiq.pipelines.speech.recognize import ModelCommandRecognizer
from ubiq.pipelines.speech.vad import SileroVad, VadSegmenter

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")

OTHER_SENTENCES = (  # in neither the training sentences nor benchmarks/speech_bar.py
    "the library opens on monday",
    "turn the page please",
    "my sister plays the violin",
    "is the kitchen door locked",
    "we had pasta for lunch",
    "the volume of the box is large",
)


def test_shipped_command_model_hears_a_new_voice_and_refuses_other_speech():
    path = pull("ubiq-commands-demo", progress=False)
    assert file_sha256(path) == get_entry("ubiq-commands-demo").sha256
    commands = load_commands(files("ubiq.data") / "models" / "ubiq-commands-demo.yaml")
    recognizer = ModelCommandRecognizer("ubiq-commands-demo", commands)
    vad = SileroVad()
    rng = np.random.default_rng(7)
    voice = HELD_OUT_VOICES[2]  # en-us-nyc: no training or validation voice has its accent
    right, accepted = 0, []
    for text in commands.texts:
        clip = make_clip(text, voice, 150, 50, snr_db=20, rng=rng)
        pipeline = SpeechPipeline(VadSegmenter(vad=vad), recognizer, wake_gate=False)
        heard = [
            e.payload for e in play_audio(pipeline, clip.samples) if e.kind == "speech.command"
        ]
        right += len(heard) == 1 and heard[0]["text"] == text
        if heard:
            phrase = commands.lookup(heard[0]["text"])
            assert heard[0]["intent"] == phrase.intent and heard[0]["slots"] == dict(phrase.slots)
    for text in OTHER_SENTENCES:
        clip = make_clip(text, voice, 150, 50, snr_db=20, rng=rng)
        pipeline = SpeechPipeline(VadSegmenter(vad=vad), recognizer, wake_gate=False)
        accepted += [
            e.payload["text"]
            for e in play_audio(pipeline, clip.samples)
            if e.kind == "speech.command"
        ]
    assert right >= 13, f"{right}/15 commands recognised"
    assert len(accepted) <= 1, accepted


def test_the_threshold_comes_from_the_caller_then_the_manifest(tmp_path):
    import json

    from ubiq.errors import ModelError
    from ubiq.pipelines.speech.recognize import DEFAULT_THRESHOLD

    commands = load_commands(files("ubiq.data") / "models" / "ubiq-commands-demo.yaml")
    source = pull("ubiq-commands-demo")
    copy = tmp_path / "commands.onnx"
    shutil.copy(source, copy)
    manifest = json.loads(source.with_suffix(".json").read_text())
    manifest["decoder"]["params"].pop("threshold", None)
    copy.with_suffix(".json").write_text(json.dumps(manifest))
    assert ModelCommandRecognizer(copy, commands).threshold == DEFAULT_THRESHOLD
    assert ModelCommandRecognizer(copy, commands, threshold=0.8).threshold == 0.8
    manifest["decoder"]["params"]["threshold"] = 0.42
    copy.with_suffix(".json").write_text(json.dumps(manifest))
    assert ModelCommandRecognizer(copy, commands).threshold == 0.42
    manifest["decoder"]["params"]["threshold"] = 1.5
    copy.with_suffix(".json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="threshold in its manifest must be in"):
        ModelCommandRecognizer(copy, commands)


def test_wake_phrase_and_command_said_in_one_breath():
    """'hey ubiq turn on the kitchen light' with no pause is one VAD segment: the pipeline
    cuts it into the wake phrase and the command (and without the cut hears neither)."""
    commands = load_commands(files("ubiq.data") / "models" / "ubiq-commands-demo.yaml")
    recognizer = ModelCommandRecognizer("ubiq-commands-demo", commands)
    vad = SileroVad()
    rng = np.random.default_rng(11)
    right = plain = 0
    phrases = ("turn on the kitchen light", "play some music", "stop recording")
    for text in phrases:
        clip = make_clip(f"hey ubiq {text}", HELD_OUT_VOICES[0], 150, 50, snr_db=20, rng=rng)
        events = play_audio(SpeechPipeline(VadSegmenter(vad=vad), recognizer), clip.samples)
        assert sum(e.kind == "speech.end" for e in events) == 1  # one utterance
        said = [(e.kind, e.payload["text"]) for e in events if e.kind != "speech.end"][1:]
        right += said == [("speech.wake", "hey ubiq"), ("speech.command", text)]
        if said and said[-1][0] == "speech.command":
            wake, command = [
                e.payload for e in events if e.kind in ("speech.wake", "speech.command")
            ]
            assert clip.t_start - 0.1 < wake["t_start"] < wake["t_end"] == command["t_start"]
            assert command["t_end"] == pytest.approx(clip.t_end, abs=0.1)
        unsplit = SpeechPipeline(VadSegmenter(vad=vad), recognizer, split_wake=False)
        plain += any(e.kind == "speech.command" for e in play_audio(unsplit, clip.samples))
    assert right >= 2, f"{right}/3 run-on wake+command utterances heard"
    assert plain == 0


def test_listen_cli_writes_the_wake_and_the_command_of_one_breath(tmp_path, capsys):
    import json

    from ubiq.cli import main
    from ubiq.models.runtime.audio_features import write_wav

    demo = files("ubiq.data") / "models" / "ubiq-commands-demo.yaml"
    clip = make_clip("hey ubiq play some music", HELD_OUT_VOICES[1], 150, 50, snr_db=None)
    wav, out = tmp_path / "talk.wav", tmp_path / "events.jsonl"
    write_wav(wav, clip.samples, 16000)
    args = ["listen", "--source", str(wav), "--commands", str(demo),
            "--model", "ubiq-commands-demo", "--jsonl", str(out), "--quiet"]  # fmt: skip
    assert main(args) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    said = [(r["kind"], r["text"], r["intent"]) for r in records if r["kind"] != "speech.start"]
    assert said == [
        ("speech.wake", "hey ubiq", None),
        ("speech.command", "play some music", "music"),
        ("speech.end", "", None),
    ]
    assert "1 cut after the wake phrase" in capsys.readouterr().err
