"""What the live view costs the pipeline: FPS unpaced, CPU when paced like a camera, and
memory with a stalled client.

Runs BlazeFace over the demo clip's frames (looped from memory, so decoding is not
measured), in three parts:

1. **Unpaced** (the pipeline as fast as it goes): interleaved pairs of runs without and
   with the live view, the order alternating (ABBA) so that drift on a shared machine
   cancels; with it, two clients read the MJPEG stream (15 FPS, the stream's rate) and
   one the page's event stream. The clients run in a process of their own, as browsers
   do, so their reading neither holds this process's GIL nor counts as its CPU. Reports
   the FPS of each run, each pair's ratio and the median ratio (the cost is 1 - ratio).
2. **Paced** (``--paced-fps``, default 30, like a camera): a paced pipeline does not lose
   FPS, so the honest cost there is CPU: process CPU milliseconds per frame without and
   with the live view (two stream clients plus the event stream), in interleaved pairs.
3. **Stalled client**: one client connects to the stream and never reads, while RSS is
   sampled every second; it must be dropped and memory must stay flat.

    .venv/bin/python benchmarks/live_view_cost.py --rounds 6 --frames 2000 --stall-s 5
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import threading
import time

import ubiq
from ubiq.hardware.sources.demo import DemoSource
from ubiq.pipelines.sinks.live import LiveViewSink
from ubiq.resources import peak_rss_mb

# The clients' process: reads the paths given until its stdin closes, then prints, per
# client, the bytes and (for a stream) the JPEG parts it received.
CLIENTS = r"""
import http.client, json, sys, threading
port, paths = int(sys.argv[1]), sys.argv[2:]
stop = threading.Event()
counts = [[0, 0] for _ in paths]
def read(position, path):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", path)
    response = connection.getresponse()
    stream = path.endswith(".mjpg")
    try:
        while not stop.is_set():
            if stream:
                line = response.fp.readline()
                if not line:
                    break
                counts[position][0] += len(line)
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
                    response.fp.readline()
                    counts[position][0] += len(response.fp.read(length)) + 2
                    counts[position][1] += 1
            else:
                chunk = response.fp.read1(65536)
                if not chunk:
                    break
                counts[position][0] += len(chunk)
    except OSError:
        pass
threads = [threading.Thread(target=read, args=(n, p), daemon=True) for n, p in enumerate(paths)]
for thread in threads:
    thread.start()
print("ready", flush=True)
sys.stdin.read()
stop.set()
print(json.dumps(counts), flush=True)
"""
PATHS = ("/stream.mjpg", "/stream.mjpg", "/events/stream")


class LoopedFrames:
    """The demo clip's frames from memory, looped to ``count`` frames, as a file source;
    paced at ``pace_fps`` like a camera when given."""

    is_live = False
    source_id = "demo-loop"
    fps = 30.0

    def __init__(self, frames, count: int, pace_fps: float | None = None) -> None:
        self.frames, self.count, self.pace_fps = frames, count, pace_fps

    def __enter__(self):
        return self

    def __exit__(self, *_exc) -> None:
        pass

    def __iter__(self):
        began = time.monotonic()
        for index in range(self.count):
            if self.pace_fps:
                delay = began + index / self.pace_fps - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            frame = self.frames[index % len(self.frames)]
            yield ubiq.Frame(frame.image, index, index * 33_333_333, self.source_id)


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * 4096 / 2**20  # MiB, like peak_rss_mb


def run(model, frames, count: int, live: bool, pace_fps: float | None = None) -> dict:
    """One run; with ``live``, two stream clients and an event-stream client (in a process
    of their own) read the live view throughout."""
    sinks, clients = [], None
    if live:
        sink = LiveViewSink("127.0.0.1", 0)
        sinks.append(sink)
        clients = subprocess.Popen(
            [sys.executable, "-c", CLIENTS, str(sink.port), *PATHS],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert clients.stdout.readline().strip() == "ready"
        time.sleep(0.5)  # the clients are connected before the timed run
    cpu_began = time.process_time()
    summary = ubiq.Pipeline([ubiq.Detect(model)], sinks=sinks).run(
        LoopedFrames(frames, count, pace_fps)
    )
    cpu_s = time.process_time() - cpu_began
    info = {"fps": summary.fps, "cpu_ms_per_frame": cpu_s / max(summary.frames, 1) * 1e3}
    if live:
        info["jpegs_encoded"] = sinks[0]._jpegs_encoded
        info["stream_fps"] = round(sinks[0]._jpegs_encoded / max(summary.elapsed_s, 1e-9), 1)
        out, _ = clients.communicate("", timeout=30)
        received = json.loads(out.strip().splitlines()[-1])
        info["bytes_per_stream_client"] = [b for b, _ in received[:2]]
        info["jpegs_per_stream_client"] = [n for _, n in received[:2]]
        info["event_stream_bytes"] = received[2][0]
    return info


def interleaved(model, frames, rounds: int, count: int, pace_fps: float | None) -> list:
    """``rounds`` pairs of runs (without, with), alternating which goes first."""
    pairs = []
    for number in range(rounds):
        order = (False, True) if number % 2 == 0 else (True, False)
        results = {live: run(model, frames, count, live, pace_fps) for live in order}
        pairs.append((results[False], results[True]))
    return pairs


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
    dropped_at = next((round(t, 1) for t, _, clients in samples if clients == 0), None)
    return {
        "seconds": round(seconds, 1),
        "frames": summary.frames,
        "fps": round(summary.fps, 1),
        "jpegs_encoded": sink._jpegs_encoded,
        "rss_mb_first_s": round(rss[0], 1),
        "rss_mb_last_s": round(rss[-1], 1),
        "rss_mb_max": round(max(rss), 1),
        "stalled_client_dropped_after_s": dropped_at,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="unpaced pairs of runs")
    parser.add_argument("--frames", type=int, default=2000, help="frames per unpaced run")
    parser.add_argument("--paced-fps", type=float, default=30.0, help="0: no paced part")
    parser.add_argument("--paced-rounds", type=int, default=4, help="paced pairs of runs")
    parser.add_argument("--paced-s", type=float, default=8.0, help="seconds per paced run")
    parser.add_argument("--stall-s", type=float, default=30.0, help="0: no stalled client")
    args = parser.parse_args()
    model = ubiq.load_model("blazeface")
    with DemoSource() as source:
        frames = list(source)
    run(model, frames, 60, live=False)  # warm-up
    run(model, frames, 60, live=True)
    pairs = interleaved(model, frames, args.rounds, args.frames, None)
    ratios = [with_["fps"] / without["fps"] for without, with_ in pairs]
    ratio = statistics.median(ratios)
    report: dict = {
        "unpaced": {
            "frames_per_run": args.frames,
            "fps_without": [round(w["fps"], 1) for w, _ in pairs],
            "fps_with_live_view_2_clients": [round(v["fps"], 1) for _, v in pairs],
            "ratio_per_round": [round(r, 3) for r in ratios],
            "median_fps_without": round(statistics.median(w["fps"] for w, _ in pairs), 1),
            "median_fps_with": round(statistics.median(v["fps"] for _, v in pairs), 1),
            "median_ratio": round(ratio, 3),
            "cost_percent": round((1 - ratio) * 100, 1),
            "stream_last_round": {k: v for k, v in pairs[-1][1].items() if k != "fps"},
        }
    }
    if args.paced_fps > 0:
        count = max(30, round(args.paced_s * args.paced_fps))
        paced = interleaved(model, frames, args.paced_rounds, count, args.paced_fps)
        without_ms = statistics.median(w["cpu_ms_per_frame"] for w, _ in paced)
        with_ms = statistics.median(v["cpu_ms_per_frame"] for _, v in paced)
        deltas = [v["cpu_ms_per_frame"] - w["cpu_ms_per_frame"] for w, v in paced]
        delta_ms = statistics.median(deltas)
        report["paced"] = {
            "pace_fps": args.paced_fps,
            "frames_per_run": count,
            "fps_without": [round(w["fps"], 1) for w, _ in paced],
            "fps_with": [round(v["fps"], 1) for _, v in paced],
            "cpu_ms_per_frame_without": [round(w["cpu_ms_per_frame"], 3) for w, _ in paced],
            "cpu_ms_per_frame_with": [round(v["cpu_ms_per_frame"], 3) for _, v in paced],
            "median_cpu_ms_per_frame_without": round(without_ms, 3),
            "median_cpu_ms_per_frame_with": round(with_ms, 3),
            "median_extra_cpu_ms_per_frame": round(delta_ms, 3),
            "extra_cpu_percent_of_one_core": round(delta_ms * args.paced_fps / 10, 2),
            "extra_cpu_percent_of_pipeline": round(delta_ms / without_ms * 100, 1),
            "stream_last_round": {k: v for k, v in paced[-1][1].items() if k != "fps"},
        }
    if args.stall_s > 0:
        report["stalled_client"] = stalled(model, frames, args.stall_s)
    report["peak_rss_mb"] = round(peak_rss_mb(), 1)
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
