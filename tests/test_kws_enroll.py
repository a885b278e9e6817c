"""Voice enrolment on keyword models: the embedding output, `ubiq learn --task kws` end to
end with espeak-ng speech, `--add`, recording, and bad input."""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from ubiq.cli import main
from ubiq.models.runtime.audio_features import write_wav

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")

VOICE = "de"  # German rules reading English: a voice the demo model mostly does not hear
TAKES = ((140, 45), (155, 50), (170, 55))


def _say(text: str, wpm: int, pitch: int, snr_db: float | None = None, seed: int = 0):
    from ubiq.models.datasets.commands import make_clip

    rng = np.random.default_rng(seed)
    return make_clip(text, VOICE, wpm, pitch, snr_db=snr_db, lead_s=0.6, tail_s=0.6, rng=rng)


def _utterance(text: str, wpm: int, pitch: int, snr_db: float | None = None, seed: int = 0):
    """What `ubiq listen`'s VAD hands the recogniser for a spoken phrase."""
    from ubiq.pipelines.speech.enroll import speech_part

    return speech_part(_say(text, wpm, pitch, snr_db, seed).samples)


def _phrase_folder(root: Path, label: str, text: str) -> Path:
    folder = root / label
    folder.mkdir(parents=True)
    for number, (wpm, pitch) in enumerate(TAKES, 1):
        write_wav(folder / f"take-{number}.wav", _say(text, wpm, pitch).samples, 16000)
    return folder


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory):
    """An enrolled folder: 'hey ubiq' (a model class) and 'lights out' (a new phrase)."""
    root = tmp_path_factory.mktemp("kws-enroll")
    data = root / "voice"
    _phrase_folder(data, "hey ubiq", "hey ubiq")
    _phrase_folder(data, "lights out", "lights out")
    out = root / "mine"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["learn", "--task", "kws", "--embedder", "ubiq-commands-demo",
                     "--data", str(data), "--out", str(out)])  # fmt: skip
    assert code == 0
    (root / "printed.txt").write_text(printed.getvalue())
    return out


def test_embedding_output_agrees_with_the_logits():
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    from ubiq.models.runtime.onnx_outputs import EMBEDDING_OUTPUT, embedding_model
    from ubiq.models.runtime.tasks import KeywordModel

    model = KeywordModel.load("ubiq-commands-demo", num_threads=1)
    clip = _say("what time is it", 150, 50).samples
    tensor = model.prepare(clip, 16000)
    scores, embedding = model.scores_and_embedding(tensor)
    assert embedding.shape == (160,)
    assert np.array_equal(scores, model.scores(tensor))  # the added output leaves logits as is
    np.testing.assert_allclose(embedding, model.embed(clip, 16000))
    edited = onnx.load_from_string(embedding_model(model.path.read_bytes()))
    onnx.checker.check_model(edited, full_check=True)
    assert [o.name for o in edited.graph.output] == ["logits", EMBEDDING_OUTPUT]
    weights = {t.name: numpy_helper.to_array(t) for t in edited.graph.initializer}
    logits = embedding @ weights["head.linear.weight"].T + weights["head.linear.bias"]
    np.testing.assert_allclose(logits, scores, atol=1e-4)


def test_learn_kws_writes_a_folder_that_listen_runs(enrolled, tmp_path):
    manifest = json.loads((enrolled / "model.json").read_text())
    params = manifest["decoder"]["params"]["enrolled"]
    assert params["labels"] == ["hey ubiq", "lights out"] and params["shots"]["hey ubiq"] == 3
    assert len(params["thresholds"]) == 2 and all(0.75 <= t <= 1.15 for t in params["thresholds"])
    assert "threshold_rule" in params and "combine_rule" in params
    assert manifest["labels"][5] == "hey ubiq"  # the model's own classes are unchanged
    commands = (enrolled / "commands.yaml").read_text()
    assert "wake: hey ubiq" in commands and "lights out: lights out" in commands
    # A new utterance in noise, at a speed and pitch not enrolled: the new phrase is heard.
    talk = np.concatenate(
        [_say("lights out", 125, 40, snr_db=20, seed=1).samples,
         _say("the library opens on monday", 150, 50, snr_db=20, seed=2).samples]
    )  # fmt: skip
    wav, out = tmp_path / "talk.wav", tmp_path / "events.jsonl"
    write_wav(wav, talk, 16000)
    # the command `ubiq learn` printed, on this recording instead of the microphone
    printed = (enrolled.parent / "printed.txt").read_text().split("`")[1]
    words = shlex.split(printed)
    assert words[:4] == ["ubiq", "listen", "--model", str(enrolled)]
    assert words[4:] == ["--source", "mic"]
    code = main([*words[1:4], "--source", str(wav), "--wake", "lights out", "--jsonl",
                 str(out), "--quiet"])  # fmt: skip
    assert code == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    heard = [
        (r["kind"], r["text"]) for r in records if r["kind"] in ("speech.wake", "speech.command")
    ]
    assert heard == [("speech.wake", "lights out")]


def test_enrolled_wake_phrase_is_heard_where_the_model_alone_misses_it(enrolled):
    from importlib.resources import files

    from ubiq.pipelines.speech.commands import load_commands
    from ubiq.pipelines.speech.recognize import ModelCommandRecognizer

    commands = load_commands(files("ubiq.data") / "models" / "ubiq-commands-demo.yaml")
    before = ModelCommandRecognizer("ubiq-commands-demo", commands)
    after = ModelCommandRecognizer(enrolled, load_commands(enrolled / "commands.yaml"))
    takes = [(120, 35), (150, 65), (185, 45), (165, 75)]
    clips = [_utterance("hey ubiq", w, p, 10, seed) for seed, (w, p) in enumerate(takes)]
    heard_before = sum(before.recognize(c).is_wake for c in clips)
    heard_after = sum(after.recognize(c).is_wake for c in clips)
    assert heard_after == len(clips) and heard_before < heard_after


def test_add_keeps_the_old_answers(enrolled, tmp_path):
    from ubiq.models.runtime.kws_enroll import load_enrolled
    from ubiq.models.runtime.tasks import KeywordModel

    out = tmp_path / "mine"
    shutil.copytree(enrolled, out)
    old = KeywordModel.load(out, num_threads=1)
    old_voices = load_enrolled(old.path, old.manifest)
    more = tmp_path / "more"
    _phrase_folder(more, "volume up", "volume up")
    assert main(["learn", "--task", "kws", "--out", str(out), "--add", str(more)]) == 0
    new = KeywordModel.load(out, num_threads=1)
    voices = load_enrolled(new.path, new.manifest)
    assert voices.labels == ("hey ubiq", "lights out", "volume up")
    assert np.array_equal(voices.weights[:2], old_voices.weights)
    assert np.array_equal(voices.thresholds[:2], old_voices.thresholds)
    assert np.array_equal(voices.centre, old_voices.centre)
    for text in ("hey ubiq", "lights out"):
        embedding = new.embed(_utterance(text, 130, 60, 20), 16000)
        assert voices.match(embedding).label == old_voices.match(embedding).label == text
    assert "volume up: volume up" not in (out / "commands.yaml").read_text()  # a model class
    # The same phrase again is refused in one line, and OUT stays as it was.
    before = (out / "voices.npz").read_bytes()
    assert main(["learn", "--task", "kws", "--out", str(out), "--add", str(more)]) != 0
    assert (out / "voices.npz").read_bytes() == before


def _learn(tmp_path, data, *extra):
    return main(["learn", "--task", "kws", "--embedder", "ubiq-commands-demo", "--data",
                 str(data), "--out", str(tmp_path / "out"), *extra])  # fmt: skip


def test_bad_input_is_one_line_and_loses_nothing(tmp_path, capsys):
    data = tmp_path / "data"
    (data / "hey ubiq").mkdir(parents=True)
    assert _learn(tmp_path, data) != 0
    assert "phrase folder" in capsys.readouterr().err and not (tmp_path / "out").exists()
    write_wav(data / "hey ubiq" / "empty.wav", np.zeros(0, np.float32), 16000)
    assert _learn(tmp_path, data) != 0
    err = capsys.readouterr().err
    assert "empty.wav" in err and len(err.strip().splitlines()) == 1
    (data / "hey ubiq" / "empty.wav").unlink()
    (data / "hey ubiq" / "broken.wav").write_bytes(b"RIFF not really a wave file")
    assert _learn(tmp_path, data) != 0
    assert "broken.wav" in capsys.readouterr().err
    (data / "hey ubiq" / "broken.wav").unlink()
    write_wav(data / "hey ubiq" / "take.wav", _say("hey ubiq", 150, 50).samples, 16000)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert _learn(tmp_path, data) != 0  # exists, no --force
    assert "--force" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"
    code = main(["learn", "--task", "kws", "--embedder", "ubiq-det-mnv2", "--data", str(data),
                 "--out", str(tmp_path / "other")])  # fmt: skip
    err = capsys.readouterr().err
    assert code != 0 and "keyword model" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "other").exists()


def test_record_writes_takes_from_the_microphone(tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(Path(__file__).parent / "hardware"))
    try:
        from test_audio_sources import DEVICES, make_fake_sounddevice
    finally:
        sys.path.pop(0)
    module = make_fake_sounddevice(DEVICES)
    monkeypatch.setitem(sys.modules, "sounddevice", module)
    data = tmp_path / "data"
    _phrase_folder(data, "hey ubiq", "hey ubiq")
    code = _learn(tmp_path, data, "--record", "lights out", "--times", "2",
                  "--record-seconds", "0.5", "--mic", "mic:2")  # fmt: skip
    assert code == 0
    takes = sorted((data / "lights out").glob("take-*.wav"))
    assert [p.name for p in takes] == ["take-1.wav", "take-2.wav"]
    from ubiq.models.runtime.audio_features import read_wav

    samples, rate = read_wav(takes[0])
    assert rate == 16000 and len(samples) == 8000 and np.abs(samples).max() > 0.4
    assert [stream.device for stream in module.streams] == [2, 2]
    assert "take 2/2: say 'lights out'" in capsys.readouterr().err
