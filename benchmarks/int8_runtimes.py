"""fp32 against int8 of one detector on each CPU runtime, timed in interleaved rounds.

The int8 speed-up depends on the runtime's kernels as much as on the model. Measured on
this x86 CPU (AVX-512 VNNI and AMX) for ubiq-det-mnv2: int8 depthwise convolutions are
slower than fp32 ones in both ONNX Runtime and LiteRT's XNNPACK (whose only int8
depthwise kernel here is a mul32 one), and XNNPACK picks AMX tiles for the int8 pointwise
convolutions that lose to its AVX-512 fp32 GEMMs at 16-96 channels.
This script loads every model given, in one process with
one inference thread each, and times them in interleaved rounds (round r runs every model
``--runs`` times), so machine noise hits all of them alike; it prints p50/p90 per model
and each model's speed-up over the first.

::

    python benchmarks/int8_runtimes.py runs/det/model.onnx runs/det/q/model.int8.onnx \\
        runs/det/tfl/model_float32.tflite runs/det/tfl/model_int8.tflite
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ubiq.models.runtime.backend import load_backend  # noqa: E402


def _feed(backend) -> dict[str, np.ndarray]:
    tensor = backend.inputs[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in tensor.shape]
    rng = np.random.default_rng(0)
    if tensor.dtype in ("int8", "uint8"):
        info = np.iinfo(tensor.dtype)
        data = rng.integers(info.min, info.max + 1, size=shape).astype(tensor.dtype)
    else:
        data = rng.random(shape, dtype=np.float32)
    return {tensor.name: data}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=30, help="runs per model per round")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    backends = [load_backend(m, num_threads=args.threads, device="cpu") for m in args.models]
    feeds = [_feed(b) for b in backends]
    for backend, feed in zip(backends, feeds):
        for _ in range(20):
            backend.run(feed)
    times: list[list[float]] = [[] for _ in backends]
    for _ in range(args.rounds):
        for index, (backend, feed) in enumerate(zip(backends, feeds)):
            for _ in range(args.runs):
                start = time.perf_counter()
                backend.run(feed)
                times[index].append(time.perf_counter() - start)
    base = float(np.median(times[0]))
    print(f"{'model':<60} {'runtime':<12} {'p50 ms':>8} {'p90 ms':>8} {'speed-up':>9}")
    for path, backend, samples in zip(args.models, backends, times):
        p50, p90 = np.percentile(samples, [50, 90]) * 1000
        name = type(backend).__name__.replace("Backend", "").lower()
        print(f"{str(path)[-60:]:<60} {name:<12} {p50:8.2f} {p90:8.2f} {base / (p50 / 1000):8.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
