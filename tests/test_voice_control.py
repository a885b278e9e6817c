"""``voice-control``: espeak-ng speech says the commands, the real CLI and the Python API run
the camera app on the demo clip, and the pictures, recordings and events are checked."""

from __future__ import annotations

import importlib.util
import json
import shlex
import shutil
import subprocess
import sys
import threading

import cv2
import numpy as np
import pytest
from support import REPO, run_ubiq

from ubiq.apps.config import VoiceConfig
from ubiq.apps.voice_control import VoiceListener, action_of, load_voice_commands
from ubiq.errors import ConfigError, SourceError
from ubiq.hardware.sources import open_source
from ubiq.types import Event

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
needs_sphinx = pytest.mark.skipif(
    importlib.util.find_spec("pocketsphinx") is None,
    reason="the [speech] extra (pocketsphinx) is not installed",
)

SAID = ("take a picture", "start recording", "stop recording")
FPS, SIZE = 30.0, (640, 480)  # the demo clip: 150 frames

SSML = (
    '<speak>take a picture <break time="700ms"/> start recording <break time="700ms"/> '
    "stop recording</speak>"
)
README_BLOCK = (
    f"espeak-ng -v en-us -s 150 -m -w talk.wav '{SSML}'\n"
    "ubiq run voice-control --source demo --audio talk.wav "
    "--jsonl runs/voice-control/events.jsonl\n"
)
"""The commands of the README's voice-control block (/tmp/readme_voice.md), run as written."""


@pytest.fixture(scope="module")
def talk(tmp_path_factory):
    """The three commands spoken into one WAV, 0.4 s apart; returns (path, [(start, end)])."""
    from ubiq.models.datasets.commands import make_clip
    from ubiq.models.runtime.audio_features import write_wav

    rng = np.random.default_rng(0)
    parts, bounds, offset = [], [], 0.0
    for text in SAID:
        clip = make_clip(text, "en-us", 170, 50, snr_db=None, lead_s=0.4, tail_s=0.2, rng=rng)
        parts.append(clip.samples)
        bounds.append((offset + clip.t_start, offset + clip.t_end))
        offset += clip.duration_s
    parts.append(np.zeros(8000, np.float32))
    path = tmp_path_factory.mktemp("talk") / "talk.wav"
    write_wav(path, np.concatenate(parts), 16000)
    assert offset < 4.8  # every command is said, and heard, within the 5 s demo clip
    return path, bounds


@pytest.fixture(scope="module")
def demo_frames():
    with open_source("demo") as source:
        return [frame.image for frame in source]


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def decoded(path):
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image)
    capture.release()
    return frames


def difference(a, b) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def nearest(image, frames, around: int, reach: int = 3) -> int:
    """The index of the demo frame, within ``reach`` of ``around``, that ``image`` is."""
    indices = range(max(0, around - reach), min(len(frames), around + reach + 1))
    return min(indices, key=lambda index: difference(image, frames[index]))


@needs_espeak
@needs_sphinx
def test_spoken_commands_take_a_picture_and_record_through_the_cli(talk, demo_frames, tmp_path):
    wav, bounds = talk
    jsonl = tmp_path / "events.jsonl"
    result = run_ubiq(
        "run", "voice-control", "--source", "demo", "--audio", str(wav), "--jsonl", str(jsonl),
        "--max-frames", "150", "--set", f"outputs.snapshots={tmp_path / 'pictures'}",
        "--set", f"outputs.recordings={tmp_path / 'recordings'}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "voice.snapshot 1" in result.stderr and "150 frames" in result.stderr
    lines = records(jsonl)
    events = [r for r in lines if "kind" in r]
    assert [e["kind"] for e in events] == [
        "speech.command", "voice.snapshot",
        "speech.command", "recording.start",
        "speech.command", "recording.stop",
    ]  # fmt: skip
    commands = events[0::2]
    assert [c["text"] for c in commands] == list(SAID)
    assert [c["intent"] for c in commands] == ["picture", "recording", "recording"]
    assert [c["slots"] for c in commands] == [{}, {"action": "start"}, {"action": "stop"}]
    for command, action, (start, end) in zip(commands, events[1::2], bounds, strict=True):
        assert action["frame"] == command["frame"]  # acted on the frame the command reached
        assert abs(command["t_start"] - start) < 0.15 and abs(command["t_end"] - end) < 0.2
        # the video waited for the audio: a command acts once its words have ended, and
        # no later than the VAD's end of speech (about 0.3 s) plus one frame
        assert end <= command["frame"] / FPS <= end + 0.6, (command, end)

    picture = cv2.imread(events[1]["path"])
    assert picture is not None and picture.shape == (SIZE[1], SIZE[0], 3)
    index = events[1]["frame"]
    # the frame the command reached, not a neighbour ...
    assert nearest(picture, demo_frames, index) == index
    # ... with the detector's boxes drawn
    (frame_record,) = [r for r in lines if r.get("frame") == index and "detections" in r]
    box = max(frame_record["detections"], key=lambda d: d["confidence"])
    x1, y1, x2, y2 = (int(round(v)) for v in box["xyxy"])
    edge = difference(picture[y1 + 5 : y2 - 5, x1], demo_frames[index][y1 + 5 : y2 - 5, x1])
    assert edge > 25, edge

    start, stop = events[3], events[5]
    assert start["path"] == stop["path"] and start["path"].endswith(".mp4")
    frames = stop["frame"] - start["frame"]
    assert stop["frames"] == frames and stop["seconds"] == pytest.approx(frames / FPS, abs=1e-3)
    recorded = decoded(stop["path"])
    assert len(recorded) == frames and 30 <= frames <= 60
    assert recorded[0].shape == (SIZE[1], SIZE[0], 3)
    # from the frame "start recording" reached to the one before "stop recording" reached
    assert nearest(recorded[0], demo_frames, start["frame"]) == start["frame"]
    assert nearest(recorded[-1], demo_frames, stop["frame"] - 1) == stop["frame"] - 1
    capture = cv2.VideoCapture(stop["path"])
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(FPS)
    capture.release()


@needs_espeak
@needs_sphinx
def test_a_recording_open_when_the_video_ends_is_closed_from_python(talk, demo_frames, tmp_path):
    from ubiq.apps.app import App

    wav, _ = talk
    app = App.from_yaml(
        app="voice-control",
        overrides=[
            f"audio={wav}",
            "model=none",  # the video alone: frames are recorded as they are
            "cameras.0.source=demo",
            f"outputs.snapshots={tmp_path / 'pictures'}",
            f"outputs.recordings={tmp_path / 'recordings'}",
        ],
    )
    events = []
    (summary,) = app.run(max_frames=120, on_event=events.append)
    assert summary.frames == 120
    # "stop recording" is heard after frame 120: the end of the run closes the recording
    assert [e.kind for e in events] == [
        "speech.command", "voice.snapshot", "speech.command", "recording.start", "recording.stop"
    ]  # fmt: skip
    start, stop = events[3], events[4]
    assert stop.payload["path"] == start.payload["path"]
    recorded = decoded(stop.payload["path"])
    assert len(recorded) == stop.payload["frames"] > 0
    started = 120 - stop.payload["frames"]
    assert stop.payload["seconds"] == pytest.approx(stop.payload["frames"] / FPS, abs=1e-3)
    assert nearest(recorded[0], demo_frames, started) == started
    assert nearest(recorded[-1], demo_frames, 119) == 119
    # the audio thread stopped with the video, though the WAV goes on
    assert app.listener._thread is not None and not app.listener._thread.is_alive()
    assert not app.listener.source.is_open
    assert "ubiq-voice" not in [t.name for t in threading.enumerate()]


@pytest.mark.parametrize("case", ["missing", "empty", "no samples"])
def test_a_bad_audio_file_is_one_line_and_loses_nothing(case, tmp_path):
    import wave

    wav = tmp_path / "talk.wav"
    if case == "empty":
        wav.write_bytes(b"")
    elif case == "no samples":
        with wave.open(str(wav), "wb") as handle:
            handle.setnchannels(1)
            handle.setsampwidth(2)
            handle.setframerate(16000)
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_text('{"kind":"voice.snapshot","path":"earlier.jpg"}\n')
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    (pictures / "earlier.jpg").write_bytes(b"an earlier picture")
    result = run_ubiq(
        "run", "voice-control", "--source", "demo", "--audio", str(wav), "--jsonl", str(jsonl),
        "--set", f"outputs.snapshots={pictures}",
        "--set", f"outputs.recordings={tmp_path / 'recordings'}",
    )  # fmt: skip
    assert result.returncode not in (0, 134), result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(wav) in lines[0], result.stderr
    assert {"missing": "not found", "empty": "empty", "no samples": "no samples"}[case] in lines[0]
    assert jsonl.read_text() == '{"kind":"voice.snapshot","path":"earlier.jpg"}\n'
    assert [p.name for p in pictures.iterdir()] == ["earlier.jpg"]
    assert (pictures / "earlier.jpg").read_bytes() == b"an earlier picture"
    assert not (tmp_path / "recordings").exists()  # nothing was opened for writing


def test_flags_and_config_errors_are_one_line(tmp_path):
    from ubiq.apps.app import App

    with pytest.raises(ConfigError, match=r"voice\.comands: unknown key"):
        App.from_yaml(app="voice-control", overrides=["voice.comands=x.txt"])
    with pytest.raises(ConfigError, match="voice-control drives one camera, got 2"):
        App.from_yaml(app="voice-control", overrides=["cameras=[{source: demo}, {source: demo}]"])
    result = run_ubiq("run", "counter", "--source", "demo", "--audio", "talk.wav")
    assert result.returncode != 0
    assert result.stderr.strip() == "ubiq run: error: --audio: counter does not listen " + (
        "(voice-control does)"
    )
    listed = run_ubiq("apps", "list")
    assert listed.returncode == 0
    (line,) = [x for x in listed.stdout.splitlines() if x.startswith("voice-control ")]
    assert line.endswith(f"({REPO / 'apps' / 'voice_control.yaml'})")


def test_which_commands_act(tmp_path):
    def command(text, intent, slots=None):
        fields = {"text": text, "intent": intent, "slots": slots or {}}
        return Event("speech.command", 0, "mic", fields)

    assert action_of(command("take a photo", "picture")) == "picture"
    assert action_of(command("stop recording", "recording", {"action": "stop"})) == "stop"
    assert action_of(command("start recording", "start recording")) == "start"  # a .txt line
    assert action_of(command("turn on the kitchen light", "light")) is None
    assert action_of(Event("speech.wake", 0, "mic", {"text": "take a picture"})) is None
    built_in = load_voice_commands(VoiceConfig())
    assert set(built_in.texts) == {"take a picture", "take a photo", *SAID[1:]}
    assert load_voice_commands(VoiceConfig(wake="hey ubiq")).wake == "hey ubiq"
    unrelated = tmp_path / "commands.txt"
    unrelated.write_text("what time is it\nturn on the light\n")
    with pytest.raises(ConfigError, match="has no picture or recording command"):
        load_voice_commands(VoiceConfig(commands=str(unrelated)))
    # the shipped demo model's commands: its "recording" intent acts
    demo = REPO / "ubiq" / "data" / "models" / "ubiq-commands-demo.yaml"
    assert load_voice_commands(VoiceConfig(commands=str(demo))).wake == "hey ubiq"


class _Chunk:
    def __init__(self, end_s):
        self.end_s = end_s


class _Source:
    source_id, is_live = "talk.wav", False

    def __init__(self, count, fail_at=None):
        self.count, self.fail_at = count, fail_at
        self.stopped = self.is_open = False

    def __iter__(self):
        self.is_open = True
        for number in range(1, self.count + 1):
            if self.stopped:
                return
            if number == self.fail_at:
                raise SourceError("arecord stopped: device lost")
            yield _Chunk(number / 10)

    def stop(self):
        self.stopped = True

    def close(self):
        self.is_open = False


class _Pipeline:
    """Hears a command in chunk 12 (ready at 1.2 s) and one more at the end."""

    def feed(self, chunk):
        if abs(chunk.end_s - 1.2) < 1e-9:
            return [Event("speech.start", 0, "a"), Event("speech.command", 0, "a", {"n": 1})]
        return []

    def flush(self):
        return [Event("speech.command", 0, "a", {"n": 2})]


def test_the_listener_hands_over_commands_by_audio_time():
    listener = VoiceListener(_Source(30), _Pipeline(), sync=True)
    listener.start()
    assert listener.take(1.19) == []  # waits for the audio to reach 1.19 s: nothing yet
    assert [e.payload["n"] for e in listener.take(1.2)] == [1]  # the voice activity stays
    assert [e.payload["n"] for e in listener.take(99.0)] == [2]  # flushed at the end
    listener.stop()
    failing = VoiceListener(_Source(30, fail_at=5), _Pipeline(), sync=True)
    failing.start()
    with pytest.raises(SourceError, match="device lost"):
        failing.take(2.0)
    failing.stop()


@needs_espeak
@needs_sphinx
def test_the_readme_block(tmp_path):
    readme = (REPO / "README.md").read_text()
    if "ubiq run voice-control" in readme:  # once merged, the README says the same
        assert README_BLOCK in readme
    for line in README_BLOCK.splitlines():
        words = shlex.split(line)
        if words[0] == "ubiq":
            words = [sys.executable, "-m", "ubiq", *words[1:]]
        result = subprocess.run(
            words, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
        )
        assert result.returncode == 0, (words, result.stderr)
    kinds = [
        r["kind"] for r in records(tmp_path / "runs/voice-control/events.jsonl") if "kind" in r
    ]
    assert kinds.count("speech.command") == 3 and "recording.stop" in kinds
    assert len(list((tmp_path / "runs/voice-control/pictures").glob("*.jpg"))) == 1
    assert len(list((tmp_path / "runs/voice-control/recordings").glob("*.mp4"))) == 1


@needs_espeak
@needs_sphinx
def test_a_full_disk_ends_the_recording_and_keeps_what_is_written(talk, tmp_path, monkeypatch):
    from ubiq.apps.app import App
    from ubiq.pipelines.sinks import clips

    opened = clips.open_video_writer

    def filling(path, fps, size):
        writer = opened(path, fps, size)
        real_write, calls = writer.write, []

        def write(image):
            calls.append(1)
            if len(calls) == 10:
                raise OSError(28, "No space left on device")
            real_write(image)

        writer.write = write
        return writer

    monkeypatch.setattr(clips, "open_video_writer", filling)
    app = App.from_yaml(
        app="voice-control",
        overrides=[
            f"audio={talk[0]}",
            "model=none",
            f"outputs.recordings={tmp_path}",
            f"outputs.snapshots={tmp_path}",
        ],
    )
    events = []
    app.run(on_event=events.append)
    kinds = [e.kind for e in events]
    assert kinds[3:5] == ["recording.start", "recording.stop"] and len(kinds) == 6
    stop = events[4]
    assert stop.payload["frames"] == 9 and stop.payload["seconds"] == pytest.approx(0.3)
    assert len(decoded(stop.payload["path"])) == 9  # the file is closed and plays
    assert action_of(events[5]) == "stop"  # "stop recording" later finds nothing to stop


def test_a_sound_file_beside_a_live_camera_is_replayed_at_real_time(tmp_path):
    from ubiq.apps.app import App
    from ubiq.models.runtime.audio_features import write_wav

    wav = tmp_path / "quiet.wav"
    write_wav(wav, np.zeros(16000, np.float32), 16000)
    app = App.from_yaml(app="voice-control", overrides=[f"audio={wav}", "model=none"])
    for video_live, realtime, sync in ((True, True, False), (False, False, True)):
        listener = app.open_listener(video_live=video_live)
        assert (listener.source.realtime, listener.sync) == (realtime, sync)
        listener.stop()
        assert not listener.source.is_open
