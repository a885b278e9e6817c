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

from detect_budget import assets  # the same model export and clip (benchmarks/ is on sys.path)

BIN = Path(sys.executable).parent


def run_child(command: list[str], cwd: Path) -> tuple[float, float, str]:
    """Runs a command; returns (wall seconds, peak RSS MiB, stdout + stderr).

    Output goes to temporary files, not pipes, so a chatty child cannot block on a full
    pipe while this process waits for it in ``os.wait4``.
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        wall_s = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if process.returncode != 0:
        sys.exit(f"command failed ({process.returncode}): {' '.join(command)}\n{stderr[-2000:]}")
    return wall_s, usage.ru_maxrss / 1024.0, stdout + stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument(
        "--repeats", type=int, default=5, help="rounds; each runs the three commands in turn"
    )
    parser.add_argument("--workdir", default=None, help="keep files here (default: a temp dir)")
    args = parser.parse_args()

    # The export (torch) runs in a child: this process stays small, because a child's
    # ru_maxrss starts from its parent's peak at fork.
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="ubiq-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    model, clip = assets(workdir, args.frames, args.imgsz)
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

    # The same comparison inside one process, alternating: the process's own placement on
    # this shared machine (which moves inference speed by +-20% from one process to the
    # next) then cancels out of the ratio.
    alternate = (
        "import json, sys; from ubiq.cli import main;"
        "from ubiq.models.runtime.bench import bench_model;"
        "model, clip, out, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]);"
        "pairs = []\n"
        "for _ in range(rounds):\n"
        "    b = bench_model(model, runs=300, warmup=20).fps\n"
        "    main(['detect', '--source', clip, '--model', model, '--jsonl', out + '.jsonl',"
        " '--summary-json', out])\n"
        "    pairs.append((b, json.load(open(out))['fps']))\n"
        "print(json.dumps(pairs))"
    )
    _, _, out = run_child(
        [
            sys.executable,
            "-c",
            alternate,
            str(model),
            str(clip),
            str(workdir / "alt.json"),
            str(args.repeats),
        ],
        workdir,
    )
    pairs = json.loads(out[out.index("[[") : out.rindex("]]") + 2])
    same_process = sorted(detect / bench for bench, detect in pairs)
    results["same_process_pairs"] = pairs

    # The machine is shared and noisy: each round runs the three commands back to back,
    # and the ratios are taken within a round, then the median over rounds is reported.
    e2e_ratios = sorted(u[2] / b for u, b in zip(results["ubiq"], results["bench_fps"]))
    wall_ratios = sorted(y[0] / u[0] for u, y in zip(results["ubiq"], results["yolo"]))
    middle = len(e2e_ratios) // 2

    def median(values) -> float:
        return sorted(values)[middle]

    ubiq_rss = max(u[1] for u in results["ubiq"])
    yolo_rss = max(y[1] for y in results["yolo"])
    imported = sorted({u[4] for u in results["ubiq"]})
    print(
        f"model {model} (YOLOv8n from yaml, imgsz {args.imgsz}); clip {clip} "
        f"({results['ubiq'][0][3]} frames, 640x480); {args.repeats} rounds, medians"
    )
    print(f"inference-only FPS (ubiq bench)      : {median(results['bench_fps']):7.1f}")
    print(f"ubiq detect end-to-end FPS           : {median(u[2] for u in results['ubiq']):7.1f}")
    print(f"ubiq detect whole command            : {median(u[0] for u in results['ubiq']):7.2f} s")
    print(f"yolo predict whole command           : {median(y[0] for y in results['yolo']):7.2f} s")
    print(
        f"end-to-end / inference-only FPS      : {e2e_ratios[middle]:.2f} (bar >= 0.90; "
        f"per round {', '.join(f'{r:.2f}' for r in e2e_ratios)})"
    )
    print(
        f"  the same, alternating in one process: {same_process[middle]:.2f} (per round "
        f"{', '.join(f'{r:.2f}' for r in same_process)})"
    )
    print(
        f"yolo predict time / ubiq detect time : {wall_ratios[middle]:.2f}x (bar >= 1.8; "
        f"per round {', '.join(f'{r:.2f}' for r in wall_ratios)})"
    )
    print(f"peak RSS: ubiq detect {ubiq_rss:.0f} MB (bar < 300), yolo predict {yolo_rss:.0f} MB")
    print(f"torch/ultralytics imported by ubiq detect: {', '.join(imported)}")
    print("all runs:", json.dumps(results))


if __name__ == "__main__":
    main()
