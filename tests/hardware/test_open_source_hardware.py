"""Tests of ``open_source`` spec parsing for hardware cameras: picam, csi, gst, USB by name."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ubiq.errors import ConfigError, SourceError
from ubiq.hardware import devices
from ubiq.hardware.devices import VideoDevice
from ubiq.hardware.sources import (
    CsiSource,
    DemoSource,
    GStreamerSource,
    PicamSource,
    WebcamSource,
    open_source,
)
from ubiq.hardware.sources.gstreamer import APPSINK_SUFFIX

CAMERAS = [
    VideoDevice("/dev/video0", 0, "Integrated Camera: Integrated C"),
    VideoDevice("/dev/video1", 1, "Integrated Camera: Integrated C"),
    VideoDevice("/dev/video2", 2, "HD Pro Webcam C920"),
    VideoDevice("/dev/video3", 3, "HD Pro Webcam C920"),
]


@pytest.fixture
def cameras(monkeypatch: pytest.MonkeyPatch) -> list[VideoDevice]:
    """Makes ``list_video_devices`` report a laptop camera and a C920 (two nodes each)."""
    found = list(CAMERAS)
    monkeypatch.setattr(devices, "list_video_devices", lambda root=Path("/"): found)
    return found


@pytest.mark.parametrize(
    ("spec", "camera_num", "size", "fps", "stream_format"),
    [
        ("picam", 0, (640, 480), 30.0, "RGB888"),
        ("picam:1", 1, (640, 480), 30.0, "RGB888"),
        ("picam:0?size=1280x720&fps=15&format=XRGB8888", 0, (1280, 720), 15.0, "XRGB8888"),
    ],
)
def test_picam_specs(spec, camera_num, size, fps, stream_format) -> None:
    source = open_source(spec, vid_stride=2, reconnect=False, stale_after_s=3.0)
    assert isinstance(source, PicamSource)
    assert (source.camera_num, source.size, source.requested_fps) == (camera_num, size, fps)
    assert source.stream_format == stream_format and source.source_id == f"picam:{camera_num}"
    assert (source.vid_stride, source.reconnect, source.stale_after_s) == (2, False, 3.0)
    assert not source.is_open  # nothing opens before it is entered


@pytest.mark.parametrize(("spec", "sensor_id"), [("csi", 0), ("csi:0", 0), ("csi:2", 2)])
def test_csi_specs(spec: str, sensor_id: int) -> None:
    source = open_source(spec)
    assert isinstance(source, CsiSource) and source.sensor_id == sensor_id
    assert source.pipeline.startswith(f"nvarguscamerasrc sensor-id={sensor_id} ! ")
    assert "width=1280,height=720" in source.pipeline


def test_csi_options() -> None:
    source = open_source("csi:1?size=640x480&fps=60&flip=2")
    assert "flip-method=2" in source.pipeline and "framerate=60/1" in source.pipeline
    assert "width=640,height=480,format=BGRx" in source.pipeline
    with pytest.raises(ConfigError, match="unknown option 'format' in source 'csi\\?format=BGR'"):
        open_source("csi?format=BGR")
    with pytest.raises(ConfigError, match="flip in source 'csi\\?flip=x' must be a number"):
        open_source("csi?flip=x")


def test_gst_spec_keeps_the_whole_pipeline() -> None:
    source = open_source("gst:rtspsrc location=rtsp://cam/stream latency=200 ! decodebin")
    assert isinstance(source, GStreamerSource)
    assert source.pipeline == (
        f"rtspsrc location=rtsp://cam/stream latency=200 ! decodebin ! {APPSINK_SUFFIX}"
    )
    assert source.source_id == "gst:rtspsrc location=rtsp://cam/stream latency=200 ! decodebin"


def test_usb_by_exact_or_partial_name(cameras) -> None:
    source = open_source("usb:HD Pro Webcam C920")
    assert isinstance(source, WebcamSource) and source.device == "/dev/video2"
    assert open_source("usb:c920").device == "/dev/video2"
    assert open_source("usb:integrated").device == "/dev/video0"


def test_bare_camera_name_falls_back_to_usb(cameras) -> None:
    source = open_source("C920")
    assert isinstance(source, WebcamSource) and source.device == "/dev/video2"


def test_usb_without_a_match_lists_the_names_found(cameras) -> None:
    with pytest.raises(SourceError) as info:
        open_source("usb:Brio")
    message = str(info.value)
    assert message.startswith("no camera named 'Brio'; cameras found: ")
    assert "HD Pro Webcam C920 (/dev/video2)" in message and "Integrated Camera" in message


def test_usb_with_an_ambiguous_name_lists_the_candidates(cameras) -> None:
    with pytest.raises(SourceError, match="camera name 'cam' is ambiguous: HD Pro.*; Integrated"):
        open_source("usb:cam")


def test_usb_without_cameras(monkeypatch) -> None:
    monkeypatch.setattr(devices, "list_video_devices", lambda root=Path("/"): [])
    with pytest.raises(SourceError, match="^no camera named 'C920': no cameras found$"):
        open_source("usb:C920")
    with pytest.raises(SourceError, match="^usb: needs a camera name"):
        open_source("usb:")


def test_missing_file_still_says_file_not_found(cameras, caplog) -> None:
    with (
        caplog.at_level(logging.DEBUG, logger="ubiq.hardware.sources"),
        pytest.raises(SourceError, match="^source file not found: Brio$"),
    ):
        open_source("Brio")
    assert "no camera named 'Brio'" in caplog.text
    with pytest.raises(SourceError, match="^source file not found: clip.mp4$"):
        open_source("clip.mp4")


def test_existing_specs_are_unchanged(cameras) -> None:
    assert isinstance(open_source("demo"), DemoSource)
    assert open_source("0").device == 0
    assert open_source("/dev/video3").device == "/dev/video3"
    assert type(open_source("rtsp://cam/stream")).__name__ == "StreamSource"


def test_rtsp_uses_the_jetson_hardware_decoder_on_a_jetson(tmp_path):
    from ubiq.hardware.sources import GStreamerSource, StreamSource, open_source

    url = "rtsp://user:secret@10.0.0.5:554/stream1"
    assert isinstance(open_source(url, platform_root=tmp_path), StreamSource)  # not a Jetson
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "nv_tegra_release").write_text("# R36 (release), REVISION: 4.3\n")
    source = open_source(url, platform_root=tmp_path)
    assert isinstance(source, GStreamerSource)
    assert source.pipeline.startswith(f"rtspsrc location={url} latency=200 ! rtph264depay")
    assert "nvv4l2decoder ! nvvidconv" in source.pipeline
    assert source.pipeline.endswith("appsink drop=1 max-buffers=1")
    assert "secret" not in source.source_id
    forced = open_source(url, platform_root=tmp_path, rtsp_decoder="ffmpeg")
    assert isinstance(forced, StreamSource)
    with pytest.raises(ValueError, match="rtsp_decoder must be auto, ffmpeg or nvv4l2"):
        open_source(url, rtsp_decoder="gpu")


def test_jetson_rtsp_pipeline_codecs():
    from ubiq.hardware.sources.gstreamer import jetson_rtsp_pipeline

    assert "rtph265depay ! h265parse" in jetson_rtsp_pipeline("rtsp://h/s", codec="h265")
    with pytest.raises(ValueError, match="codec must be h264 or h265, got 'vp8'"):
        jetson_rtsp_pipeline("rtsp://h/s", codec="vp8")
