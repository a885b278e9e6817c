"""The segmenter bar of the segmentation issue: held-out mIoU on a freshly generated set,
in torch and through ONNX Runtime (``ubiq val``), which must agree within 0.5 points.

    .venv/bin/python benchmarks/segmenter_bar.py --checkpoint RUN/weights/best.pt \
        --onnx ubiq/data/models/ubiq-seg-mnv2.onnx [--seed 2027] [--images 200] [--imgsz 256]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--seed", type=int, default=2027)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--imgsz", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir")
    args = parser.parse_args()

    import torch

    from ubiq.models.datasets.synth import generate_detection_set
    from ubiq.models.runtime.metrics import mean_iou
    from ubiq.models.toolchain.export.onnx_export import load_checkpoint
    from ubiq.models.toolchain.train.data import SegmentData, to_float

    torch.set_num_threads(args.threads)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="ubiq-segbar-"))
    data = generate_detection_set(
        work / "heldout",
        train_images=1,
        val_images=args.images,
        imgsz=args.imgsz,
        seed=args.seed,
        progress=False,
    )
    model, config, _ = load_checkpoint(args.checkpoint)
    val = SegmentData.load(data, "val", config.imgsz, progress=False)
    with torch.no_grad():
        predicted = np.concatenate(
            [
                model(to_float(torch.from_numpy(val.images[s : s + 16]))).argmax(1).numpy()
                for s in range(0, len(val), 16)
            ]
        )
    torch_miou, per_class = mean_iou(predicted, val.masks, len(val.names))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ubiq",
            "val",
            args.onnx,
            "--task",
            "segment",
            "--data",
            str(data),
            "--threads",
            str(args.threads),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"ubiq val failed: {done.stderr.strip()}")
    scored = json.loads(done.stdout)
    print(f"held-out set: seed {args.seed}, {len(val)} images at {args.imgsz}")
    print(f"  torch           mIoU {100 * torch_miou:.2f}")
    print(f"  onnxruntime     mIoU {100 * scored['miou']:.2f}  (ubiq val)")
    print(f"  difference      {100 * abs(torch_miou - scored['miou']):.3f} points")
    for name, value in zip(val.names, per_class, strict=False):
        onnx_iou = scored["per_class_iou"].get(name, float("nan"))
        print(f"  {name:12s} torch {value:.3f}  ort {onnx_iou:.3f}")
    return 0 if abs(torch_miou - scored["miou"]) <= 0.005 else 1


if __name__ == "__main__":
    sys.exit(main())
