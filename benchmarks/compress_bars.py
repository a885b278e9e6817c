"""The compression bars, measured in one run: ``ubiq compress`` on a detector, ratios printed.

```bash
.venv/bin/python benchmarks/compress_bars.py --checkpoint RUN/weights/best.pt \
    --train DATA.yaml --val HELDOUT.yaml [--prune 0.5] [--threads 1] [--out DIR]
```

Runs ``ubiq compress CKPT [--prune R] --quantize int8`` (calibration on ``--train``'s
train split, metric on ``--val``) and prints, from its ``report.json``: every artifact's
p50 latency, speed-up over fp32 (all timed in interleaved rounds in the same process),
mAP50 and its change in points, and the fp32-agreement of its detections, then which
artifact the gates handed over. Use a held-out ``--val`` set the model never saw
(``ubiq data synth --seed NEW``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--train", required=True, help="data.yaml: fine-tuning and calibration")
    parser.add_argument("--val", required=True, help="held-out data.yaml for mAP50")
    parser.add_argument("--prune", type=float, help="MACs ratio to prune to first")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="ubiq-compress-"))
    command = [sys.executable, "-m", "ubiq", "compress", args.checkpoint, "--quantize", "int8"]
    command += ["--train", args.train, "--calib", args.train, "--val", args.val]
    command += ["--threads", str(args.threads), "--out", str(out)]
    if args.prune:
        command += ["--prune", str(args.prune)]
    completed = subprocess.run(command, check=False)
    if completed.returncode:
        return completed.returncode
    report = json.loads((out / "report.json").read_text())
    rows = report["artifacts"]
    base = rows[0]
    print(
        f"\n{'artifact':10s} {'p50 ms':>8s} {'speed-up':>9s} {'mAP50':>7s} {'change':>7s} "
        f"{'agree':>6s}  accepted"
    )
    for row in rows:
        speed = base["latency_p50_ms"] / row["latency_p50_ms"]
        agree = row["fidelity"].get("det_map50_vs_fp32")
        print(
            f"{row['name']:10s} {row['latency_p50_ms']:8.2f} {speed:8.2f}x "
            f"{row['metric']:7.2f} {row['metric_change']:+7.2f} "
            f"{'-' if agree is None else f'{agree:.3f}':>6s}  {row['accepted']}"
        )
    for gate in report["gates"]:
        print(f"gate: {gate}")
    print(f"result: {report['result']}\nreport: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
