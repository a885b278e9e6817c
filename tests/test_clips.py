"""Snapshots and clips for alert events, on the real demo clip: names in the events the
JSONL writes, pre-roll and post-roll lengths, H.264, a full disk, the CLI flags."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from support import run_ubiq, small_tmpfs

from ubiq.pipelines.pipeline import Pipeline
from ubiq.pipelines.sinks import JsonlSink
from ubiq.pipelines.sinks.clips import DEFAULT_CLIP_KINDS, ClipRecorder, video_encoder
from ubiq.types import Detections, FrameResult


class Emitter:
    """A stage that finds one box and emits ``kinds[frame]`` at the given frames."""

    name = "rules"

    def __init__(self, kinds: dict[int, str]) -> None:
        self.kinds = kinds

    def __call__(self, result: FrameResult) -> FrameResult:
        result.detections = Detections(
            xyxy=np.array([[100, 100, 300, 320]], np.float32),
            confidence=np.array([0.9], np.float32),
            class_id=np.array([0]),
            labels=("person",),
        )
        if result.index in self.kinds:
            result.add_event(self.kinds[result.index], zone="door")
        return result


def frame_count(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    frames = 0
    while capture.read()[0]:
        frames += 1
    capture.release()
    return frames


def run_demo(tmp_path, recorder: ClipRecorder, kinds: dict[int, str]) -> list[dict]:
    jsonl = tmp_path / "events.jsonl"
    Pipeline([Emitter(kinds), recorder], sinks=[JsonlSink(jsonl)]).run("demo")
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    return [line for line in lines if "kind" in line]


def test_alert_events_carry_their_files_and_clips_span_pre_and_post_roll(tmp_path, ubiq_home):
    recorder = ClipRecorder(tmp_path / "clips", pre_s=1.0, post_s=1.0, wait_for_writer=True)
    events = run_demo(
        tmp_path,
        recorder,
        {60: "zone.intrusion", 70: "alert.manual", 80: "track.start", 140: "line.cross"},
    )
    by_kind = {event["kind"]: event for event in events}
    intrusion, manual = by_kind["zone.intrusion"], by_kind["alert.manual"]
    # The JSONL sink wrote the events with the names: the recorder ran as a stage.
    assert intrusion["clip"] == manual["clip"]  # during the post-roll: one clip, extended
    assert intrusion["snapshot"] != manual["snapshot"]
    assert "clip" not in by_kind["track.start"] and "snapshot" not in by_kind["track.start"]
    assert intrusion["zone"] == "door" and len(intrusion["id"]) == 16
    assert by_kind["line.cross"]["clip"] != intrusion["clip"]
    folder = tmp_path / "clips"
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []
    for event in (intrusion, manual, by_kind["line.cross"]):
        snapshot = cv2.imread(event["snapshot"])
        assert snapshot.shape == (480, 640, 3)
        # The box is drawn: its top edge differs from the frame under it.
        assert Path(event["clip"]).stat().st_size > 10_000
    # Frames 30..60 are the pre-roll of the event at 60; the event at 70 extends the
    # post-roll to frame 100.
    assert frame_count(Path(intrusion["clip"])) == 71
    # The event at 140 gets frames 110..149: the source ended 0.33 s into its post-roll.
    assert frame_count(Path(by_kind["line.cross"]["clip"])) == 40
    assert recorder.clips_written == 2 and recorder.snapshots_written == 3
    assert recorder.frames_dropped == 0 and recorder.write_errors == 0


def test_snapshot_has_the_box_drawn(tmp_path, ubiq_home):
    recorder = ClipRecorder(tmp_path / "clips", pre_s=0.0, post_s=0.0)
    events = run_demo(tmp_path, recorder, {10: "alert.person"})
    snapshot = cv2.imread(events[0]["snapshot"]).astype(int)
    from ubiq.hardware.sources.demo import DemoSource

    with DemoSource() as source:
        raw = next(frame.image for frame in source if frame.index == 10).astype(int)
    # Along the box's left edge the snapshot differs from the raw frame; far from it, not.
    assert np.abs(snapshot[150:300, 100] - raw[150:300, 100]).mean() > 40
    assert np.abs(snapshot[400:470, 500:630] - raw[400:470, 500:630]).mean() < 6


def test_clips_are_h264_where_an_encoder_exists(tmp_path, ubiq_home):
    av = pytest.importorskip("av")
    assert video_encoder().startswith("pyav:")
    recorder = ClipRecorder(tmp_path / "clips", pre_s=0.5, post_s=0.5)
    events = run_demo(tmp_path, recorder, {50: "zone.dwell"})
    with av.open(events[0]["clip"]) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert (stream.width, stream.height) == (640, 480)
        assert float(stream.average_rate) == pytest.approx(30.0)


def test_without_h264_it_falls_back_to_mp4v_and_warns_once(tmp_path):
    script = f"""
import logging, sys
sys.modules["av"] = None  # as on a device without PyAV
import cv2
orig = cv2.VideoWriter_fourcc
cv2.VideoWriter_fourcc = lambda *c: orig(*"XXXX") if "".join(c) == "avc1" else orig(*c)
logging.basicConfig(level=logging.WARNING, format="%(message)s")
from pathlib import Path
from ubiq.pipelines.sinks.clips import open_video_writer, video_encoder
print(video_encoder())
for name in ("a.mp4", "b.mp4"):
    writer = open_video_writer(Path({str(tmp_path)!r}) / name, 30.0, (64, 48))
    writer.write(__import__("numpy").zeros((48, 64, 3), "uint8"))
    writer.close()
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "opencv:mp4v"
    assert result.stderr.count("which browsers may not play") == 1
    assert (tmp_path / "a.mp4").stat().st_size > 0 and (tmp_path / "b.mp4").stat().st_size > 0


def test_ring_buffer_memory_is_bounded(tmp_path, ubiq_home):
    """5 s of 640x480 at 30 FPS, JPEG-encoded: the figure the module's docstring gives."""
    recorder = ClipRecorder(tmp_path / "clips", pre_s=5.0, post_s=0.0, wait_for_writer=True)
    run_demo(tmp_path, recorder, {})
    assert len(recorder._ring) == 150  # the whole 5 s demo clip
    megabytes = recorder.ring_bytes / 1e6
    raw_megabytes = 150 * 640 * 480 * 3 / 1e6
    print(
        f"ring buffer for 5 s of 640x480 at 30 FPS: {megabytes:.1f} MB (raw: {raw_megabytes:.0f})"
    )
    assert 1.0 < megabytes < 12.0


def test_option_errors_name_the_value(tmp_path):
    from ubiq.errors import ConfigError

    with pytest.raises(ConfigError, match="pre_s must be between 0 and 60 seconds, got -1"):
        ClipRecorder(tmp_path, pre_s=-1)
    with pytest.raises(ConfigError, match="kinds must be non-empty"):
        ClipRecorder(tmp_path, kinds=[""])
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="cannot create"):
        ClipRecorder(tmp_path / "file" / "clips")
    assert ClipRecorder(tmp_path, kinds=DEFAULT_CLIP_KINDS).matches("alert.person")


@pytest.fixture
def full_disk(tmp_path):
    """A 200 KB tmpfs: room for a snapshot or two, never for a clip."""
    yield from small_tmpfs(tmp_path, "200k")


def test_a_full_disk_is_one_line_and_the_pipeline_goes_on(tmp_path, full_disk, caplog, ubiq_home):
    recorder = ClipRecorder(full_disk, pre_s=2.0, post_s=1.0)
    with caplog.at_level(logging.ERROR, logger="ubiq.pipelines.sinks.clips"):
        events = run_demo(
            tmp_path, recorder, {index: "zone.intrusion" for index in range(60, 150, 10)}
        )
    assert len(events) == 9  # every event reached the JSONL
    errors = [r.getMessage() for r in caplog.records if "cannot write" in r.getMessage()]
    assert recorder.write_errors >= 1 and recorder.clips_written == 0
    assert 1 <= len(errors) <= 2, errors  # once per failing streak, not per frame
    assert "No space left on device" in errors[0] and "the run goes on" in errors[0]
    assert not [p for p in full_disk.iterdir() if p.name.startswith(".")]  # no partial files


def test_cli_clips_write_h264_files(tmp_path, ubiq_home):
    result = run_ubiq(
        "track", "--source", "demo", "--clips", str(tmp_path / "clips"),
        "--clip-kinds", "track.start", "--clip-pre", "1", "--clip-post", "1",
        "--jsonl", str(tmp_path / "run.jsonl"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    files = sorted(p.name for p in (tmp_path / "clips").iterdir())
    assert [Path(f).suffix for f in files] == [".jpg", ".mp4"], files
    assert "-demo-track.start-" in files[0]
    clip = tmp_path / "clips" / files[1]
    assert frame_count(clip) == 31  # frame 0, then 1 s of post-roll at 30 FPS


def test_cli_events_in_the_jsonl_name_their_files(tmp_path, ubiq_home):
    result = run_ubiq(
        "track", "--source", "demo", "--clips", str(tmp_path / "clips"),
        "--clip-kinds", "track.*", "--jsonl", str(tmp_path / "run.jsonl"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    events = [
        json.loads(line)
        for line in (tmp_path / "run.jsonl").read_text().splitlines()
        if '"kind"' in line
    ]
    assert {e["kind"] for e in events} == {"track.start", "track.end"}
    # Events stages emit when the source ends (the last track.end) come after the last
    # frame went through the stages: they name no files. Every other one does.
    for event in events:
        if event["kind"] == "track.start":
            assert Path(event["snapshot"]).is_file()
    assert Path(next(e for e in events if e["kind"] == "track.start")["clip"]).is_file()


def test_cli_on_a_full_disk_says_so_once_and_the_run_goes_on(tmp_path, full_disk, ubiq_home):
    jsonl = tmp_path / "run.jsonl"
    result = run_ubiq(
        "track", "--source", "demo", "--clips", str(full_disk / "clips"),
        "--clip-kinds", "track.*", "--clip-pre", "2", "--jsonl", str(jsonl),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    errors = [line for line in result.stderr.splitlines() if "cannot write" in line]
    assert len(errors) == 1, result.stderr
    assert str(full_disk / "clips") in errors[0] and "No space left on device" in errors[0]
    assert "the run goes on without snapshots and clips" in errors[0]
    # every event reached the JSONL, with the names it was given
    events = [json.loads(line) for line in jsonl.read_text().splitlines() if '"kind"' in line]
    assert {e["kind"] for e in events} == {"track.start", "track.end"}
    assert not [p for p in (full_disk / "clips").iterdir() if p.name.startswith(".")]


def test_yaml_clip_options_reach_the_recorder(tmp_path, ubiq_home):
    config = tmp_path / "app.yaml"
    config.write_text(
        "app: counter\noutputs:\n"
        f"  clips: {tmp_path / 'clips'}\n  clip_kinds: [track.start]\n"
        "  clip_pre: 0.1\n  clip_post: 0.2\n"
    )
    jsonl = tmp_path / "run.jsonl"
    result = run_ubiq(
        "run", "counter", "--config", str(config), "--max-frames", "40", "--jsonl", str(jsonl)
    )
    assert result.returncode == 0, result.stderr
    clips = sorted((tmp_path / "clips").glob("*-track.start-*.mp4"))
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    starts = sorted({r["frame"] for r in records if r.get("kind") == "track.start"})
    # 0.1 s before and 0.2 s after at the demo's 30 FPS: frames f-3..f+6 (none before 0,
    # none after the last frame, 39); a start during a clip's post-roll extends that clip
    spans: list[list[int]] = []
    for f in starts:
        if spans and f <= spans[-1][1]:
            spans[-1][1] = f + 6
        else:
            spans.append([max(0, f - 3), f + 6])
    expected = sorted(min(end, 39) - start + 1 for start, end in spans)
    assert sorted(frame_count(clip) for clip in clips) == expected, starts
