"""``ubiq val``: a detector's mAP or a classifier's top-1, through the deployment runtime.

```
ubiq val MODEL --data DATA.yaml [--split val] [--conf 0.001] [--iou 0.6] [--json]
ubiq val CLASSIFIER --data ROOT [--split val] [--json]     # ROOT/val/<class>/*.png
ubiq val SEGMENTER --data DATA.yaml [--split val] [--json] # with masks/
ubiq val SEGMENTER --task segment --data ROOT [--json]     # ROOT/images + ROOT/labels/*.png
ubiq val KWS_MODEL --data ROOT [--split val] [--json]      # ROOT/val/<class>/*.wav
```

Runs exactly what ``ubiq detect`` runs (the model's manifest, preprocessing, decoder and
backend: ONNX Runtime or LiteRT) on every image of the split and scores the detections
with COCO rules (mAP50, mAP50-95, per class). A classifier (manifest task ``classify``)
is scored by top-1 on an image-folder split, a segmenter by mIoU (background included)
on a YOLO-layout split with masks, or at image resolution on a folder of images and label
PNGs (:mod:`ubiq.models.runtime.segment_eval`), a keyword or command model by top-1 on a WAV-folder
split, per class too. Needs no torch, so it measures a model on the device that will run
it. The scoring is :mod:`ubiq.models.runtime.evaluate`; this module parses flags and prints.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ubiq.errors import ConfigError


def add_parser(subparsers: Any) -> None:
    """Adds the ``val`` command."""
    parser = subparsers.add_parser(
        "val",
        help="score a detector's mAP or a classifier's top-1 on a dataset split",
        description="Score a detector (any model ubiq detect runs) on a YOLO-layout split, "
        "or a classifier on an image-folder split (ROOT/SPLIT/<class>/*).",
    )
    parser.add_argument(
        "model", metavar="MODEL", nargs="?", default=None, help="zoo name or model file"
    )
    parser.add_argument(
        "--data",
        required=True,
        help="data.yaml (detector, segmenter), image-folder root (classifier) or a folder of "
        "images/ and labels/ PNGs (segmenter)",
    )
    parser.add_argument(
        "--task",
        choices=("detect", "classify", "segment", "kws", "track"),
        default=None,
        help="the task to score; must match the model's (default: the model's own)",
    )
    parser.add_argument("--split", default="val", help="split to score (default: val)")
    parser.add_argument("--conf", type=float, default=0.001, help="confidence threshold")
    parser.add_argument("--iou", type=float, default=0.6, help="NMS IoU threshold")
    parser.add_argument("--max-det", type=int, default=100, help="detections per image")
    parser.add_argument("--backend", default=None, help="onnxruntime or litert")
    parser.add_argument("--threads", type=int, default=None, help="inference threads")
    parser.add_argument("--json", action="store_true", help="print JSON")
    from ubiq.cli import val_track

    val_track.add_arguments(parser)
    parser.set_defaults(handler=run)


def _check_flags(args: argparse.Namespace) -> None:
    """Flag checks with the flags' names (the library names its parameters)."""
    if not Path(args.data).exists():
        raise ConfigError(f"--data {args.data} does not exist")
    for flag, value in (("--conf", args.conf), ("--iou", args.iou)):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{flag} must be between 0 and 1, got {value}")
    if args.max_det < 1:
        raise ConfigError(f"--max-det must be >= 1, got {args.max_det}")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")


def _evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Runs the scoring the model's task (checked against ``--task``) and ``--data`` ask for.

    Raises:
        ConfigError: If ``--task`` differs from the model's task.
    """
    from ubiq.models.runtime.evaluate import evaluate_model, model_task

    task = model_task(args.model)
    if args.task is not None and args.task != task:
        raise ConfigError(f"--task {args.task}: {args.model} is a {task!r} model")
    if task == "segment" and Path(args.data).is_dir():
        from ubiq.models.runtime.segment_eval import evaluate_segment_folder

        result = evaluate_segment_folder(
            args.model, Path(args.data), args.split, backend=args.backend, num_threads=args.threads
        )
        return {**result, "task": task}
    return evaluate_model(
        args.model,
        Path(args.data),
        args.split,
        confidence_threshold=args.conf,
        iou_threshold=args.iou,
        max_detections=args.max_det,
        backend=args.backend,
        num_threads=args.threads,
    )


def run(args: argparse.Namespace) -> int:
    if args.task == "track":
        from ubiq.cli import val_track

        if not Path(args.data).exists():
            raise ConfigError(f"--data {args.data} does not exist")
        return val_track.run(args)
    if args.model is None:
        raise ConfigError("MODEL is missing: name a zoo model or a model file to score")
    _check_flags(args)
    result = _evaluate(args)
    task = result.pop("task")
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    name = Path(result["model"]).name
    if task in ("classify", "kws"):
        count = result.get("images", result.get("clips"))
        kind = "images" if task == "classify" else "clips"
        print(
            f"{name} on {count} {args.split} {kind}: top-1 {result['top1']:.3f}  "
            f"({result['seconds']:.1f} s)"
        )
        for label, top1 in result["per_class_top1"].items():
            print(f"  {label:16s} top-1 {top1:.3f}")
    elif task == "segment":
        print(
            f"{name} on {result['images']} {args.split} images: "
            f"mIoU {result['miou']:.3f}  ({result['seconds']:.1f} s)"
        )
        for label, iou in result["per_class_iou"].items():
            print(f"  {label:16s} IoU {iou:.3f}")
    else:
        print(
            f"{name} on {result['images']} {args.split} images: "
            f"mAP50 {result['map50']:.3f}  mAP50-95 {result['map50_95']:.3f}  "
            f"P {result['precision']:.3f}  R {result['recall']:.3f}  ({result['seconds']:.1f} s)"
        )
        for label, ap50 in result["per_class_ap50"].items():
            ap50_95 = result["per_class_ap50_95"][label]
            print(f"  {label:16s} AP50 {ap50:.3f}  AP50-95 {ap50_95:.3f}")
    return 0
