"""The detector bar of the models issue, measured on a held-out set made fresh with a new seed.

```bash
.venv/bin/python benchmarks/detector_bar.py --checkpoint RUN/weights/best.pt \
    [--onnx MODEL.onnx] [--seed 2027] [--images 200] [--imgsz 256] [--workdir DIR]
```

1. Generates a set the model has never seen (``--seed`` differs from the training seed;
   objects come from the same photographs, backgrounds, placements and augmentations are
   new) and scores the ONNX export with ``ubiq val`` (the deployment runtime, COCO rules).
2. Writes the held-out images as a clip (MJPG AVI), runs ``ubiq detect`` on it with
   ``--jsonl``, runs the torch checkpoint on the same decoded frames through the same
   preprocessing and decoder, and compares the boxes: every box of one must have a box of
   the other within ``--tolerance`` pixels (scores within 1e-3 of the threshold excepted).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def _ubiq(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "ubiq", *args], capture_output=True, text=True, check=False
    )
    if result.returncode:
        raise SystemExit(f"ubiq {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--onnx", help="the export to check (default: export the checkpoint)")
    parser.add_argument("--seed", type=int, default=2027)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--imgsz", type=int, default=256)
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--tolerance", type=float, default=0.05, help="pixels")
    parser.add_argument("--workdir")
    args = parser.parse_args()

    import cv2
    import torch

    from ubiq.models.datasets.synth import generate_detection_set
    from ubiq.models.runtime.preprocess import prepare_input
    from ubiq.models.toolchain.export.onnx_export import export_onnx, load_checkpoint
    from ubiq.models.toolchain.train.trainer import decode_predictions

    work = Path(args.workdir or tempfile.mkdtemp(prefix="ubiq-bar-"))
    work.mkdir(parents=True, exist_ok=True)
    onnx_path = Path(args.onnx) if args.onnx else export_onnx(args.checkpoint, work / "m.onnx").path
    data = generate_detection_set(
        work / "heldout",
        train_images=1,
        val_images=args.images,
        imgsz=args.imgsz,
        seed=args.seed,
        progress=False,
    )
    scored = json.loads(_ubiq("val", str(onnx_path), "--data", str(data), "--json").stdout)
    print(
        f"held-out set: seed {args.seed}, {scored['images']} images at {args.imgsz}: "
        f"mAP50 {scored['map50']:.3f}  mAP50-95 {scored['map50_95']:.3f}  "
        f"P {scored['precision']:.3f}  R {scored['recall']:.3f}"
    )
    for name, value in scored["per_class_ap50"].items():
        print(f"  {name:12s} AP50 {value:.3f}")

    images = sorted((data.parent / "images" / "val").glob("*.jpg"))
    clip = work / "heldout.avi"
    size = (args.imgsz, args.imgsz)
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    for image in images:
        writer.write(cv2.imread(str(image)))
    writer.release()
    capture = cv2.VideoCapture(str(clip))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    jsonl = work / "heldout.jsonl"
    _ubiq(
        "detect",
        "--source",
        str(clip),
        "--model",
        str(onnx_path),
        "--conf",
        str(args.conf),
        "--jsonl",
        str(jsonl),
    )
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    model, config, _ = load_checkpoint(args.checkpoint)
    from ubiq.manifest import ModelManifest, manifest_path_for

    manifest = ModelManifest.load(manifest_path_for(onnx_path))
    boxes = matched = 0
    worst = 0.0
    skipped = 0
    for frame, record in zip(frames, records):
        tensor, transform = prepare_input(frame, manifest.preprocess, manifest.input)
        with torch.no_grad():
            prediction = model.predict(torch.from_numpy(tensor)).numpy()
        raw = decode_predictions(prediction, config.imgsz, args.conf, 0.45, 300)
        if (np.abs(raw.confidence - args.conf) < 1e-3).any():
            skipped += 1
            continue
        expected = transform.to_source(raw.xyxy)
        got = np.array([d["xyxy"] for d in record["detections"]], np.float32).reshape(-1, 4)
        boxes += len(expected)
        if len(got) != len(expected):
            continue
        if len(got):
            distance = np.abs(got[:, None] - expected[None]).max(-1)
            worst = max(worst, float(distance.min(1).max()), float(distance.min(0).max()))
            matched += int((distance.min(1) <= args.tolerance).sum())
    print(
        f"clip of {len(frames)} held-out frames: ubiq detect (onnxruntime) vs torch: "
        f"{matched}/{boxes} boxes within {args.tolerance} px (largest difference "
        f"{worst:.3f} px; {skipped} frames with a score at the threshold skipped)"
    )
    return 0 if matched == boxes and len(records) == len(frames) else 1


if __name__ == "__main__":
    raise SystemExit(main())
