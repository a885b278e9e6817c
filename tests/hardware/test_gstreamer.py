"""Tests of GStreamer sources (``gst:PIPELINE``, ``csi[:N]``) with real GStreamer pipelines
through PyGObject; the Jetson CSI camera is checked for its one-line error here."""

from __future__ import annotations

import importlib
import json
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from support import run_ubiq

from ubiq.errors import SourceError
from ubiq.hardware.sources import CsiSource, GStreamerSource, gstreamer, open_source
from ubiq.hardware.sources.gstreamer import APPSINK_SUFFIX, CSI_FIX, csi_pipeline, with_appsink

BALL = (
    "videotestsrc num-buffers=30 pattern=ball ! "
    "video/x-raw,width=320,height=240,format=BGR ! appsink name=sink"
)


def _gi_reason() -> str | None:
    """Why PyGObject's Gst cannot be used here, or None when it can."""
    try:
        gi = importlib.import_module("gi")
        gi.require_version("Gst", "1.0")
        importlib.import_module("gi.repository.Gst")
    except (ImportError, ValueError) as error:
        return f"PyGObject with Gst 1.0 is not importable ({error}); see docs/hardware.md"
    return None


needs_gi = pytest.mark.skipif(_gi_reason() is not None, reason=str(_gi_reason()))


@pytest.fixture
def pygobject_route(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forces the PyGObject route even where OpenCV was built with GStreamer."""
    monkeypatch.setattr(gstreamer, "opencv_has_gstreamer", lambda: False)


def _take(source: GStreamerSource, count: int) -> list:
    frames = []
    with source:
        for frame in source:
            frames.append(frame)
            if len(frames) == count:
                break
    return frames


# --- pure helpers (no GStreamer needed) ------------------------------------------------------


def test_with_appsink_keeps_an_appsink_and_appends_one_otherwise() -> None:
    assert with_appsink(BALL) == BALL
    assert with_appsink("videotestsrc ! appsink") == "videotestsrc ! appsink"
    assert with_appsink("videotestsrc ! ") == f"videotestsrc ! {APPSINK_SUFFIX}"
    assert with_appsink("videotestsrc ! fakesink name=appsinky") == (
        f"videotestsrc ! fakesink name=appsinky ! {APPSINK_SUFFIX}"
    )


def test_csi_pipeline_matches_the_jetson_recipe() -> None:
    pipeline = csi_pipeline(1, size=(640, 480), fps=30, flip_method=2)
    assert pipeline == (
        "nvarguscamerasrc sensor-id=1 ! "
        "video/x-raw(memory:NVMM),width=1920,height=1080,framerate=30/1 ! "
        "nvvidconv flip-method=2 ! video/x-raw,width=640,height=480,format=BGRx ! "
        "videoconvert ! video/x-raw,format=BGR ! appsink drop=1 max-buffers=1"
    )
    assert "framerate=29970/1000" in csi_pipeline(0, fps=29.97)


def test_opencv_route_is_taken_when_opencv_has_gstreamer(monkeypatch) -> None:
    opened = []

    class RecordingCapture:
        def __init__(self, *args) -> None:
            opened.append(args)

    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "  GStreamer:   YES (1.22.0)\n")
    monkeypatch.setattr(cv2, "VideoCapture", RecordingCapture)
    assert gstreamer.opencv_has_gstreamer()
    capture = gstreamer.gst_capture_factory("videotestsrc ! appsink")
    assert isinstance(capture, RecordingCapture)
    assert opened == [("videotestsrc ! appsink", cv2.CAP_GSTREAMER)]
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "  GStreamer:   NO\n")
    assert not gstreamer.opencv_has_gstreamer()


def test_missing_pygobject_gives_the_fix_in_one_line(monkeypatch, pygobject_route) -> None:
    monkeypatch.setitem(sys.modules, "gi", None)
    with pytest.raises(SourceError) as info:
        open_source("gst:videotestsrc", reconnect=False).open()
    message = str(info.value)
    assert "PyGObject is not available" in message and 'pip install "pygobject<3.51"' in message
    assert "gir1.2-gstreamer-1.0" in message and "\n" not in message
    with pytest.raises(SourceError, match="^no element nvarguscamerasrc: csi sources need"):
        open_source("csi").open()


def test_empty_pipeline_is_rejected() -> None:
    with pytest.raises(SourceError, match="gst: needs a pipeline, got ''"):
        open_source("gst: ")


# --- real pipelines through PyGObject --------------------------------------------------------


@needs_gi
def test_videotestsrc_ball_delivers_changing_bgr_frames(pygobject_route) -> None:
    source = open_source(f"gst:{BALL}", reconnect=False)
    assert isinstance(source, GStreamerSource) and source.is_live
    with source:
        frames = list(source)
        assert source.fps == pytest.approx(30.0)
        assert source.frame_size == (320, 240)
    assert 10 <= len(frames) <= 30
    assert all(frame.image.shape == (240, 320, 3) for frame in frames)
    assert all(frame.image.dtype == np.uint8 for frame in frames)
    changed = sum(
        not np.array_equal(before.image, after.image)
        for before, after in zip(frames, frames[1:], strict=False)
    )
    assert changed >= len(frames) - 2
    assert frames[0].source_id == f"gst:{BALL}"


@needs_gi
@pytest.mark.parametrize("raw_format", ["BGR", "RGB", "BGRx", "RGBA"])
@pytest.mark.parametrize("width", [320, 321])  # 321 BGR rows are padded to 964 bytes
def test_formats_and_row_padding_give_pure_red(pygobject_route, raw_format, width) -> None:
    pipeline = (
        f"videotestsrc pattern=red num-buffers=3 ! "
        f"video/x-raw,width={width},height=10,format={raw_format} ! appsink name=sink"
    )
    frame = _take(GStreamerSource(pipeline, reconnect=False), 1)[0]
    assert frame.image.shape == (10, width, 3)
    assert (frame.image == (0, 0, 255)).all()


@needs_gi
def test_a_pipeline_without_appsink_gets_one(pygobject_route) -> None:
    source = open_source(
        "gst:videotestsrc is-live=true ! video/x-raw,width=160,height=120", reconnect=False
    )
    assert source.pipeline.endswith(f"! {APPSINK_SUFFIX}")
    frames = _take(source, 3)
    assert [frame.image.shape for frame in frames] == [(120, 160, 3)] * 3


@needs_gi
def test_stop_from_another_thread_ends_an_endless_pipeline(pygobject_route) -> None:
    source = GStreamerSource("videotestsrc is-live=true ! video/x-raw,width=64,height=48")
    source.open()
    threading.Timer(0.3, source.stop).start()
    started = time.monotonic()
    count = sum(1 for _ in source)
    source.close()
    assert count >= 2 and time.monotonic() - started < 3.0


@needs_gi
def test_unknown_element_is_one_line(pygobject_route) -> None:
    with pytest.raises(SourceError) as info:
        open_source("gst:nosuchelement ! appsink", reconnect=False).open()
    message = str(info.value)
    assert message.startswith('GStreamer pipeline does not parse: no element "nosuchelement"')
    assert "\n" not in message


@needs_gi
def test_runtime_error_on_the_bus_is_one_line(pygobject_route, tmp_path: Path) -> None:
    missing = tmp_path / "missing.mp4"
    with pytest.raises(SourceError, match="^GStreamer error from filesrc0: Resource not found"):
        open_source(f"gst:filesrc location={missing} ! decodebin", reconnect=False).open()


@needs_gi
def test_unconvertible_format_names_the_fix(pygobject_route) -> None:
    pipeline = "videotestsrc num-buffers=2 ! video/x-raw,format=I420 ! appsink name=sink"
    with pytest.raises(
        SourceError, match="in a format ubiq reads .*end the pipeline with 'videoconvert"
    ):
        GStreamerSource(pipeline, reconnect=False).open()
    # Without caps of its own the appsink asks for a format ubiq reads: videoconvert obliges.
    frame = _take(
        GStreamerSource("videotestsrc num-buffers=2 ! videoconvert ! appsink", reconnect=False), 1
    )[0]
    assert frame.image.ndim == 3 and frame.image.shape[2] == 3 and frame.image.dtype == np.uint8


@needs_gi
def test_csi_on_a_machine_without_nvarguscamerasrc_is_one_line(pygobject_route) -> None:
    source = open_source("csi:1")
    assert isinstance(source, CsiSource) and "sensor-id=1" in source.pipeline
    with pytest.raises(SourceError) as info:
        source.open()
    if "no element nvarguscamerasrc" not in str(info.value):
        pytest.fail(f"unexpected message: {info.value}")
    assert str(info.value) == CSI_FIX


@needs_gi
def test_cli_detect_reads_a_gstreamer_pipeline(blazeface_path: Path, tmp_path: Path) -> None:
    jsonl = tmp_path / "out.jsonl"
    pipeline = (
        "gst:videotestsrc num-buffers=20 ! video/x-raw,width=320,height=240 ! videoconvert ! "
        "video/x-raw,format=BGR ! appsink name=sink"
    )
    result = run_ubiq(
        "detect",
        "--source",
        pipeline,
        "--model",
        str(blazeface_path),
        "--max-frames",
        "10",
        "--jsonl",
        str(jsonl),
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(records) == 10


@needs_gi
def test_a_finite_pipeline_plays_once_and_a_live_one_reconnects(
    blazeface_path: Path, tmp_path: Path
) -> None:
    from ubiq.hardware.sources import is_finite_pipeline

    # num-buffers=N ends by itself: no --max-frames, the run stops at its end-of-stream.
    jsonl = tmp_path / "out.jsonl"
    finite = "videotestsrc num-buffers=7 ! videoconvert ! video/x-raw,format=BGR ! appsink"
    result = run_ubiq(
        "detect",
        "--source",
        f"gst:{finite}",
        "--model",
        str(blazeface_path),
        "--jsonl",
        str(jsonl),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert len(jsonl.read_text().splitlines()) == 7
    assert "stopped by end" in result.stderr and "dropped (" not in result.stderr
    assert is_finite_pipeline(finite) and is_finite_pipeline("filesrc location=a.mp4 ! decodebin")
    assert not is_finite_pipeline("rtspsrc location=rtsp://cam/1 ! decodebin")
    assert open_source(f"gst:{finite}").reconnect is False
    assert open_source("gst:v4l2src device=/dev/video0").reconnect is True
    # --reconnect restarts even a finite pipeline: --max-frames has to stop it.
    assert open_source(f"gst:{finite}", reconnect=True).reconnect is True
    looped = run_ubiq(
        "detect",
        "--source",
        f"gst:{finite}",
        "--model",
        str(blazeface_path),
        "--reconnect",
        "--max-frames",
        "12",
        timeout=60,
    )
    assert looped.returncode == 0, looped.stderr
    assert "12 frames" in looped.stderr


def test_sigterm_while_a_source_opens_closes_it_cleanly(blazeface_path):
    pytest.importorskip("gi", reason="PyGObject is not installed")
    import signal
    import subprocess
    import sys
    import time

    # appsrc never produces a frame: the source is stuck in its first read when stopped.
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ubiq",
            "detect",
            "--model",
            str(blazeface_path),
            "--source",
            "gst:appsrc ! videoconvert ! video/x-raw,format=BGR ! appsink",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(2.0)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "stopped by signal while opening" in stderr
