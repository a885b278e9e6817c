"""What the live view costs the pipeline: FPS with and without it, and memory with a
stalled client.

Runs BlazeFace over the demo clip's frames (looped from memory, so decoding is not
measured) in interleaved rounds: without the live view, then with it and two clients
reading the MJPEG stream (15 FPS, the stream's rate) plus the page's event stream. Then
one run with a client that connects to the stream and never reads, sampling the
process's RSS every second.

    .venv/bin/python benchmarks/live_view_cost.py --rounds 5 --frames 600 --stall-s 30
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import statistics
import sys
import threading
import time

import ubiq
from ubiq.hardware.sources.demo import DemoSource
from ubiq.pipelines.sinks.live import LiveViewSink
from ubiq.resources import peak_rss_mb


class LoopedFrames:
    """The demo clip's frames from memory, looped to ``count`` frames, as a file source."""

    is_live = False
    source_id = "demo-loop"
    fps = 30.0

    def __init__(self, frames, count: int) -> None:
        self.frames, self.count = frames, count

    def __enter__(self):
        return self

    def __exit__(self, *_exc) -> None:
        pass

    def __iter__(self):
        for index in range(self.count):
            frame = self.frames[index % len(self.frames)]
            yield ubiq.Frame(frame.image, index, index * 33_333_333, self.source_id)


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * 4096 / 2**20  # MiB, like peak_rss_mb


def read_stream(port: int, path: str, stop: threading.Event, received: list[int]) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", path)
    response = connection.getresponse()
    while not stop.is_set():
        chunk = response.fp.read1(65536) if hasattr(response.fp, "read1") else b""
        if not chunk:
            break
        received.append(len(chunk))
    connection.close()


def run(model, frames, count: int, live: bool) -> tuple[float, dict]:
    sinks, readers, stop, info = [], [], threading.Event(), {}
    if live:
        sink = LiveViewSink("127.0.0.1", 0)
        sinks.append(sink)
        for path in ("/stream.mjpg", "/stream.mjpg", "/events/stream"):
            received: list[int] = []
            thread = threading.Thread(
                target=read_stream, args=(sink.port, path, stop, received), daemon=True
            )
            thread.start()
            readers.append((thread, received))
        time.sleep(0.5)  # the clients are connected before the timed run
    summary = ubiq.Pipeline([ubiq.Detect(model)], sinks=sinks).run(LoopedFrames(frames, count))
    if live:
        info["jpegs_encoded"] = sinks[0]._jpegs_encoded
        info["stream_fps"] = round(sinks[0]._jpegs_encoded / max(summary.elapsed_s, 1e-9), 1)
        stop.set()
        for thread, _ in readers:
            thread.join(timeout=2)
        info["bytes_per_client"] = [sum(received) for _, received in readers[:2]]
    return summary.fps, info


def stalled(model, frames, seconds: float) -> dict:
    sink = LiveViewSink("127.0.0.1", 0)
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(("127.0.0.1", sink.port))
    client.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")  # then never reads
    samples: list[tuple[float, float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        began = time.monotonic()
        while not stop.wait(1.0):
            samples.append((time.monotonic() - began, rss_mb(), sink._clients["stream"]))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    pipeline = ubiq.Pipeline([ubiq.Detect(model)], sinks=[sink])
    source = LoopedFrames(frames, 10**9)
    timer = threading.Timer(seconds, pipeline.stop)
    timer.start()
    summary = pipeline.run(source)
    stop.set()
    sampler.join()
    client.close()
    rss = [mb for _, mb, _ in samples]
    dropped_at = next((t for t, _, clients in samples if clients == 0), None)
    return {
        "seconds": round(seconds, 1),
        "frames": summary.frames,
        "fps": round(summary.fps, 1),
        "rss_mb_first_s": round(rss[0], 1),
        "rss_mb_last_s": round(rss[-1], 1),
        "rss_mb_max": round(max(rss), 1),
        "stalled_client_dropped_after_s": dropped_at,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--stall-s", type=float, default=30.0)
    args = parser.parse_args()
    model = ubiq.load_model("blazeface")
    with DemoSource() as source:
        frames = list(source)
    run(model, frames, 60, live=False)  # warm-up
    without, with_live, infos = [], [], []
    for _ in range(args.rounds):
        without.append(run(model, frames, args.frames, live=False)[0])
        fps, info = run(model, frames, args.frames, live=True)
        with_live.append(fps)
        infos.append(info)
    ratio = statistics.median(with_live) / statistics.median(without)
    report = {
        "frames_per_run": args.frames,
        "fps_without": [round(v, 1) for v in without],
        "fps_with_live_view_2_clients": [round(v, 1) for v in with_live],
        "median_ratio": round(ratio, 3),
        "cost_percent": round((1 - ratio) * 100, 1),
        "stream": infos[-1],
        "stalled_client": stalled(model, frames, args.stall_s),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
