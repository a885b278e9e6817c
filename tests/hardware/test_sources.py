"""Tests of ubiq.hardware.sources: files, images, demo clip, webcams and streams."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from ubiq.errors import ConfigError, SourceError
from ubiq.hardware.sources import (
    DemoSource,
    ImageSource,
    StreamSource,
    VideoFileSource,
    WebcamSource,
    demo_clip_path,
    demo_ground_truth,
    load_ground_truth,
    make_pan_zoom_clip,
    open_source,
)
from ubiq.hardware.sources.demo import ASTRONAUT_FACE_XYXY, ASTRONAUT_PATH
from ubiq.types import iou_matrix

VIDEO_LOGGER = "ubiq.hardware.sources.video"


@pytest.fixture(autouse=True)
def _ubiq_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "ubiq_home"
    monkeypatch.setenv("UBIQ_HOME", str(home))
    return home


def _gray_level(index: int) -> int:
    return 20 + (10 * index) % 220


def write_video(path: Path, frames: int = 20, fps: float = 25.0, size=(160, 120)) -> Path:
    """Writes an mp4v clip whose frame ``i`` is a flat gray of level ``_gray_level(i)``."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    for index in range(frames):
        writer.write(np.full((size[1], size[0], 3), _gray_level(index), np.uint8))
    writer.release()
    return path


# --- video files ---------------------------------------------------------------------------


def test_video_file_yields_every_frame_in_order_with_pts(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.mp4")
    source = open_source(str(path))
    assert isinstance(source, VideoFileSource)
    assert source.frame_size is None
    with source:
        frames = list(source)
        assert source.fps == pytest.approx(25.0)
        assert source.frame_size == (160, 120)
    assert source.is_live is False
    assert source.source_id == str(path)
    assert [frame.index for frame in frames] == list(range(20))
    assert [frame.timestamp_ns for frame in frames] == [index * 40_000_000 for index in range(20)]
    for frame in frames:
        assert frame.image.shape == (120, 160, 3)
        assert frame.image.dtype == np.uint8
        assert frame.source_id == str(path)
        assert abs(float(frame.image.mean()) - _gray_level(frame.index)) < 4
    assert source.dropped_frames == 0 and source.reconnects == 0


def test_video_file_stride_counts_source_frames(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.mp4")
    with open_source(str(path), vid_stride=3) as source:
        frames = list(source)
    assert [frame.index for frame in frames] == [0, 3, 6, 9, 12, 15, 18]
    assert [frame.timestamp_ns for frame in frames] == [i * 40_000_000 for i in range(0, 20, 3)]
    for frame in frames:
        assert abs(float(frame.image.mean()) - _gray_level(frame.index)) < 4


def test_iterating_an_unopened_source_opens_and_closes_it(tmp_path: Path) -> None:
    source = open_source(str(write_video(tmp_path / "clip.mp4", frames=5)))
    assert len(list(source)) == 5
    assert source.is_open is False
    with source:
        assert len(list(source)) == 5
        assert list(source) == []  # a finished file stays finished until reopened


def test_stop_from_another_thread_ends_a_file_early(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.mp4", frames=60)
    received = []
    with open_source(str(path)) as source:
        for frame in source:
            received.append(frame.index)
            if frame.index == 2:
                threading.Thread(target=source.stop).start()
            time.sleep(0.01)
    assert received[:3] == [0, 1, 2]
    assert len(received) < 60


def test_closing_mid_file_returns_quickly(tmp_path: Path) -> None:
    source = open_source(str(write_video(tmp_path / "clip.mp4", frames=60)))
    source.open()
    first = next(iter(source))
    time.sleep(0.1)  # let the reader fill its bounded queue and block
    started = time.monotonic()
    source.close()
    assert first.index == 0
    assert time.monotonic() - started < 1.0
    assert source.is_open is False


# --- images ---------------------------------------------------------------------------------


def _write_images(folder: Path) -> None:
    folder.mkdir()
    cv2.imwrite(str(folder / "img10.png"), np.full((30, 40, 3), 100, np.uint8))
    cv2.imwrite(str(folder / "img2.png"), np.full((30, 40, 3), 50, np.uint8))
    cv2.imwrite(str(folder / "img1.jpg"), np.full((20, 10, 3), 200, np.uint8))
    (folder / "notes.txt").write_text("not an image")


def test_folder_yields_images_in_natural_order(tmp_path: Path) -> None:
    _write_images(tmp_path / "shots")
    with open_source(str(tmp_path / "shots")) as source:
        frames = list(source)
        assert source.frame_size == (10, 20)
    assert isinstance(source, ImageSource)
    assert source.fps is None and source.is_live is False
    assert [frame.index for frame in frames] == [0, 1, 2]
    assert [frame.image.shape for frame in frames] == [(20, 10, 3), (30, 40, 3), (30, 40, 3)]
    assert [int(np.median(frame.image)) for frame in frames] == [200, 50, 100]
    timestamps = [frame.timestamp_ns for frame in frames]
    assert timestamps == sorted(timestamps)


def test_glob_matches_only_images(tmp_path: Path) -> None:
    _write_images(tmp_path / "shots")
    with open_source(str(tmp_path / "shots" / "img*.png")) as source:
        levels = [int(np.median(frame.image)) for frame in source]
    assert levels == [50, 100]
    with open_source(str(tmp_path / "**" / "*.jpg")) as source:
        assert [frame.image.shape for frame in source] == [(20, 10, 3)]


def test_single_gray_image_becomes_bgr(tmp_path: Path) -> None:
    path = tmp_path / "gray.png"
    cv2.imwrite(str(path), np.full((12, 16), 77, np.uint8))
    with open_source(str(path)) as source:
        frames = list(source)
    assert len(frames) == 1
    assert frames[0].image.shape == (12, 16, 3)
    assert np.all(frames[0].image == 77)


def test_undecodable_image_in_folder_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _write_images(tmp_path / "shots")
    (tmp_path / "shots" / "img5.png").write_bytes(b"not a png")
    with open_source(str(tmp_path / "shots")) as source:
        indices = [frame.index for frame in source]
    assert indices == [0, 1, 3]
    assert "img5.png: cannot decode it as an image" in caplog.text


# --- bad inputs -----------------------------------------------------------------------------


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(SourceError, match=f"^source file not found: {re.escape(str(missing))}$"):
        open_source(str(missing))


def test_empty_folder_and_unmatched_glob_name_them(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match=f"no images in folder {re.escape(str(tmp_path))}"):
        open_source(str(tmp_path / "empty"))
    pattern = str(tmp_path / "empty" / "*.png")
    with pytest.raises(SourceError, match=re.escape(f"no images match {pattern!r}")):
        open_source(pattern)


def test_file_that_is_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "fake.mp4"
    path.write_text("hello")
    with pytest.raises(SourceError, match=f"cannot open video file {re.escape(str(path))}"):
        open_source(str(path)).open()


def test_bad_options_name_the_parameter(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="vid_stride must be an integer >= 1, got 0"):
        open_source("demo", vid_stride=0)
    with pytest.raises(ConfigError, match="open_timeout_s must be a positive number, got -1"):
        open_source("rtsp://127.0.0.1/x", open_timeout_s=-1)
    with pytest.raises(SourceError, match="unsupported stream scheme in 'ftp://host/x'"):
        open_source("ftp://host/x")


def test_missing_camera_index_fails_in_one_line() -> None:
    source = open_source("97")
    assert isinstance(source, WebcamSource) and source.is_live
    with pytest.raises(SourceError, match=r"^cannot open camera 97 \(no such device; "):
        source.open()
    with pytest.raises(SourceError, match=r"^cannot open camera /dev/video97 \(no such device"):
        open_source("/dev/video97").open()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unreachable_stream_names_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", raising=False)
    url = f"http://127.0.0.1:{_closed_port()}/stream.mjpg"
    source = open_source(url, open_timeout_s=0.5, read_timeout_s=0.5)
    assert isinstance(source, StreamSource) and source.is_live
    started = time.monotonic()
    with pytest.raises(SourceError, match=f"^cannot open stream {re.escape(url)} "), source:
        pass
    assert time.monotonic() - started < 5.0
    assert "OPENCV_FFMPEG_CAPTURE_OPTIONS" not in os.environ


def test_rtsp_uses_tcp_unless_set_and_hides_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", raising=False)
    port = _closed_port()
    source = open_source(f"rtsp://admin:secret@127.0.0.1:{port}/live", open_timeout_s=0.5)
    assert "OPENCV_FFMPEG_CAPTURE_OPTIONS" not in os.environ  # nothing written before opening
    assert source.source_id == f"rtsp://admin:***@127.0.0.1:{port}/live"
    with pytest.raises(SourceError) as raised:
        source.open()
    assert "secret" not in str(raised.value)
    assert os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] == "rtsp_transport;tcp"
    monkeypatch.setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;udp")
    with pytest.raises(SourceError):
        open_source(f"rtsp://127.0.0.1:{port}/live", open_timeout_s=0.5).open()
    assert os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] == "rtsp_transport;udp"


# --- demo clip ------------------------------------------------------------------------------


def test_demo_clip_plays_with_ground_truth_inside_the_frame(_ubiq_home: Path) -> None:
    source = open_source("demo")
    assert isinstance(source, DemoSource)
    with source:
        frames = list(source)
        assert source.fps == pytest.approx(30.0)
        assert source.frame_size == (640, 480)
    assert source.source_id == "demo" and source.is_live is False
    assert len(frames) == 150
    assert [frame.index for frame in frames] == list(range(150))
    assert frames[30].timestamp_ns == 1_000_000_000
    assert frames[0].image.shape == (480, 640, 3)

    assert demo_clip_path() == _ubiq_home / "demo" / "astronaut_pan.mp4"
    record = json.loads((_ubiq_home / "demo" / "astronaut_pan.json").read_text())
    assert (record["width"], record["height"], record["fps"]) == (640, 480, 30.0)
    assert [entry["frame"] for entry in record["boxes"]] == list(range(150))
    truth = demo_ground_truth()
    assert len(truth) == 150 and all(box.shape == (1, 4) for box in truth)
    boxes = np.concatenate(truth)
    assert boxes[:, 0].min() >= 0 and boxes[:, 1].min() >= 0
    assert boxes[:, 2].max() <= 640 and boxes[:, 3].max() <= 480
    width_fraction = (boxes[:, 2] - boxes[:, 0]) / 640
    assert width_fraction.min() >= 0.25 and width_fraction.max() <= 0.5
    assert width_fraction.max() - width_fraction.min() > 0.05  # it really zooms
    centers = (boxes[:, :2] + boxes[:, 2:]) / 2
    assert np.ptp(centers[:, 0]) > 50  # it really pans
    assert np.abs(np.diff(centers, axis=0)).max() < 15  # smoothly

    # The face is really where the ground truth says: OpenCV's Haar cascade agrees.
    cascade = cv2.CascadeClassifier(
        os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
    )
    for index in (0, 50, 100, 149):
        gray = cv2.cvtColor(frames[index].image, cv2.COLOR_BGR2GRAY)
        found = np.asarray(cascade.detectMultiScale(gray, 1.1, 5, minSize=(60, 60)), np.float32)
        assert found.shape[0] >= 1, f"no face found in frame {index}"
        found[:, 2:] += found[:, :2]
        assert iou_matrix(truth[index], found).max() > 0.7


def test_demo_clip_is_generated_once_and_deterministically(_ubiq_home: Path) -> None:
    path = demo_clip_path()
    json_path = path.with_suffix(".json")
    first_boxes = json.loads(json_path.read_text())["boxes"]
    modified_ns = path.stat().st_mtime_ns
    assert demo_clip_path() == path and path.stat().st_mtime_ns == modified_ns
    demo_clip_path(regenerate=True)
    assert json.loads(json_path.read_text())["boxes"] == first_boxes
    assert sorted(entry.name for entry in path.parent.iterdir()) == [
        "astronaut_pan.json",
        "astronaut_pan.mp4",
    ]


def test_make_pan_zoom_clip_for_other_sizes(tmp_path: Path) -> None:
    out_path = tmp_path / "clips" / "small.mp4"
    boxes = make_pan_zoom_clip(
        ASTRONAUT_PATH, out_path, ASTRONAUT_FACE_XYXY, frames=40, size=(320, 240), fps=20, seed=3
    )
    assert boxes.shape == (40, 4) and boxes.dtype == np.float32
    assert np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 2] <= 320) and np.all(boxes[:, 3] <= 240)
    np.testing.assert_allclose(
        np.concatenate(load_ground_truth(out_path.with_suffix(".json"))), boxes, atol=1e-2
    )
    with open_source(str(out_path), vid_stride=4) as source:
        indices = [frame.index for frame in source]
        assert source.fps == pytest.approx(20.0) and source.frame_size == (320, 240)
    assert indices == list(range(0, 40, 4))
    with pytest.raises(ConfigError, match="box_xyxy must lie inside the 512x512 image"):
        make_pan_zoom_clip(ASTRONAUT_PATH, out_path, (500, 10, 600, 50))


# --- live sources with fake captures --------------------------------------------------------


class FakeCapture:
    """Follows cv2.VideoCapture: frame ``n`` is a flat image of value ``n % 256``.

    Args:
        opened: What ``isOpened()`` answers.
        frames: How many frames ``read``/``grab`` deliver before failing (None: forever).
        interval_s: Time one read takes.
        hang_s: How long ``read`` blocks, once the frames are used up, before failing.
    """

    def __init__(self, opened=True, frames=None, interval_s=0.002, hang_s=0.0) -> None:
        self.opened = opened
        self.remaining = frames
        self.interval_s = interval_s
        self.hang_s = hang_s
        self.counter = 0
        self.released = threading.Event()

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return self.opened

    def _advance(self) -> bool:
        if not self.opened or self.released.is_set():
            return False
        if self.remaining is not None:
            if self.remaining == 0:
                time.sleep(self.hang_s)
                return False
            self.remaining -= 1
        time.sleep(self.interval_s)
        self.counter += 1
        return True

    def grab(self) -> bool:
        return self._advance()

    def read(self):
        if not self._advance():
            return False, None
        return True, np.full((8, 12, 3), (self.counter - 1) % 256, np.uint8)

    def get(self, property_id: int) -> float:
        return {cv2.CAP_PROP_FPS: 30.0}.get(property_id, 0.0)

    def release(self) -> None:
        self.released.set()


class FakeFactory:
    """Hands out the given captures in order, then unopened ones."""

    def __init__(self, *captures: FakeCapture) -> None:
        self.captures = list(captures)
        self.calls = 0

    def __call__(self) -> FakeCapture:
        self.calls += 1
        return self.captures.pop(0) if self.captures else FakeCapture(opened=False)


def _collect(source, count: int, timeout_s: float = 5.0, until=None) -> list:
    frames = []
    deadline = time.monotonic() + timeout_s
    for frame in source:
        frames.append(frame)
        if len(frames) >= count and (until is None or until()):
            break
        assert time.monotonic() < deadline, "live source stalled"
    return frames


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == VIDEO_LOGGER]


def test_reconnect_backs_off_exponentially(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=VIDEO_LOGGER)
    unopened = [FakeCapture(opened=False) for _ in range(3)]
    factory = FakeFactory(FakeCapture(frames=5), *unopened, FakeCapture())
    source = WebcamSource(
        "fake", capture_factory=factory, backoff_initial_s=0.01, backoff_max_s=0.02
    )
    with source:
        frames = _collect(source, 3, until=lambda: source.reconnects == 1)
        frames += _collect(source, 3)
    assert factory.calls == 5
    assert source.reconnects == 1
    indices = [frame.index for frame in frames]
    assert indices == sorted(set(indices))
    assert frames[-1].index >= 5  # frames from the reopened camera keep counting
    assert _warnings(caplog)[:4] == [
        "camera fake dropped (read failed); reconnecting in 0.01 s (attempt 1)",
        "camera fake dropped (cannot open camera fake); reconnecting in 0.02 s (attempt 2)",
        "camera fake dropped (cannot open camera fake); reconnecting in 0.02 s (attempt 3)",
        "camera fake dropped (cannot open camera fake); reconnecting in 0.02 s (attempt 4)",
    ]


def test_stale_camera_is_reopened(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=VIDEO_LOGGER)
    hung = FakeCapture(frames=3, hang_s=0.6)
    factory = FakeFactory(hung, FakeCapture())
    source = WebcamSource(
        "fake", capture_factory=factory, stale_after_s=0.2, backoff_initial_s=0.01
    )
    with source:
        _collect(source, 1, until=lambda: source.reconnects == 1)
        assert hung.released.wait(2.0)  # the abandoned capture is released once it returns
    assert source.reconnects == 1 and factory.calls == 2
    assert re.fullmatch(
        r"camera fake dropped \(no frame for 0\.\d s\); reconnecting in 0\.01 s \(attempt 1\)",
        _warnings(caplog)[0],
    )


def test_first_open_failure_raises_at_once() -> None:
    factory = FakeFactory(FakeCapture(opened=False))
    source = WebcamSource(3, capture_factory=factory, backoff_initial_s=0.01)
    with pytest.raises(SourceError, match=r"^cannot open camera 3 \(no such device"):
        source.open()
    assert factory.calls == 1
    silent = WebcamSource(4, capture_factory=FakeFactory(FakeCapture(frames=0)))
    with pytest.raises(SourceError, match="^camera 4 opened but gave no frame"):
        silent.open()


def test_without_reconnect_iteration_ends(caplog: pytest.LogCaptureFixture) -> None:
    factory = FakeFactory(FakeCapture(frames=4, interval_s=0.01))
    with WebcamSource("fake", capture_factory=factory, reconnect=False) as source:
        frames = list(source)
    assert 1 <= len(frames) <= 4
    assert frames[-1].index <= 3
    assert factory.calls == 1 and source.reconnects == 0
    assert "camera fake dropped (read failed); not reconnecting" in caplog.text


def test_live_source_hands_out_only_the_latest_frame() -> None:
    factory = FakeFactory(FakeCapture(interval_s=0.001))
    consumed = []
    with WebcamSource("fake", capture_factory=factory) as source:
        assert source.fps == 30.0 and source.frame_size == (12, 8)
        for frame in source:
            consumed.append(frame)
            assert source.dropped_frames >= frame.index + 1 - len(consumed)
            if len(consumed) == 8:
                break
            time.sleep(0.02)
        dropped = source.dropped_frames
    indices = [frame.index for frame in consumed]
    assert indices[0] == 0
    assert all(later > earlier for earlier, later in zip(indices, indices[1:]))
    assert max(np.diff(indices)) > 3  # frames produced meanwhile were skipped
    assert dropped >= indices[-1] + 1 - len(consumed) > 0
    for frame in consumed:  # each frame carries its own image
        assert frame.image.shape == (8, 12, 3)
        assert int(frame.image[0, 0, 0]) == frame.index % 256
    timestamps = [frame.timestamp_ns for frame in consumed]
    assert timestamps == sorted(timestamps)


def test_live_stride_and_stop_from_another_thread() -> None:
    factory = FakeFactory(FakeCapture(interval_s=0.003))
    with WebcamSource("fake", capture_factory=factory, vid_stride=2) as source:
        frames = _collect(source, 5)
        stopper = threading.Timer(0.1, source.stop)
        stopper.start()
        started = time.monotonic()
        remaining = list(source)
        elapsed_s = time.monotonic() - started
    assert all(frame.index % 2 == 0 for frame in frames + remaining)
    assert all(int(frame.image[0, 0, 0]) == frame.index % 256 for frame in frames)
    assert 0.05 < elapsed_s < 1.0
