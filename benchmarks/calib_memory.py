"""Peak memory of int8 calibration, all images at once against chunks of images.

onnxruntime's entropy and percentile calibrators keep every intermediate tensor of every
calibration image until the end; ``quantize_static(chunk=N)`` (ubiq's default, 8) makes
it calibrate N images at a time and merge their histograms. For each ``--chunks`` value
this quantizes the model in a fresh process (so the peak resident memory is that run's
alone) and prints peak RSS, time, and the int8 model's agreement with fp32 (output SQNR
and cosine on held-out images, the same for every run) to show the merged histograms
calibrate as well.

::

    python benchmarks/calib_memory.py [--model ubiq-det-mnv2] --calib DATA.yaml \
        [--images 64] [--calibrator entropy] [--chunks all,8,1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_CHILD = """
import json, resource, sys, time
from pathlib import Path
from ubiq.models.toolchain.compress import quantize as q
model, out, calibrator, chunk, images = sys.argv[1:6]
images = [Path(p) for p in json.loads(images)]
started = time.perf_counter()
q.quantize_static(model, out, images, q.QuantCandidate(calibrator=calibrator),
                  chunk=None if chunk == "all" else int(chunk))
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # this process's own peak
print(json.dumps({"seconds": time.perf_counter() - started, "peak_kb": peak_kb}))
"""


def run_child(model: Path, out: Path, calibrator: str, chunk: str, images: list[Path]) -> dict:
    """Quantizes in a fresh process; returns its seconds and its own peak RSS (kB)."""
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(model), str(out), calibrator, chunk,
         json.dumps([str(p) for p in images])],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"chunk {chunk}: {result.stderr.strip().splitlines()[-1]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    from ubiq.models.runtime.model import resolve_model_path
    from ubiq.models.toolchain.compress.sensitivity import calibration_images, fidelity

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ubiq-det-mnv2")
    parser.add_argument("--calib", required=True, help="data.yaml or image folder")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument(
        "--calibrator", default="entropy", choices=("minmax", "entropy", "percentile")
    )
    parser.add_argument("--chunks", default="all,8,1", help="'all' or a number, comma-separated")
    args = parser.parse_args()

    model = resolve_model_path(args.model)
    images = calibration_images(args.calib, count=args.images)
    held_out = calibration_images(args.calib, count=16, split="val")
    print(f"{model.name}: {args.calibrator} calibration on {len(images)} images of {args.calib}")
    print(f"{'chunk':>6} | {'peak RSS MB':>11} | {'seconds':>7} | {'SQNR dB':>7} | {'cosine':>7}")
    with tempfile.TemporaryDirectory(prefix="ubiq-calib-") as folder:
        for chunk in args.chunks.split(","):
            out = Path(folder) / f"model.{chunk}.int8.onnx"
            row = run_child(model, out, args.calibrator, chunk, images)
            peak = f"{row['peak_kb'] / 1024:.0f}"
            agree = fidelity(model, out, held_out)
            print(
                f"{chunk:>6} | {peak:>11} | {row['seconds']:7.1f} | {agree['sqnr_db']:7.2f} | "
                f"{agree['cosine']:7.5f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
