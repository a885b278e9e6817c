"""Tests of the Pi camera source (``picam[:N]``) against the fake picamera2, plus real-device
tests that run only where picamera2 imports for real."""

from __future__ import annotations

import importlib
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from support import run_ubiq

from ubiq.errors import ConfigError, SourceError
from ubiq.hardware.fakes import picamera2 as fake_picamera2
from ubiq.hardware.sources import PicamSource, open_source
from ubiq.hardware.sources.picam import PICAM_FORMATS, picamera_to_bgr

SIZE = (64, 48)
BGR_RED = (0, 0, 255)


@pytest.fixture
def fake_picam(monkeypatch: pytest.MonkeyPatch):
    """Installs the fake picamera2 module with one camera; yields the module."""
    fake_picamera2.reset()
    monkeypatch.setitem(sys.modules, "picamera2", fake_picamera2)
    yield fake_picamera2
    for camera in fake_picamera2.instances:
        camera.close()
    fake_picamera2.reset()


def _picamera2_really_imports() -> bool:
    """Whether the real picamera2 (with libcamera) imports; the fake is never installed here."""
    try:
        importlib.import_module("picamera2")
    except ImportError:
        return False
    return True


# --- the fake follows the real API --------------------------------------------------------


def test_fake_reports_cameras_like_the_real_library(fake_picam) -> None:
    info = fake_picam.Picamera2.global_camera_info()
    assert len(info) == 1
    assert set(info[0]) == {"Model", "Location", "Rotation", "Id", "Num"}
    camera = fake_picam.Picamera2(0)
    config = camera.create_video_configuration(
        main={"size": (320, 240), "format": "RGB888"}, controls={"FrameRate": 15}
    )
    assert config["main"]["size"] == (320, 240) and config["main"]["stride"] == 960
    assert config["controls"]["FrameRate"] == 15 and config["use_case"] == "video"
    with pytest.raises(RuntimeError, match="started"):
        camera.capture_array("main")
    camera.configure(config)
    camera.start()
    assert camera.capture_array("main").shape == (240, 320, 3)
    with pytest.raises(RuntimeError, match="Device or resource busy"):
        fake_picam.Picamera2(0)
    camera.close()
    with pytest.raises(IndexError):
        fake_picam.Picamera2(1)


@pytest.mark.parametrize(
    ("stream_format", "channels", "red_bytes"),
    [("RGB888", 3, (0, 0, 255)), ("BGR888", 3, (255, 0, 0)), ("XRGB8888", 4, (0, 0, 255, 255))],
)
def test_fake_arrays_have_the_real_channel_order(
    fake_picam, stream_format: str, channels: int, red_bytes: tuple[int, ...]
) -> None:
    camera = fake_picam.Picamera2(0)
    camera.configure(
        camera.create_video_configuration(main={"size": SIZE, "format": stream_format})
    )
    camera.start()
    array = camera.capture_array()
    assert array.shape == (SIZE[1], SIZE[0], channels)
    x0, y0, _, _ = fake_picam.scene_region(SIZE)
    assert tuple(array[y0, x0]) == red_bytes


# --- the source -----------------------------------------------------------------------------


@pytest.mark.parametrize("stream_format", PICAM_FORMATS)
def test_frames_are_bgr_with_the_red_patch_in_place(fake_picam, stream_format: str) -> None:
    source = open_source(f"picam?size={SIZE[0]}x{SIZE[1]}&fps=100&format={stream_format}")
    assert isinstance(source, PicamSource) and source.is_live
    with source:
        frame = next(iter(source))
        assert source.frame_size == SIZE and source.fps == pytest.approx(100.0)
    image = frame.image
    assert image.shape == (SIZE[1], SIZE[0], 3) and image.dtype == np.uint8
    assert image.flags["C_CONTIGUOUS"]
    x0, y0, x1, y1 = fake_picam.scene_region(SIZE)
    assert (image[y0:y1, x0:x1] == BGR_RED).all()
    background = image.copy()
    background[y0:y1, x0:x1] = fake_picam.BACKGROUND_LEVEL
    background[: fake_picam.COUNTER_BLOCK_PX, : fake_picam.COUNTER_BLOCK_PX] = 64
    assert (background == fake_picam.BACKGROUND_LEVEL).all()
    assert frame.source_id == "picam:0"
    camera = fake_picam.instances[-1]
    assert camera.camera_config["main"] == {
        "format": stream_format,
        "size": SIZE,
        "stride": camera.camera_config["main"]["stride"],
        "framesize": camera.camera_config["main"]["framesize"],
    }
    assert camera.camera_config["controls"]["FrameRate"] == 100.0


def test_default_is_rgb888_at_640x480_30fps(fake_picam) -> None:
    with open_source("picam") as source:
        frame = next(iter(source))
    assert frame.image.shape == (480, 640, 3)
    config = fake_picam.instances[-1].camera_config
    assert config["main"]["format"] == "RGB888" and config["controls"]["FrameRate"] == 30.0


def test_only_the_latest_frame_is_kept_for_a_slow_consumer(fake_picam) -> None:
    source = PicamSource(0, size=SIZE, fps=200)
    frames = []
    with source:
        for frame in source:
            frames.append(frame)
            if len(frames) == 5:
                break
            time.sleep(0.05)
        captured = fake_picam.instances[-1].frames_captured
    indices = [frame.index for frame in frames]
    assert indices == sorted(indices) and indices[-1] - indices[0] > 8
    assert source.dropped_frames > 0
    counters = [int(frame.image[0, 0, 1]) for frame in frames]
    assert counters == sorted(counters) and counters[-1] >= captured - 15


def test_close_and_stop_call_stop_then_close_on_the_camera(fake_picam) -> None:
    source = PicamSource(0, size=SIZE, fps=100)
    source.open()
    camera = fake_picam.instances[-1]
    threading.Timer(0.1, source.stop).start()
    started = time.monotonic()
    count = sum(1 for _ in source)
    assert count >= 1 and time.monotonic() - started < 2.0
    source.close()
    assert camera.calls[-2:] == ["stop", "close"] and camera.is_closed
    source.close()  # twice is harmless
    assert camera.calls.count("close") == 1


def test_a_failing_camera_is_reopened(fake_picam) -> None:
    fake_picam.fail_after_frames = 3
    source = PicamSource(0, size=SIZE, fps=200, backoff_initial_s=0.01, stale_after_s=1.0)
    with source:
        frames = []
        for frame in source:
            frames.append(frame)
            if source.reconnects >= 1 and len(frames) >= 4:
                break
    assert source.reconnects >= 1
    assert len(fake_picam.instances) >= 2
    assert all(camera.is_closed for camera in fake_picam.instances)


def test_camera_index_out_of_range_names_the_index_and_the_count(fake_picam) -> None:
    with pytest.raises(SourceError, match=r"pi camera 2 not found: 1 camera\(s\) exist") as info:
        open_source("picam:2").open()
    assert "picam:0" in str(info.value) and "\n" not in str(info.value)
    fake_picam.reset(cameras=[])
    with pytest.raises(SourceError, match="libcamera sees no camera"):
        open_source("picam").open()


def test_a_busy_camera_gives_one_line(fake_picam) -> None:
    holder = fake_picam.Picamera2(0)
    with pytest.raises(SourceError, match="^cannot acquire pi camera 0: .*busy"):
        PicamSource(0, size=SIZE, reconnect=False).open()
    holder.close()


def test_second_camera_and_options(fake_picam) -> None:
    fake_picam.reset(cameras=[*fake_picam.CAMERAS, {**fake_picam.CAMERAS[0], "Num": 1}])
    with open_source("picam:1?size=80x60&fps=50&format=BGR888") as source:
        frame = next(iter(source))
    assert frame.image.shape == (60, 80, 3) and frame.source_id == "picam:1"
    assert fake_picam.instances[-1].camera_num == 1


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("picam?size=big", "size in source 'picam\\?size=big' must be WIDTHxHEIGHT"),
        ("picam?zoom=2", "unknown option 'zoom'"),
        ("picam?format=YUV420", "stream_format must be one of RGB888"),
        ("picam?fps=0", "fps must be a positive number, got 0.0"),
    ],
)
def test_bad_options_are_config_errors(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_source(spec)


def test_missing_picamera2_gives_the_apt_fix_in_one_line(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import raises ImportError
    with pytest.raises(SourceError) as info:
        open_source("picam").open()
    message = str(info.value)
    assert message.startswith("picamera2 is not importable (")
    assert "sudo apt install python3-picamera2" in message
    assert "python3 -m venv --system-site-packages" in message
    assert "\n" not in message


def test_array_of_the_wrong_shape_is_a_source_error() -> None:
    with pytest.raises(SourceError, match=r"shape \(4, 4, 3\) for format XRGB8888"):
        picamera_to_bgr(np.zeros((4, 4, 3), np.uint8), "XRGB8888")


@pytest.mark.skipif(_picamera2_really_imports(), reason="picamera2 is installed here")
def test_cli_detect_on_picam_without_picamera2_prints_one_line(blazeface_path: Path) -> None:
    result = run_ubiq("detect", "--source", "picam", "--model", str(blazeface_path))
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "python3-picamera2" in lines[0] and "Traceback" not in result.stderr


# --- real device ----------------------------------------------------------------------------


@pytest.mark.hardware("pi_camera")
def test_real_pi_camera_gives_bgr_frames() -> None:
    if not _picamera2_really_imports():
        pytest.skip("picamera2 is not importable: no Raspberry Pi camera stack here")
    picamera2 = importlib.import_module("picamera2")
    if not picamera2.Picamera2.global_camera_info():
        pytest.skip("picamera2 imports but libcamera sees no camera")
    with PicamSource(0, size=(640, 480), fps=30) as source:
        frames = []
        for frame in source:
            frames.append(frame)
            if len(frames) == 10:
                break
    assert [frame.image.shape for frame in frames] == [(480, 640, 3)] * 10
    assert source.fps == pytest.approx(30.0)
    assert frames[-1].timestamp_ns > frames[0].timestamp_ns
