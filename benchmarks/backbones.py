"""Backbone table: parameters, MACs and ONNX Runtime latency at 224x224 on this machine.

```bash
.venv/bin/python benchmarks/backbones.py [--width 1.0] [--runs 50] [--threads 2] [--json OUT]
```

Each backbone's 1000-class classifier (as published) is built with random weights (and
BatchNorm statistics from a random batch, so activations keep a normal range),
exported to ONNX (opset 17) and timed with onnxruntime on the CPU: 10 warm-up runs, then
``--runs`` timed runs, reporting p50 and p90 in ms. The models are timed in interleaved
rounds (one run of each in turn), so the load of a shared machine falls on all of them
alike; the last column is each model's p50 relative to MobileNetV2's in the same run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def _calibrated(model, shape):
    """Random weights with BatchNorm statistics from one random batch.

    A fresh network in eval mode shrinks its activations layer by layer into denormal
    floats, which CPUs process many times slower: timing it would measure that, not the
    architecture.
    """
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.rand(4, *shape[1:]))
    return model.eval()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--imgsz", type=int, default=224)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the rows as JSON here")
    args = parser.parse_args()

    import onnxruntime as ort
    import torch

    from ubiq.models.toolchain.backbones import BACKBONES, build_classifier
    from ubiq.models.toolchain.backbones.profile import count_macs, count_parameters

    shape = (1, 3, args.imgsz, args.imgsz)
    sessions, rows = {}, []
    with tempfile.TemporaryDirectory() as work:
        for name in BACKBONES:
            model = _calibrated(build_classifier(name, 1000, args.width), shape)
            path = Path(work) / f"{name}.onnx"
            with torch.no_grad():
                torch.onnx.export(
                    model,
                    (torch.rand(shape),),
                    str(path),
                    opset_version=17,
                    dynamo=False,
                    input_names=["images"],
                )
            options = ort.SessionOptions()
            options.intra_op_num_threads = args.threads
            options.inter_op_num_threads = 1
            sessions[name] = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
            rows.append(
                {
                    "name": name,
                    "width": args.width,
                    "params": count_parameters(model),
                    "macs": count_macs(model, shape),
                    "onnx_bytes": path.stat().st_size,
                }
            )
    image = np.random.default_rng(0).random(shape, dtype=np.float32)
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for round_index in range(10 + args.runs):
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run(None, {"images": image})
            if round_index >= 10:
                times[name].append((time.perf_counter() - start) * 1e3)
    reference = float(np.percentile(times["mobilenet_v2"], 50))
    print(
        f"imgsz {args.imgsz}, width {args.width}, onnxruntime {ort.__version__}, "
        f"{args.threads} threads, {args.runs} runs"
    )
    print(
        f"{'backbone':20s} {'params':>9s} {'MACs':>9s} {'p50 ms':>8s} {'p90 ms':>8s}"
        f" {'vs mnv2':>8s}"
    )
    for row in rows:
        samples = times[row["name"]]
        row["p50_ms"] = float(np.percentile(samples, 50))
        row["p90_ms"] = float(np.percentile(samples, 90))
        row["p50_vs_mobilenet_v2"] = row["p50_ms"] / reference
        print(
            f"{row['name']:20s} {row['params'] / 1e6:8.2f}M {row['macs'] / 1e6:8.1f}M "
            f"{row['p50_ms']:8.2f} {row['p90_ms']:8.2f} {row['p50_vs_mobilenet_v2']:7.2f}x"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
