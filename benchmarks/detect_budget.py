"""Where the time of a whole `ubiq detect` command goes, part by part, against
inference-only speed measured in the same run.

Builds YOLOv8n from its yaml (no download, random weights) and exports it to ONNX at 320
with Ultralytics, makes a 640x480 clip of 300 frames from a real photograph (both kept in
``--workdir``), then per round:

1. the whole command, ``python -m ubiq detect --source clip --model m --jsonl out``, as a
   child process: wall time from process start to exit, whole-command FPS
   (frames / wall) and the FPS of its own summary (first frame to last); then the same
   with ``--streams 1`` (one frame at a time on all cores, as before frames in flight);
2. an instrumented child that does the same work step by step and times each part:
   interpreter start-up, imports, model load (session creation), source open, the first
   frame (warm-up), the frame loop, and closing; inside the loop, the per-frame stage
   times (``detect.prepare`` on the prefetch thread, inference, decode/NMS, sinks); then,
   in the same process and on the same prepared tensors, inference alone, back to back:
   one frame at a time with the runtime's default threads (a model loaded with
   ``streams=1``: the inference-only FPS of the bar), and the command's own way (its
   model with ``streams`` frames in flight, one per core, from as many threads); and the
   clip decoded alone (no model) for the decode cost.

Prints the per-part budget of one round (the median round by whole-command FPS) and
the ratios: whole command / inference-only FPS (against both references), and the loop /
inference-only FPS. The machine is shared and noisy: ratios are taken within a round and
the median is shown.

    .venv/bin/python benchmarks/detect_budget.py [--rounds 3] [--frames 300] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROBE = r"""
import json, sys, time
started = time.perf_counter()
import cv2, numpy as np, onnxruntime
from concurrent.futures import ThreadPoolExecutor
from ubiq.hardware.sources import open_source
from ubiq.models.runtime.backend import choose_streams
from ubiq.models.runtime.model import DetectionModel
from ubiq.pipelines.runner import Runner
from ubiq.pipelines.sinks import JsonlSink
from ubiq.pipelines.stage import Detect
imported = time.perf_counter()
cv2.setNumThreads(1)
model_path, clip, out = sys.argv[1:4]
streams = choose_streams(True, None, None)  # what ubiq detect picks for a file
model = DetectionModel.load(model_path, streams=streams)
loaded = time.perf_counter()
source = open_source(clip)
source.open()
opened = time.perf_counter()
runner = Runner(source, [Detect(model)], [JsonlSink(out, relative_time=True)])
first_at = []
runner.on_result = lambda r: first_at.append(time.perf_counter()) if not first_at else None
summary = runner.run()
ran = time.perf_counter()
source.close()
closed = time.perf_counter()
# Inference alone, back to back, on the frames the loop saw (prepared once, up front):
# the command's own way (streams frames in flight), then one at a time on all cores.
frames = [f.image for _, f in zip(range(60), open_source(clip))]
tensors = [model.prepare(image)[0] for image in frames]
pool = ThreadPoolExecutor(model.backend.streams)
list(pool.map(model.infer, tensors[:10]))
began = time.perf_counter()
list(pool.map(model.infer, [tensors[i % len(tensors)] for i in range(summary.frames)]))
streams_fps = summary.frames / (time.perf_counter() - began)
single = DetectionModel.load(model_path, streams=1)
for tensor in tensors[:10]:
    single.infer(tensor)
alone = []
for index in range(summary.frames):
    began = time.perf_counter()
    single.infer(tensors[index % len(tensors)])
    alone.append((time.perf_counter() - began) * 1e3)
# Decoding alone (the source's reader thread, no model).
began = time.perf_counter()
decoded = sum(1 for _ in open_source(clip))
decode_ms = (time.perf_counter() - began) * 1e3 / max(decoded, 1)
data = summary.to_dict()
print("BUDGET " + json.dumps({
    "imports_s": imported - started, "load_s": loaded - imported, "open_s": opened - loaded,
    "first_frame_s": first_at[0] - runner._first_frame_at if first_at else 0.0,
    "first_arrival_s": runner._first_frame_at - opened,
    "loop_s": summary.elapsed_s, "run_s": ran - opened, "close_s": closed - ran,
    "frames": summary.frames, "loop_fps": summary.fps,
    "stages": data["stages"],
    "inference_in_loop_ms": float(np.mean(summary.inference_ms)),
    "inference_alone_ms": float(np.mean(alone)),
    "inference_alone_p50_ms": float(np.median(alone)),
    "streams": model.backend.streams, "inference_alone_streams_fps": streams_fps,
    "decode_alone_ms": decode_ms,
}))
"""


def run(command: list[str], cwd: Path) -> tuple[float, str]:
    """Runs a child; returns (wall seconds, stdout + stderr); exits on failure."""
    began = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-2000:]}")
    return wall, done.stdout + done.stderr


def assets(workdir: Path, frames: int, imgsz: int) -> tuple[Path, Path]:
    """The YOLOv8n ONNX export and the 640x480 clip (made once, kept in ``workdir``)."""
    model = workdir / "yolov8n" / "model.onnx"
    if not model.exists():
        export = (
            "import sys; from pathlib import Path;"
            "from ubiq.models.zoo.ultralytics_adapter import export_ultralytics;"
            "export_ultralytics('yolov8n.yaml', Path(sys.argv[1]), imgsz=int(sys.argv[2]))"
        )
        run([sys.executable, "-c", export, str(model.parent), str(imgsz)], workdir)
    clip = workdir / f"clip_{frames}.mp4"
    if not clip.exists():
        from ubiq.hardware.sources.demo import make_pan_zoom_clip

        image = Path(__import__("ubiq").__file__).parent / "data" / "astronaut.jpg"
        make_pan_zoom_clip(
            image, clip, (177, 66, 272, 161), frames=frames, size=(640, 480), fps=30, seed=7
        )
    return model, clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", default=None, help="keep files here (default: a temp dir)")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="ubiq-budget-"))
    workdir.mkdir(parents=True, exist_ok=True)
    model, clip = assets(workdir, args.frames, args.imgsz)
    rounds = []
    for _ in range(args.rounds):
        startup, _ = run([sys.executable, "-c", "pass"], workdir)
        summary_path = workdir / "summary.json"
        wall, _ = run(
            [sys.executable, "-m", "ubiq", "detect", "--source", str(clip), "--model",
             str(model), "--jsonl", str(workdir / "cmd.jsonl"), "--summary-json",
             str(summary_path)],
            workdir,
        )  # fmt: skip
        summary = json.loads(summary_path.read_text())
        wall_one, _ = run(
            [sys.executable, "-m", "ubiq", "detect", "--source", str(clip), "--model",
             str(model), "--jsonl", str(workdir / "cmd1.jsonl"), "--streams", "1"],
            workdir,
        )  # fmt: skip
        probe_wall, out = run(
            [sys.executable, "-c", PROBE, str(model), str(clip), str(workdir / "probe.jsonl")],
            workdir,
        )
        budget = json.loads(out.split("BUDGET ", 1)[1].splitlines()[0])
        alone_fps = 1000.0 / budget["inference_alone_ms"]
        rounds.append(
            {
                "startup_s": startup,
                "wall_s": wall,
                "frames": summary["frames"],
                "summary_fps": summary["fps"],
                "whole_ratio": summary["frames"] / wall / alone_fps,
                "whole_streams_ratio": summary["frames"]
                / wall
                / budget["inference_alone_streams_fps"],
                "wall_one_s": wall_one,
                "whole_one_ratio": summary["frames"] / wall_one / alone_fps,
                "loop_ratio": budget["loop_fps"] / alone_fps,
                "probe_wall_s": probe_wall,
                **budget,
            }
        )
    rounds.sort(key=lambda r: r["whole_ratio"])
    mid = rounds[len(rounds) // 2]
    frames = mid["frames"]
    inference_total = frames * mid["inference_alone_ms"] / 1e3
    print(f"model {model} (YOLOv8n from yaml, imgsz {args.imgsz}); clip {clip} ({frames} frames)")
    print(f"{args.rounds} rounds; the median round by whole-command ratio:")
    print(
        f"  whole command: {mid['wall_s']:.2f} s wall, {frames / mid['wall_s']:.1f} FPS "
        f"({mid['streams']} frames at once); with --streams 1: {mid['wall_one_s']:.2f} s, "
        f"{frames / mid['wall_one_s']:.1f} FPS"
    )
    alone_ms = mid["inference_alone_ms"]
    print(
        f"  inference alone, one frame at a time: {alone_ms:.2f} ms/frame "
        f"({1000 / alone_ms:.1f} FPS; {inference_total:.2f} s for the clip); "
        f"{mid['streams']} at once: {mid['inference_alone_streams_fps']:.1f} FPS"
    )
    parts = [
        ("interpreter start-up (python -c pass)", mid["startup_s"]),
        ("imports (numpy, cv2, onnxruntime, ubiq)", mid["imports_s"]),
        ("model load (session creation)", mid["load_s"]),
        ("source open", mid["open_s"]),
        ("wait for the first frame", mid["first_arrival_s"]),
        ("frame loop (first frame's arrival to last)", mid["loop_s"]),
        ("close (threads joined, files closed)", mid["close_s"] + mid["run_s"] - mid["loop_s"]
         - mid["first_arrival_s"]),
    ]  # fmt: skip
    print("  budget of the instrumented child (seconds, share of its total):")
    total = sum(value for _, value in parts)
    for name, value in parts:
        print(f"    {name:<42} {value:6.3f}  {100 * value / total:5.1f}%")
    print(f"    {'total':<42} {total:6.3f}")
    print(f"  the first frame (warm-up inference) took {mid['first_frame_s'] * 1e3:.1f} ms of it")
    own_s = frames / mid["inference_alone_streams_fps"]  # the command's way, alone
    per_call_alone = 1e3 * mid["streams"] / mid["inference_alone_streams_fps"]
    print(
        f"  in the loop, per frame: inference {mid['inference_in_loop_ms']:.2f} ms a call "
        f"({mid['streams']} at once) vs {per_call_alone:.2f} ms a call alone at "
        f"{mid['streams']} at once (contention "
        f"{mid['inference_in_loop_ms'] - per_call_alone:+.2f} ms); decode of the clip alone "
        f"{mid['decode_alone_ms']:.2f} ms"
    )
    stages = ", ".join(
        f"{name} {v['p50_ms']:.2f}/{v['p90_ms']:.2f}" for name, v in mid["stages"].items()
    )
    print(f"  stage p50/p90 ms: {stages}")
    extra = mid["loop_s"] - own_s
    print(
        f"  loop time beyond inference alone at {mid['streams']} at once: {extra:.2f} s "
        f"({1e3 * extra / frames:.2f} ms/frame)"
    )

    def listed(key: str) -> str:  # each ratio's own median over the rounds
        median = sorted(r[key] for r in rounds)[len(rounds) // 2]
        return f"{median:.2f} (per round {', '.join(f'{r[key]:.2f}' for r in rounds)})"

    print(f"whole command FPS / inference-only FPS        : {listed('whole_ratio')} (bar >= 0.90)")
    print(f"  same, against inference-only {mid['streams']} at once     : "
          f"{listed('whole_streams_ratio')}")  # fmt: skip
    print(f"  --streams 1 command / inference-only FPS     : {listed('whole_one_ratio')}")
    print(f"loop FPS / inference-only FPS                 : {listed('loop_ratio')}")


if __name__ == "__main__":
    main()
