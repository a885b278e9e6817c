"""``ubiq val``: a detector's mAP or a classifier's top-1, through the deployment runtime.

```
ubiq val MODEL --data DATA.yaml [--split val] [--conf 0.001] [--iou 0.6] [--json]
ubiq val CLASSIFIER --data ROOT [--split val] [--json]     # ROOT/val/<class>/*.png
ubiq val SEGMENTER --data DATA.yaml [--split val] [--json] # with masks/
ubiq val KWS_MODEL --data ROOT [--split val] [--json]      # ROOT/val/<class>/*.wav
```

Runs exactly what ``ubiq detect`` runs (the model's manifest, preprocessing, decoder and
backend: ONNX Runtime or LiteRT) on every image of the split and scores the detections
with COCO rules (mAP50, mAP50-95, per class). A classifier (manifest task ``classify``)
is scored by top-1 on an image-folder split, a segmenter by mIoU (background included)
on a YOLO-layout split with masks, a keyword or command model by top-1 on a WAV-folder
split, per class too. Needs no torch, so it measures
a model on the device that will run it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ubiq.errors import ConfigError, DatasetError


def add_parser(subparsers: Any) -> None:
    """Adds the ``val`` command."""
    parser = subparsers.add_parser(
        "val",
        help="score a detector's mAP or a classifier's top-1 on a dataset split",
        description="Score a detector (any model ubiq detect runs) on a YOLO-layout split, "
        "or a classifier on an image-folder split (ROOT/SPLIT/<class>/*).",
    )
    parser.add_argument("model", metavar="MODEL", help="zoo name or model file")
    parser.add_argument(
        "--data", required=True, help="data.yaml (detector) or image-folder root (classifier)"
    )
    parser.add_argument("--split", default="val", help="split to score (default: val)")
    parser.add_argument("--conf", type=float, default=0.001, help="confidence threshold")
    parser.add_argument("--iou", type=float, default=0.6, help="NMS IoU threshold")
    parser.add_argument("--max-det", type=int, default=100, help="detections per image")
    parser.add_argument("--backend", default=None, help="onnxruntime or litert")
    parser.add_argument("--threads", type=int, default=None, help="inference threads")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=run)


def evaluate(
    model_path: str,
    data_yaml: Path,
    split: str = "val",
    *,
    confidence_threshold: float = 0.001,
    iou_threshold: float = 0.6,
    max_detections: int = 100,
    backend: str | None = None,
    num_threads: int | None = None,
) -> dict[str, Any]:
    """Scores ``model_path`` on ``split`` of ``data_yaml``; returns the metrics as a dict.

    Raises:
        DatasetError: If the dataset is malformed or its classes do not match the model's.
        ModelError: If the model cannot be loaded or decoded.
    """
    import cv2

    from ubiq.models.datasets.yolo import load_yolo_split
    from ubiq.models.runtime.model import DetectionModel
    from ubiq.models.train.metrics import MapAccumulator

    dataset = load_yolo_split(Path(data_yaml), split)
    model = DetectionModel.load(
        model_path,
        backend=backend,
        num_threads=num_threads,
        confidence_threshold=confidence_threshold,
        iou_threshold=iou_threshold,
        max_detections=max_detections,
    )
    if model.labels and len(model.labels) != len(dataset.names):
        raise DatasetError(
            f"{Path(model_path).name} has {len(model.labels)} classes but {data_yaml} has "
            f"{len(dataset.names)} ({', '.join(dataset.names)})"
        )
    accumulator = MapAccumulator(len(dataset.names), max_detections)
    started = time.perf_counter()
    for item in dataset.items:
        image = cv2.imread(str(item.image_path), cv2.IMREAD_COLOR)
        if image is None:
            raise DatasetError(f"cannot read image {item.image_path}")
        height, width = image.shape[:2]
        truth = np.asarray(item.boxes_xyxy_norm, np.float32).reshape(-1, 4)
        truth = truth * np.array([width, height, width, height], np.float32)
        detections = model(image)
        accumulator.add(
            detections.xyxy, detections.confidence, detections.class_id, truth, item.class_ids
        )
    seconds = time.perf_counter() - started
    metrics = accumulator.compute()
    names = list(dataset.names)
    return {
        "model": str(model.path),
        "data": str(data_yaml),
        "split": split,
        "images": len(dataset.items),
        "map50": metrics.map50,
        "map50_95": metrics.map50_95,
        "precision": metrics.precision,
        "recall": metrics.recall,
        "per_class_ap50": {names[k]: v for k, v in metrics.per_class_ap50.items()},
        "per_class_ap50_95": {names[k]: v for k, v in metrics.per_class_ap50_95.items()},
        "seconds": seconds,
    }


def model_task(model_path: str) -> str:
    """The task named by a model's manifest (``detect``, ``classify``, ...)."""
    from ubiq.models.runtime.backend import load_backend
    from ubiq.models.runtime.model import find_manifest, resolve_model_path

    path = resolve_model_path(model_path)
    return find_manifest(path, load_backend(path, num_threads=1)).task


def _open_model(model_path: str, task: str, backend: str | None, num_threads: int | None):
    """The model's path, runtime and manifest; a model of another task is a ModelError."""
    from ubiq.errors import ModelError
    from ubiq.models.runtime.backend import load_backend
    from ubiq.models.runtime.model import find_manifest, resolve_model_path

    path = resolve_model_path(model_path)
    runtime = load_backend(path, backend=backend, num_threads=num_threads)
    manifest = find_manifest(path, runtime)
    if manifest.task != task:
        raise ModelError(f"{path.name} is a {manifest.task!r} model, not a {task!r} one")
    return path, runtime, manifest


def _top1(
    model_path: str,
    task: str,
    root: Path,
    split: str,
    load_split,
    input_for,
    backend: str | None,
    num_threads: int | None,
) -> dict[str, Any]:
    """Top-1 of a ``task`` model over ``load_split(root, split) -> (paths, labels, names)``,
    each file turned into the model's input by ``input_for(manifest)(path)``."""
    path, runtime, manifest = _open_model(model_path, task, backend, num_threads)
    paths, labels, names = load_split(Path(root), split)
    if manifest.labels and list(manifest.labels) != list(names):
        raise DatasetError(
            f"{path.name} classes {list(manifest.labels)} differ from {root}/{split}'s {names}"
        )
    input_name = runtime.inputs[0].name
    make_input = input_for(manifest)
    correct = np.zeros(len(names), np.int64)
    total = np.zeros(len(names), np.int64)
    started = time.perf_counter()
    for item, label in zip(paths, labels):
        outputs = runtime.run({input_name: make_input(item)})
        total[label] += 1
        correct[label] += int(np.argmax(np.asarray(next(iter(outputs.values())))) == label)
    return {
        "model": str(path),
        "data": str(root),
        "split": split,
        "items": int(total.sum()),
        "top1": float(correct.sum() / total.sum()),
        "per_class_top1": {n: float(c / t) for n, c, t in zip(names, correct, total) if t},
        "seconds": time.perf_counter() - started,
    }


def evaluate_classifier(
    model_path: str,
    root: Path,
    split: str = "val",
    *,
    backend: str | None = None,
    num_threads: int | None = None,
) -> dict[str, Any]:
    """Top-1 accuracy of a classifier on an image-folder split (``root/split/<class>/*``).

    Each image goes through the model's own manifest preprocessing, as in deployment.

    Raises:
        DatasetError: If the split is malformed or its classes differ from the model's.
        ModelError: If the model cannot be loaded or is not a classifier.
    """
    import cv2

    from ubiq.models.datasets.classify import load_image_folder
    from ubiq.models.runtime.preprocess import prepare_input

    def image_input(manifest):
        def prepare(image_path: Path) -> np.ndarray:
            image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
            if image is None:
                raise DatasetError(f"cannot read image {image_path}")
            return prepare_input(image, manifest.preprocess, manifest.input)[0]

        return prepare

    result = _top1(
        model_path, "classify", root, split, load_image_folder, image_input, backend, num_threads
    )
    return {"images": result.pop("items"), **result}


def evaluate_keywords(
    model_path: str,
    root: Path,
    split: str = "val",
    *,
    backend: str | None = None,
    num_threads: int | None = None,
) -> dict[str, Any]:
    """Top-1 accuracy of a keyword or command model on a WAV-folder split
    (``root/split/<class>/*.wav``), each clip centred in the model's clip length and turned
    into log-mel features by the settings in its manifest, as ``ubiq listen`` does.

    Raises:
        DatasetError: If the split is malformed or its classes differ from the model's.
        ModelError: If the model cannot be loaded or is not a keyword model.
    """
    from ubiq.errors import ModelError
    from ubiq.models.datasets.speech import load_keyword_folder
    from ubiq.models.runtime.audio_features import LogMelOptions, read_wav, resample

    def clip_input(manifest):
        if "features" not in manifest.decoder.params:
            raise ModelError(f"{model_path}: its manifest has no log-mel feature settings")
        features = LogMelOptions.from_dict(manifest.decoder.params["features"])

        def prepare(clip_path: Path) -> np.ndarray:
            clip, rate = read_wav(clip_path)
            if rate != features.sample_rate:
                clip = resample(clip, rate, features.sample_rate)
            return features.model_input(clip)

        return prepare

    result = _top1(
        model_path, "kws", root, split, load_keyword_folder, clip_input, backend, num_threads
    )
    return {"clips": result.pop("items"), **result}


def evaluate_segmenter(
    model_path: str,
    data_yaml: Path,
    split: str = "val",
    *,
    backend: str | None = None,
    num_threads: int | None = None,
) -> dict[str, Any]:
    """mIoU of a semantic segmenter on a YOLO-layout split with ``masks/`` (as training
    scores it: in the model's letterboxed input, background included as class 0).

    Raises:
        DatasetError: If the split is malformed, lacks masks, or its classes differ.
        ModelError: If the model cannot be loaded or is not a segmenter.
    """
    import cv2

    from ubiq.models.datasets.yolo import load_yolo_split
    from ubiq.models.runtime.preprocess import letterbox_mask, prepare_input
    from ubiq.models.train.metrics import confusion_matrix

    path, runtime, manifest = _open_model(model_path, "segment", backend, num_threads)
    dataset = load_yolo_split(Path(data_yaml), split)
    names = ["background", *dataset.names]
    if manifest.labels and len(manifest.labels) != len(names):
        raise DatasetError(
            f"{path.name} has {len(manifest.labels)} classes but {data_yaml} has "
            f"{len(names)} with background ({', '.join(names)})"
        )
    input_name = runtime.inputs[0].name
    matrix = np.zeros((len(names), len(names)), np.int64)
    started = time.perf_counter()
    for item in dataset.items:
        image = cv2.imread(str(item.image_path), cv2.IMREAD_COLOR)
        mask = cv2.imread(str(item.mask_path), cv2.IMREAD_GRAYSCALE) if item.mask_path else None
        if image is None or mask is None:
            raise DatasetError(f"cannot read {item.image_path} or its mask ({item.mask_path})")
        tensor, transform = prepare_input(image, manifest.preprocess, manifest.input)
        logits = np.asarray(next(iter(runtime.run({input_name: tensor}).values())))
        predicted = logits[0].argmax(0)
        matrix += confusion_matrix(
            predicted, letterbox_mask(mask, transform, *predicted.shape), len(names)
        )
    intersection = np.diag(matrix).astype(np.float64)
    union = matrix.sum(0) + matrix.sum(1) - intersection
    present = union > 0
    per_class = {n: float(i / u) for n, i, u, p in zip(names, intersection, union, present) if p}
    return {
        "model": str(path),
        "data": str(data_yaml),
        "split": split,
        "images": len(dataset.items),
        "miou": float(np.mean(list(per_class.values()))) if per_class else float("nan"),
        "per_class_iou": per_class,
        "seconds": time.perf_counter() - started,
    }


def run(args: argparse.Namespace) -> int:
    if not Path(args.data).exists():
        raise ConfigError(f"--data {args.data} does not exist")
    if Path(args.data).is_dir():
        return _run_classifier(args)
    if model_task(args.model) == "segment":
        return _run_segmenter(args)
    result = evaluate(
        args.model,
        Path(args.data),
        args.split,
        confidence_threshold=args.conf,
        iou_threshold=args.iou,
        max_detections=args.max_det,
        backend=args.backend,
        num_threads=args.threads,
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"{Path(result['model']).name} on {result['images']} {args.split} images: "
        f"mAP50 {result['map50']:.3f}  mAP50-95 {result['map50_95']:.3f}  "
        f"P {result['precision']:.3f}  R {result['recall']:.3f}  ({result['seconds']:.1f} s)"
    )
    for name, ap50 in result["per_class_ap50"].items():
        print(f"  {name:16s} AP50 {ap50:.3f}  AP50-95 {result['per_class_ap50_95'][name]:.3f}")
    return 0


def _run_classifier(args: argparse.Namespace) -> int:
    task = model_task(args.model)
    if task not in ("classify", "kws"):
        raise ConfigError(
            f"--data {args.data} is a folder (an image-folder or WAV-folder set); "
            f"a {task} model needs a data.yaml"
        )
    score = evaluate_classifier if task == "classify" else evaluate_keywords
    result = score(
        args.model, Path(args.data), args.split, backend=args.backend, num_threads=args.threads
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    count = result.get("images", result.get("clips"))
    print(
        f"{Path(result['model']).name} on {count} {args.split} "
        f"{'images' if task == 'classify' else 'clips'}: "
        f"top-1 {result['top1']:.3f}  ({result['seconds']:.1f} s)"
    )
    for name, top1 in result["per_class_top1"].items():
        print(f"  {name:16s} top-1 {top1:.3f}")
    return 0


def _run_segmenter(args: argparse.Namespace) -> int:
    result = evaluate_segmenter(
        args.model, Path(args.data), args.split, backend=args.backend, num_threads=args.threads
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"{Path(result['model']).name} on {result['images']} {args.split} images: "
        f"mIoU {result['miou']:.3f}  ({result['seconds']:.1f} s)"
    )
    for name, iou in result["per_class_iou"].items():
        print(f"  {name:16s} IoU {iou:.3f}")
    return 0
