"""Two frames a step on the CPU: one batch of two, or two frames in flight?

Several sources share one model. A GPU gains from stacking their frames into one batch; on
a CPU it is not clear, so this measures, on YOLOv8n at 320 exported with a dynamic batch
axis (Ultralytics, from its yaml: no download, random weights), in interleaved rounds:

1. one frame at a time, one session with ``--threads`` intra-op threads (the reference);
2. batches of two frames, same session;
3. ``--threads`` frames in flight, each a single-threaded call of one session from a pool
   of threads (what ubiq does for files and for several cameras, ``streams``).

Prints frames per second of each and the ratios to the reference, the median round shown.

    .venv/bin/python benchmarks/batch_vs_streams.py [--rounds 3] [--frames 120] [--threads 2]
        [--workdir DIR]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

EXPORT = (
    "from ultralytics import YOLO; "
    "YOLO('yolov8n.yaml').export(format='onnx', imgsz=320, dynamic=True, simplify=False)"
)


def dynamic_yolo(workdir: Path) -> Path:
    model = workdir / "yolov8n.onnx"
    if not model.exists():
        done = subprocess.run(
            [sys.executable, "-c", EXPORT], cwd=workdir, capture_output=True, text=True
        )
        if done.returncode != 0 or not model.exists():
            sys.exit(f"export failed (needs the [yolo] extra):\n{done.stderr[-2000:]}")
    return model


def main() -> None:
    import numpy as np
    import onnxruntime as ort

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="ubiq-batch-"))
    workdir.mkdir(parents=True, exist_ok=True)
    model = dynamic_yolo(workdir)

    def session(threads: int):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])

    shared, single = session(args.threads), session(1)
    name = shared.get_inputs()[0].name
    rng = np.random.default_rng(0)
    one = rng.random((1, 3, 320, 320), dtype=np.float32)
    two = rng.random((2, 3, 320, 320), dtype=np.float32)
    pool = ThreadPoolExecutor(args.threads)

    def one_at_a_time() -> None:
        for _ in range(args.frames):
            shared.run(None, {name: one})

    def batches_of_two() -> None:
        for _ in range(args.frames // 2):
            shared.run(None, {name: two})

    def in_flight() -> None:
        list(pool.map(lambda _: single.run(None, {name: one}), range(args.frames)))

    ways = {
        f"one frame at a time, {args.threads} threads": one_at_a_time,
        f"batches of two, {args.threads} threads": batches_of_two,
        f"{args.threads} frames in flight, 1 thread each": in_flight,
    }
    for way in ways.values():  # warm-up
        way()
    fps: dict[str, list[float]] = {key: [] for key in ways}
    for _ in range(args.rounds):
        for key, way in ways.items():
            began = time.perf_counter()
            way()
            fps[key].append(args.frames // 2 * 2 / (time.perf_counter() - began))
    reference = fps[next(iter(ways))]
    print(f"{model} (YOLOv8n, dynamic batch, imgsz 320), {args.rounds} rounds, median:")
    for key, values in fps.items():
        ratio = statistics.median(v / r for v, r in zip(values, reference, strict=True))
        print(f"  {key:<36} {statistics.median(values):7.1f} FPS  {ratio:5.2f}x")


if __name__ == "__main__":
    main()
