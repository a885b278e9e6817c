"""``ubiq detect --backend openvino`` against onnxruntime CPU, measured in one run.

For ``ubiq-det-mnv2`` (shipped in the package) and YOLOv8n at 320 (``--yolo``: a trained
export, such as Ultralytics' ``yolov8n.yaml`` trained at 320 on ``ubiq data synth``; else
built from its yaml and exported offline with random weights, reused from ``--workdir`` or
``/tmp/budget/yolov8n`` when already there), prints:

1. end to end: whole ``ubiq detect`` commands on a 640x480 clip, onnxruntime CPU, OpenVINO
   at its default precision and OpenVINO f32 in turn, one frame at a time with
   ``--threads``, then both runtimes as ``ubiq detect`` runs a file by default (frames in
   flight, one per core; OpenVINO with the THROUGHPUT hint), round after round; the FPS of
   each command's summary and the median of the per-round ratios to onnxruntime (one
   frame at a time);
2. inference alone, in one process, interleaved: p50 ms of onnxruntime fp32, OpenVINO
   default (bf16 on AVX-512 BF16 / AMX CPUs), OpenVINO f32, and the int8 QDQ model that
   ``ubiq compress`` makes (``quantize_static``) on both runtimes;
3. agreement with onnxruntime fp32: mAP50 of each one's detections on clip frames with
   onnxruntime's as ground truth (random weights: the confidence threshold is lowered
   until onnxruntime finds boxes, and the threshold is printed), the candidate's boxes
   ranked down to score 0.001 as mAP is computed, and cut at the same threshold;
4. the ceiling: inference alone with frames in flight as ``ubiq detect`` runs a file, on
   each runtime, plus the CPU a frame needs besides (reading the clip, preprocessing,
   decoding; measured alone): no pipeline could pass ``cores / (cores / FPS alone + rest)``,
   printed against onnxruntime's measured end to end (both ways), and the ratio of the two
   ceilings;
5. the OpenVINO model cache: model load + first inference in a fresh process (after its
   imports) with an empty cache, then again with the cache filled; and the whole
   ``ubiq detect --max-frames 1`` wall time, interpreter and imports included, both ways.

``--isa avx2`` runs the OpenVINO side with ``ONEDNN_MAX_CPU_ISA=AVX2`` (OpenVINO's CPU
plugin then uses AVX2 kernels; bf16 is not available there, so its default falls to f32).

    .venv/bin/python benchmarks/openvino_vs_onnxruntime.py [--rounds 3] [--frames 200]
        [--threads 2] [--isa native|avx2] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

CONFIGS = (
    ("onnxruntime fp32", ["--backend", "onnxruntime", "--device", "cpu"]),
    ("openvino default", ["--backend", "openvino"]),
    ("openvino f32", ["--device", "openvino:CPU:f32"]),
)
# ubiq detect's default for a file: frames in flight, one per core (no --threads).
STREAM_CONFIGS = (
    ("onnxruntime fp32, frames at once", ["--backend", "onnxruntime", "--device", "cpu"]),
    ("openvino default, THROUGHPUT", ["--backend", "openvino"]),
)


def run(command: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{done.stderr[-2000:]}")
    return time.perf_counter() - started, done


def models(workdir: Path, trained: str | None) -> dict[str, Path]:
    if trained:  # a trained YOLOv8n-320 export (with its model.json), e.g. from
        # train_ultralytics("yolov8n", data.yaml, out, imgsz=320) on `ubiq data synth`
        return {
            "ubiq-det-mnv2": REPO / "ubiq" / "data" / "models" / "ubiq-det-mnv2.onnx",
            "yolov8n-320 trained": Path(trained),
        }
    yolo = workdir / "yolov8n" / "model.onnx"
    if not yolo.exists():
        cached = Path("/tmp/budget/yolov8n")
        if (cached / "model.onnx").exists():
            shutil.copytree(cached, yolo.parent, dirs_exist_ok=True)
        else:
            from detect_budget import assets

            assets(workdir, 1, 320)
    return {
        "ubiq-det-mnv2": REPO / "ubiq" / "data" / "models" / "ubiq-det-mnv2.onnx",
        "yolov8n-320": yolo,
    }


def clip_for(workdir: Path, frames: int) -> Path:
    clip = workdir / f"clip_{frames}.mp4"
    if not clip.exists():
        from ubiq.hardware.sources.demo import make_pan_zoom_clip

        image = REPO / "ubiq" / "data" / "astronaut.jpg"
        make_pan_zoom_clip(
            image, clip, (177, 66, 272, 161), frames=frames, size=(640, 480), fps=30, seed=7
        )
    return clip


def end_to_end(model: Path, clip: Path, rounds: int, threads: int, env: dict, ov_env: dict):
    """FPS of whole commands, configs interleaved per round; ratios per round."""
    configs = [(n, ["--threads", str(threads), *f]) for n, f in CONFIGS] + list(STREAM_CONFIGS)
    fps: dict[str, list[float]] = {name: [] for name, _ in configs}
    summary = Path(env["UBIQ_HOME"]) / "summary.json"
    for _ in range(rounds):
        for name, flags in configs:
            command = [
                sys.executable,
                "-m",
                "ubiq",
                "detect",
                "--source",
                str(clip),
                "--model",
                str(model),
                "--summary-json",
                str(summary),
                "--no-stages",
                *flags,
            ]
            run(command, ov_env if "openvino" in name else env)
            fps[name].append(json.loads(summary.read_text())["fps"])
    base = fps["onnxruntime fp32"]
    ratios = {
        name: statistics.median(v / b for v, b in zip(values, base)) for name, values in fps.items()
    }
    return fps, ratios


PROBE = r"""
import json, sys
sys.path.insert(0, sys.argv[5])
sys.path.insert(0, sys.argv[5] + "/benchmarks")
from ubiq.models.runtime.backend import load_backend
from ubiq.models.runtime.device_sweep import Candidate, bench_devices
from ubiq.models.runtime.model import DetectionModel
from ubiq.hardware.sources import open_source
from ubiq.models.runtime.device_sweep import CANDIDATE_CONFIDENCE, map50_against
model, qdq, clip, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
out = {}
candidates = [Candidate("onnxruntime", "cpu"), Candidate("openvino", "openvino:CPU"),
              Candidate("openvino", "openvino:CPU:f32")]
sweep = bench_devices(model, candidates=candidates, runs=150, warmup=10, rounds=5,
                      threads=threads, record=False)
out["sweep"] = sweep.to_dict()
if qdq != "-":
    q = bench_devices(qdq, candidates=candidates, runs=150, warmup=10, rounds=5,
                      threads=threads, record=False)
    out["int8"] = q.to_dict()
frames = [f.image for _, f in zip(range(60), open_source(clip))]
reference = DetectionModel.load(model, backend="onnxruntime", device="cpu")
for conf in (0.25, 0.1, 0.05, 0.02, 0.01):
    reference.confidence_threshold = conf
    expected = [reference(f) for f in frames]
    if sum(len(d) for d in expected) >= 20:
        break
out["conf"] = conf
out["boxes"] = sum(len(d) for d in expected)
agreement, cut = {}, {}
for name, path, backend, device in (
    ("openvino default", model, "openvino", "openvino:CPU"),
    ("openvino f32", model, "openvino", "openvino:CPU:f32"),
    ("onnxruntime int8", qdq, "onnxruntime", "cpu"),
    ("openvino int8", qdq, "openvino", "openvino:CPU"),
    ("openvino int8 f32", qdq, "openvino", "openvino:CPU:f32"),
):
    if path == "-":
        continue
    # Ranked down to CANDIDATE_CONFIDENCE, as mAP is computed (and ubiq bench does); and
    # cut at the reference's own threshold (a score flip across it then counts as a miss).
    m = DetectionModel.load(path, backend=backend, device=device,
                            confidence_threshold=CANDIDATE_CONFIDENCE)
    ranked = [m(f) for f in frames]
    agreement[name] = map50_against(expected, ranked)
    cut[name] = map50_against(expected, [d[d.confidence >= conf] for d in ranked])
out["map50"], out["map50_cut"] = agreement, cut

# The ceiling of end to end: inference alone with frames in flight as `ubiq detect` runs a
# file (one per core; OpenVINO THROUGHPUT), its CPU per frame taken as cores / FPS, plus
# what a frame needs besides (reading the clip with one FFmpeg thread, preprocessing,
# decoding) measured alone.
import time
from concurrent.futures import ThreadPoolExecutor
import cv2
from ceiling import ceiling_fps, cores, rest_cpu_ms
from ubiq.models.runtime.backend import choose_streams
cv2.setNumThreads(1)
streams = choose_streams(True, None, None)
reference.confidence_threshold = 0.25
rest = rest_cpu_ms(clip, frames, reference.prepare, reference.infer, reference.decode)
prepared = [reference.prepare(f) for f in frames]
ceiling = {"rest_ms": rest, "cores": cores(), "streams": streams, "fps": {}}
for name, backend, device in (("onnxruntime fp32", "onnxruntime", "cpu"),
                              ("openvino default", "openvino", "openvino:CPU")):
    m = DetectionModel.load(model, backend=backend, device=device, streams=streams)
    tensors = [t for t, _ in prepared] * 4
    best = 0.0
    with ThreadPoolExecutor(m.backend.streams) as pool:
        list(pool.map(m.infer, tensors[:20]))
        for _ in range(3):
            started = time.perf_counter()
            list(pool.map(m.infer, tensors))
            best = max(best, len(tensors) / (time.perf_counter() - started))
    ceiling["fps"][name] = {"alone": best, "ceiling": ceiling_fps(best, rest)}
out["ceiling"] = ceiling
print("RESULT" + json.dumps(out))
"""

FIRST_FRAME = r"""
import sys, time
from ubiq.models.runtime.model import DetectionModel
import openvino, numpy, cv2
started = time.perf_counter()
model = DetectionModel.load(sys.argv[1], backend=sys.argv[2])  # compile + a first inference
print("FIRST", (time.perf_counter() - started) * 1e3, model.backend.device)
"""


def _rounded(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def cache_starts(model: Path, env: dict, repeats: int) -> dict[str, float]:
    """Load + first frame (in a fresh process) with an empty, then a filled cache."""
    times: dict[str, list[float]] = {"first": [], "second": [], "first_wall": [], "second_wall": []}
    for _ in range(repeats):
        home = Path(tempfile.mkdtemp(prefix="ubiq-ov-cache-"))
        local = {**env, "UBIQ_HOME": str(home)}
        for key in ("first", "second"):
            _, done = run([sys.executable, "-c", FIRST_FRAME, str(model), "openvino"], local)
            times[key].append(float(done.stdout.split("FIRST")[1].split()[0]))
        shutil.rmtree(home)
        home.mkdir()
        for key in ("first_wall", "second_wall"):
            wall, _ = run(
                [
                    sys.executable,
                    "-m",
                    "ubiq",
                    "detect",
                    "--model",
                    str(model),
                    "--backend",
                    "openvino",
                    "--max-frames",
                    "1",
                ],
                local,
            )
            times[key].append(wall * 1e3)
        shutil.rmtree(home)
    return {key: statistics.median(values) for key, values in times.items()}


def quantized(model: Path, workdir: Path, env: dict) -> Path:
    """The QDQ int8 model ``ubiq compress`` makes (quantize_static, default candidate)."""
    out = workdir / "int8" / f"{model.parent.name}-{model.stem}.int8.onnx"
    if out.exists():
        return out
    code = (
        "import sys, cv2; from pathlib import Path;"
        "from ubiq.models.toolchain.compress.quantize import quantize_static;"
        "from ubiq.models.runtime.device_sweep import agreement_images;"
        "folder = Path(sys.argv[3]); folder.mkdir(parents=True, exist_ok=True); paths = []\n"
        "for i, image in enumerate(agreement_images() * 4):\n"
        "    p = folder / f'{i}.jpg'; paths.append(p)\n"
        "    cv2.imwrite(str(p), cv2.resize(image[i % 7 * 10 :], (640, 480)))\n"
        "quantize_static(sys.argv[1], sys.argv[2], paths)"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    run([sys.executable, "-c", code, str(model), str(out), str(workdir / "calib")], env)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--isa", choices=("native", "avx2"), default="native")
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 QDQ models")
    parser.add_argument("--workdir", default=None)
    parser.add_argument(
        "--yolo", default=None, help="a trained YOLOv8n-320 ONNX export (default: random weights)"
    )
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="ubiq-ov-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    home = workdir / "home"
    env = {**os.environ, "UBIQ_HOME": str(home), "PYTHONPATH": str(REPO)}
    ov_env = dict(env)
    if args.isa == "avx2":
        ov_env["ONEDNN_MAX_CPU_ISA"] = "AVX2"
    clip = clip_for(workdir, args.frames)
    print(f"workdir {workdir}; {args.threads} threads; OpenVINO ISA {args.isa}")
    for name, model in models(workdir, args.yolo).items():
        qdq = "-" if args.no_int8 else str(quantized(model, workdir, env))
        _, done = run(
            [sys.executable, "-c", PROBE, str(model), qdq, str(clip), str(args.threads), str(REPO)],
            ov_env,
        )
        probe = json.loads(done.stdout.split("RESULT", 1)[1])
        fps, ratios = end_to_end(model, clip, args.rounds, args.threads, env, ov_env)
        cache = cache_starts(model, ov_env, args.rounds)
        print(f"\n== {name} ({model}) ==")
        print(
            f"{'runtime':18} {'runs on':10} {'p50 ms':>7} {'FPS e2e':>8} {'e2e ratio':>9} "
            f"{'mAP50':>6} {'cut':>6}"
        )
        labels = {
            "cpu": "onnxruntime fp32",
            "openvino:CPU": "openvino default",
            "openvino:CPU:f32": "openvino f32",
        }
        for result in probe["sweep"]["results"]:
            label = labels[result["device"]]
            map50 = probe["map50"].get(label, 1.0 if label == "onnxruntime fp32" else None)
            cut = probe["map50_cut"].get(label, 1.0 if label == "onnxruntime fp32" else None)
            print(
                f"{label:18} {result['runs_on']:10} {result['latency_p50_ms']:7.2f} "
                f"{statistics.median(fps[label]):8.1f} {ratios[label]:8.2f}x "
                f"{_rounded(map50):>6} {_rounded(cut):>6}"
            )
        if "int8" in probe:
            for result in probe["int8"]["results"]:
                backend = (
                    "onnxruntime int8"
                    if result["backend"] == "onnxruntime"
                    else ("openvino int8" + (" f32" if result["device"].endswith("f32") else ""))
                )
                print(
                    f"{backend:18} {result['runs_on']:10} {result['latency_p50_ms']:7.2f} "
                    f"{'':>8} {'':>9} {_rounded(probe['map50'].get(backend)):>6} "
                    f"{_rounded(probe['map50_cut'].get(backend)):>6}"
                )
        print(
            f"agreement: mAP50 vs onnxruntime fp32 on 60 clip frames at conf {probe['conf']} "
            f"({probe['boxes']} reference boxes); mAP50 ranks the candidate's boxes down to "
            f"score 0.001 (as mAP is computed, and as ubiq bench --devices all checks); cut: "
            f"the candidate's boxes cut at the reference's threshold too"
        )
        print(
            f"model cache: load + first inference {cache['first']:.0f} ms -> "
            f"{cache['second']:.0f} ms "
            f"({cache['first'] / cache['second']:.2f}x); whole `ubiq detect --max-frames 1` "
            f"{cache['first_wall']:.0f} ms -> {cache['second_wall']:.0f} ms "
            f"({cache['first_wall'] / cache['second_wall']:.2f}x)"
        )
        for label, _ in STREAM_CONFIGS:
            print(
                f"{label:34} end to end {statistics.median(fps[label]):8.1f} FPS "
                f"{ratios[label]:8.2f}x"
            )
        print("FPS per round: " + "; ".join(f"{k} {v}" for k, v in fps.items()))
        ceiling = probe["ceiling"]
        rest = ceiling["rest_ms"]
        base = statistics.median(fps["onnxruntime fp32"])
        streamed = statistics.median(fps[STREAM_CONFIGS[0][0]])
        print(
            f"ceiling on {ceiling['cores']} cores ({ceiling['streams']} frames in flight; the "
            "rest of a frame, measured alone: "
            + ", ".join(f"{k} {v:.2f} ms" for k, v in rest.items())
            + "):"
        )
        for label, value in ceiling["fps"].items():
            print(
                f"  {label:18} inference alone {value['alone']:7.1f} FPS, end to end at most "
                f"{value['ceiling']:7.1f} FPS: {value['ceiling'] / base:.2f}x onnxruntime's "
                f"measured end to end one frame at a time, {value['ceiling'] / streamed:.2f}x "
                "with frames at once"
            )
        ceilings = [value["ceiling"] for value in ceiling["fps"].values()]
        alone = [value["alone"] for value in ceiling["fps"].values()]
        print(
            f"  openvino / onnxruntime: inference alone {alone[1] / alone[0]:.2f}x, ceilings "
            f"{ceilings[1] / ceilings[0]:.2f}x (what the ratio end to end can be when both "
            "pipelines lose nothing beyond the rest of a frame)"
        )


if __name__ == "__main__":
    main()
