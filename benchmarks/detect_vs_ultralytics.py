"""End-to-end `ubiq detect` against inference-only speed and against `yolo predict`.

Builds YOLOv8n from its yaml (no download) and exports it to ONNX at imgsz 320 with
Ultralytics, makes a 640x480 clip of 300 frames from a real photograph, then in one run:

1. `ubiq bench model.onnx`: inference-only FPS (backend call alone, after warm-up);
2. `ubiq detect --source clip --model model.onnx --jsonl ...`: wall time of the whole
   command (start-up included), its end-to-end FPS and peak RSS, and whether torch or
   ultralytics was imported;
3. `yolo predict model=model.onnx source=clip imgsz=320`: wall time and peak RSS;

and prints the ratios. Each command runs as a child process; peak RSS comes from
``os.wait4``. Needs the ``[yolo]`` extra.

    .venv/bin/python benchmarks/detect_vs_ultralytics.py [--frames 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def run_child(command: list[str], cwd: Path) -> tuple[float, float, str]:
    """Runs a command; returns (wall seconds, peak RSS MiB, stderr)."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall_s = time.perf_counter() - start
    stdout, stderr = process.stdout.read(), process.stderr.read()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        sys.exit(f"command failed ({process.returncode}): {' '.join(command)}\n{stderr[-2000:]}")
    return wall_s, usage.ru_maxrss / 1024.0, stdout + stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each command; best kept")
    parser.add_argument("--workdir", default=None, help="keep files here (default: a temp dir)")
    args = parser.parse_args()

    # The export (torch) runs in a child: this process stays small, because a child's
    # ru_maxrss starts from its parent's peak at fork.
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="ubiq-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    model = workdir / "yolov8n" / "model.onnx"
    if not model.exists():
        export = (
            "import sys; from pathlib import Path;"
            "from ubiq.models.zoo.ultralytics_adapter import export_ultralytics;"
            "export_ultralytics('yolov8n.yaml', Path(sys.argv[1]), imgsz=int(sys.argv[2]))"
        )
        run_child([sys.executable, "-c", export, str(model.parent), str(args.imgsz)], workdir)
    clip = workdir / f"clip_{args.frames}.mp4"
    if not clip.exists():
        from ubiq.hardware.sources.demo import make_pan_zoom_clip

        image = Path(__import__("ubiq").__file__).parent / "data" / "astronaut.jpg"
        make_pan_zoom_clip(
            image, clip, (177, 66, 272, 161), frames=args.frames, size=(640, 480), fps=30, seed=7
        )
    # yolo predict should not see our sidecar manifest; it reads the ONNX metadata itself.
    yolo_model = workdir / "yolo_copy" / "model.onnx"
    yolo_model.parent.mkdir(exist_ok=True)
    shutil.copy(model, yolo_model)

    results: dict[str, list] = {"bench_fps": [], "ubiq": [], "yolo": []}
    for _ in range(args.repeats):
        _, _, out = run_child(
            [str(BIN / "ubiq"), "bench", str(model), "--json", "--runs", str(args.frames)], workdir
        )
        results["bench_fps"].append(json.loads(out[: out.rindex("]") + 1])[0]["fps"])
        summary_path = workdir / "summary.json"
        probe = (
            "import sys, runpy; sys.argv = ['ubiq'] + sys.argv[1:];"
            "from ubiq.cli import main; code = main(sys.argv[1:]);"
            "bad = [m for m in ('torch', 'ultralytics') if m in sys.modules];"
            "print('IMPORTED', bad, file=sys.stderr); raise SystemExit(code)"
        )
        wall, rss, out = run_child(
            [
                sys.executable,
                "-c",
                probe,
                "detect",
                "--source",
                str(clip),
                "--model",
                str(model),
                "--jsonl",
                str(workdir / "ubiq.jsonl"),
                "--summary-json",
                str(summary_path),
            ],
            workdir,
        )
        summary = json.loads(summary_path.read_text())
        imported = out.split("IMPORTED", 1)[1].splitlines()[0].strip()
        results["ubiq"].append((wall, rss, summary["fps"], summary["frames"], imported))
        wall, rss, _ = run_child(
            [
                str(BIN / "yolo"),
                "predict",
                f"model={yolo_model}",
                f"source={clip}",
                f"imgsz={args.imgsz}",
                "save=False",
                "verbose=False",
                "device=cpu",
            ],
            workdir,
        )
        results["yolo"].append((wall, rss))

    inference_fps = max(results["bench_fps"])
    ubiq_best = min(results["ubiq"], key=lambda r: r[0])
    e2e_fps = max(r[2] for r in results["ubiq"])
    yolo_best = min(results["yolo"], key=lambda r: r[0])
    print(
        f"model {model} (YOLOv8n from yaml, imgsz {args.imgsz}); clip {clip} "
        f"({ubiq_best[3]} frames, 640x480); best of {args.repeats}"
    )
    print(f"inference-only (ubiq bench)     : {inference_fps:7.1f} FPS")
    print(
        f"ubiq detect end-to-end          : {e2e_fps:7.1f} FPS   "
        f"ratio to inference-only {e2e_fps / inference_fps:.2f} (bar >= 0.90)"
    )
    print(
        f"ubiq detect whole command       : {ubiq_best[0]:7.2f} s  peak RSS {ubiq_best[1]:.0f} MB"
        f" (bar < 300)  torch/ultralytics imported: {ubiq_best[4]}"
    )
    print(
        f"yolo predict whole command      : {yolo_best[0]:7.2f} s  peak RSS {yolo_best[1]:.0f} MB"
    )
    print(f"yolo predict time / ubiq detect time: {yolo_best[0] / ubiq_best[0]:.2f}x (bar >= 1.8)")
    print("all runs:", json.dumps(results))


if __name__ == "__main__":
    main()
