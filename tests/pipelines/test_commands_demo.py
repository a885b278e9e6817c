"""The shipped command model, ubiq-commands-demo, on a voice it never heard."""

from __future__ import annotations

import shutil
from importlib.resources import files

import numpy as np
import pytest

from ubiq.models.datasets.command_training import HELD_OUT_VOICES
from ubiq.models.datasets.commands import make_clip
from ubiq.models.zoo import get_entry, pull
from ubiq.paths import file_sha256
from ubiq.pipelines.speech.commands import load_commands
from ubiq.pipelines.speech.listen import SpeechPipeline
from ubiq.pipelines.speech.recognize import ModelCommandRecognizer
from ubiq.pipelines.speech.vad import SileroVad, VadSegmenter
from ubiq.types import AudioChunk

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")

OTHER_SENTENCES = (  # in neither the training sentences nor benchmarks/speech_bar.py
    "the library opens on monday",
    "turn the page please",
    "my sister plays the violin",
    "is the kitchen door locked",
    "we had pasta for lunch",
    "the volume of the box is large",
)


def _events(pipeline, samples):
    events = []
    for start in range(0, len(samples), 512):
        block = np.zeros(512, np.float32)
        part = samples[start : start + 512]
        block[: len(part)] = part
        events += pipeline.feed(AudioChunk(block, 16000, int(start * 1e9 / 16000)))
    return events + pipeline.flush()


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
        heard = [e.payload for e in _events(pipeline, clip.samples) if e.kind == "speech.command"]
        right += len(heard) == 1 and heard[0]["text"] == text
        if heard:
            phrase = commands.lookup(heard[0]["text"])
            assert heard[0]["intent"] == phrase.intent and heard[0]["slots"] == dict(phrase.slots)
    for text in OTHER_SENTENCES:
        clip = make_clip(text, voice, 150, 50, snr_db=20, rng=rng)
        pipeline = SpeechPipeline(VadSegmenter(vad=vad), recognizer, wake_gate=False)
        accepted += [
            e.payload["text"] for e in _events(pipeline, clip.samples) if e.kind == "speech.command"
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
