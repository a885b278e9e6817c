import contextlib
import json
import threading
import time

import cv2
import numpy as np
import pytest

from ubiq.errors import ConfigError
from ubiq.pipelines.runner import Runner
from ubiq.pipelines.sinks import JsonlSink, VideoSink, annotate
from ubiq.pipelines.stage import Function
from ubiq.types import Detections, Frame, FrameResult


class ListSource:
    """A finite in-memory source with the Source interface."""

    is_live = False
    fps = 10.0
    dropped_frames = 0
    reconnects = 0

    def __init__(self, count, size=(64, 48), block=None):
        self.count = count
        self.size = size
        self.block = block
        self.entered = self.exited = False
        self.stopped = threading.Event()

    def __enter__(self):
        self.entered = True
        return self

    def __exit__(self, *exc):
        self.exited = True

    def stop(self):
        self.stopped.set()

    def __iter__(self):
        width, height = self.size
        for index in range(self.count):
            if self.stopped.is_set():
                return
            if self.block is not None and index == self.block:
                self.stopped.wait(5)
            image = np.full((height, width, 3), index % 255, np.uint8)
            yield Frame(image, index, int(index * 1e8), "list")


def box_at(frame):
    x = float(frame.index)
    return Detections(xyxy=[[x, 1, x + 10, 11]], confidence=[0.5], class_id=[1], labels=("a", "b"))


box_at_index = [Function(box_at)]


def test_jsonl_and_video_written_for_every_frame(tmp_path):
    jsonl_path, video_path = tmp_path / "out.jsonl", tmp_path / "out.mp4"
    source = ListSource(12)
    sinks = [JsonlSink(jsonl_path), VideoSink(video_path, fps=10)]
    summary = Runner(source, box_at_index, sinks).run()
    assert summary.frames == 12 and summary.stopped_by == "end"
    assert summary.detections == 12 and summary.frames_with_detections == 12
    assert source.entered and source.exited
    lines = [json.loads(line) for line in jsonl_path.read_text().splitlines()]
    assert len(lines) == 12
    assert lines[3] == {
        "frame": 3,
        "ts": 0.3,
        "detections": [
            {"xyxy": [3.0, 1.0, 13.0, 11.0], "confidence": 0.5, "class_id": 1, "label": "b"}
        ],
    }
    capture = cv2.VideoCapture(str(video_path))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (
        64,
        48,
    )
    capture.release()


def test_max_frames_and_summary_numbers(tmp_path):
    summary = Runner(ListSource(50), box_at_index, max_frames=7).run()
    assert summary.frames == 7 and summary.stopped_by == "max-frames"
    data = summary.to_dict()
    assert data["fps"] > 0 and data["latency_p90_ms"] >= data["latency_p50_ms"] >= 0
    assert "7 frames" in summary.line()
    with pytest.raises(ConfigError, match="max_frames must be an integer >= 1, got 0"):
        Runner(ListSource(1), box_at_index, max_frames=0)


def test_stop_from_another_thread_keeps_what_was_written(tmp_path):
    jsonl_path = tmp_path / "out.jsonl"
    source = ListSource(100, block=5)
    runner = Runner(source, box_at_index, [JsonlSink(jsonl_path)])
    timer = threading.Timer(0.2, runner.stop)
    timer.start()
    summary = runner.run()
    timer.join()
    assert summary.stopped_by == "signal"
    assert summary.frames == 5
    assert len(jsonl_path.read_text().splitlines()) == 5


def test_live_jsonl_time_is_relative_to_first_frame(tmp_path):
    sink = JsonlSink(tmp_path / "live.jsonl", relative_time=True)
    image = np.zeros((4, 4, 3), np.uint8)
    sink.write(FrameResult(Frame(image, 0, 5_000_000_000), Detections.empty()))
    sink.write(FrameResult(Frame(image, 1, 5_250_000_000), Detections.empty()))
    sink.close()
    times = [
        json.loads(line)["ts"] for line in (tmp_path / "live.jsonl").read_text().split("\n") if line
    ]
    assert times == [0.0, 0.25]


def test_bad_sink_paths_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="unsupported video suffix '.txt'"):
        VideoSink(tmp_path / "out.txt")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="cannot write"):
        JsonlSink(blocker / "sub" / "out.jsonl")


def test_annotate_draws_inside_the_box_only():
    image = np.zeros((100, 100, 3), np.uint8)
    detections = Detections(xyxy=[[40, 40, 80, 80]], confidence=[0.9], class_id=[0])
    drawn = annotate(image, detections)
    assert image.sum() == 0  # the input is untouched
    assert drawn[60, 40].any() and drawn[40, 60].any()  # edges drawn
    assert not drawn[60, 60].any() and not drawn[95, 5].any()


class SlowPreparePipeline:
    """A stage whose ``prepare`` is the slow side (like a 1080p frame)."""

    name = "slow"

    def __init__(self, prepare_s):
        self.prepare_s = prepare_s
        self.completed = []

    def prepare(self, frame):
        time.sleep(self.prepare_s)
        return frame.index * 10

    def __call__(self, result):
        prepared = result.prepared.pop(self.name)  # KeyError: the prefetch path was not used
        self.completed.append(prepared)
        result.detections = box_at(result.frame)
        return result


def test_prefetch_passes_prepared_work_in_order():
    pipeline = SlowPreparePipeline(0.0)
    summary = Runner(ListSource(20), pipeline).run()
    assert summary.frames == 20
    assert pipeline.completed == [index * 10 for index in range(20)]


def test_stop_while_prefetch_is_preparing_does_not_hang(tmp_path):
    jsonl_path = tmp_path / "out.jsonl"
    runner = Runner(ListSource(1000), SlowPreparePipeline(0.05), [JsonlSink(jsonl_path)])
    timer = threading.Timer(0.3, runner.stop)
    started = time.monotonic()
    timer.start()
    summary = runner.run()
    timer.join()
    assert time.monotonic() - started < 3.0
    assert summary.stopped_by == "signal" and 1 <= summary.frames < 1000
    assert len(jsonl_path.read_text().splitlines()) == summary.frames


def test_max_frames_with_prefetch_stops_promptly():
    before = set(threading.enumerate())  # other tests' daemon threads may still be around
    started = time.monotonic()
    summary = Runner(ListSource(1000), SlowPreparePipeline(0.001), max_frames=5).run()
    assert summary.frames == 5 and summary.stopped_by == "max-frames"
    assert time.monotonic() - started < 1.5
    assert set(threading.enumerate()) <= before  # the prefetch thread was joined


def test_elapsed_time_starts_at_the_first_frame():
    class SlowToOpen(ListSource):
        def __enter__(self):
            time.sleep(0.5)
            return super().__enter__()

    summary = Runner(SlowToOpen(3), box_at_index).run()
    assert summary.frames == 3 and summary.elapsed_s < 0.4
    assert summary.peak_rss_mb > 10


def test_systemd_notify_ready_watchdog_and_stopping(tmp_path, monkeypatch):
    import socket

    address = str(tmp_path / "notify.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(address)
    server.settimeout(1.0)
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", "20000")  # pings at most every 10 ms
    monkeypatch.delenv("WATCHDOG_PID", raising=False)

    class PacedSource(ListSource):
        def __iter__(self):
            for frame in super().__iter__():
                time.sleep(0.005)
                yield frame

    messages = []

    def receive():  # like systemd: read as messages arrive
        with contextlib.suppress(TimeoutError):
            while True:
                messages.append(server.recv(64).decode())

    reader = threading.Thread(target=receive)
    reader.start()
    summary = Runner(PacedSource(20), box_at_index).run()
    reader.join()
    server.close()
    assert summary.frames == 20
    assert messages[0] == "READY=1" and messages[-1] == "STOPPING=1"
    pings = messages.count("WATCHDOG=1")
    assert 3 <= pings <= 20  # rate-limited, yet sent while frames flow


def test_a_full_notify_socket_never_blocks_the_pipeline(tmp_path, monkeypatch):
    import socket

    from ubiq.systemd import notify

    address = str(tmp_path / "full.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(address)  # nobody reads: the queue fills up
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    started = time.monotonic()
    sent = [notify("WATCHDOG=1") for _ in range(2000)]
    server.close()
    assert time.monotonic() - started < 5.0
    assert sent[0] is True and sent[-1] is False


def test_no_notify_socket_means_no_messages(monkeypatch):
    from ubiq.systemd import Watchdog, notify

    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    assert notify("READY=1") is False
    assert Watchdog().enabled is False
