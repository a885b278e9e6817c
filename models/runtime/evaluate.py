"""Scores a model on a dataset split through the deployment runtime (no torch).

Each function runs exactly what deployment runs (the model's manifest, preprocessing,
decoder and backend: ONNX Runtime or LiteRT) on every item of the split:

* :func:`evaluate_detector`: COCO mAP50, mAP50-95, precision, recall, per class, on a
  YOLO-layout split (``data.yaml``);
* :func:`evaluate_classifier`: top-1 on an image-folder split (``root/split/<class>/*``);
* :func:`evaluate_segmenter`: mIoU (background included as class 0) on a YOLO-layout split
  with ``masks/``, in the model's letterboxed input as training scores it;
* :func:`evaluate_keywords`: top-1 on a WAV-folder split (``root/split/<class>/*.wav``);
* :func:`evaluate_model`: whichever of these the model's manifest task calls for.

``ubiq val`` prints these results and ``ubiq compress`` gates on them. Each returns a
JSON-safe dict (keys listed per function), so a model can be measured on the device that
will run it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ubiq.errors import ConfigError, DatasetError

__all__ = [
    "evaluate_classifier",
    "evaluate_detector",
    "evaluate_keywords",
    "evaluate_model",
    "evaluate_segmenter",
    "model_task",
]


def model_task(model: str | Path) -> str:
    """The task a model's manifest names (``detect``, ``classify``, ``segment``, ``kws``).

    Raises:
        ModelError: If the model cannot be opened or has no manifest.
    """
    from ubiq.models.runtime.tasks import model_task as task_of

    return task_of(model)


def _read_image(path: Path) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"cannot read image {path}")
    return image


def evaluate_detector(
    model: str | Path,
    data_yaml: str | Path,
    split: str = "val",
    *,
    confidence_threshold: float = 0.001,
    iou_threshold: float = 0.6,
    max_detections: int = 100,
    backend: str | None = None,
    num_threads: int | None = None,
) -> dict[str, Any]:
    """COCO mAP of a detector on a YOLO-layout split.

    Args:
        model: A model file or zoo name.
        data_yaml: The dataset's ``data.yaml``.
        split: The split to score.
        confidence_threshold: Lowest score kept, in ``[0, 1]`` (low, as COCO scoring wants).
        iou_threshold: NMS IoU threshold, in ``[0, 1]``.
        max_detections: Detections kept per image, at least 1.
        backend: ``onnxruntime`` or ``litert``; ``None`` picks by file suffix.
        num_threads: Inference threads; ``None`` lets the runtime decide.

    Returns:
        ``model``, ``data``, ``split``, ``images``, ``map50``, ``map50_95``, ``precision``,
        ``recall``, ``per_class_ap50`` and ``per_class_ap50_95`` (class name to AP) and
        ``seconds``.

    Raises:
        ConfigError: If a threshold or ``max_detections`` is out of range.
        DatasetError: If the dataset is malformed or its classes do not match the model's.
        ModelError: If the model cannot be loaded or decoded.
    """
    from ubiq.models.datasets.yolo import load_yolo_split
    from ubiq.models.runtime.metrics import MapAccumulator
    from ubiq.models.runtime.model import DetectionModel

    for name, value in (
        ("confidence_threshold", confidence_threshold),
        ("iou_threshold", iou_threshold),
    ):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{name} must be in [0, 1], got {value}")
    if max_detections < 1:
        raise ConfigError(f"max_detections must be >= 1, got {max_detections}")
    dataset = load_yolo_split(Path(data_yaml), split)
    detector = DetectionModel.load(
        model,
        backend=backend,
        num_threads=num_threads,
        confidence_threshold=confidence_threshold,
        iou_threshold=iou_threshold,
        max_detections=max_detections,
    )
    if detector.labels and len(detector.labels) != len(dataset.names):
        raise DatasetError(
            f"{detector.path.name} has {len(detector.labels)} classes but {data_yaml} has "
            f"{len(dataset.names)} ({', '.join(dataset.names)})"
        )
    accumulator = MapAccumulator(len(dataset.names), max_detections)
    started = time.perf_counter()
    for item in dataset.items:
        image = _read_image(item.image_path)
        height, width = image.shape[:2]
        truth = np.asarray(item.boxes_xyxy_norm, np.float32).reshape(-1, 4)
        truth = truth * np.array([width, height, width, height], np.float32)
        detections = detector(image)
        accumulator.add(
            detections.xyxy, detections.confidence, detections.class_id, truth, item.class_ids
        )
    seconds = time.perf_counter() - started
    metrics = accumulator.compute()
    names = list(dataset.names)
    return {
        "model": str(detector.path),
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


def _top1(scorer, items, labels, names, root, split) -> dict[str, Any]:
    """Top-1 of ``scorer(item) -> (C,) scores`` over ``items`` with true ``labels``."""
    correct = np.zeros(len(names), np.int64)
    total = np.zeros(len(names), np.int64)
    started = time.perf_counter()
    for item, label in zip(items, labels):
        total[label] += 1
        correct[label] += int(np.argmax(scorer(item)) == label)
    if not total.sum():
        raise DatasetError(f"{root}/{split} holds no items to score")
    return {
        "data": str(root),
        "split": split,
        "items": int(total.sum()),
        "top1": float(correct.sum() / total.sum()),
        "per_class_top1": {n: float(c / t) for n, c, t in zip(names, correct, total) if t},
        "seconds": time.perf_counter() - started,
    }


def _check_classes(path: Path, labels, names, root, split) -> None:
    if labels and list(labels) != list(names):
        raise DatasetError(
            f"{path.name} classes {list(labels)} differ from {root}/{split}'s {list(names)}"
        )


def evaluate_classifier(
    model: str | Path,
    root: str | Path,
    split: str = "val",
    *,
    backend: str | None = None,
    num_threads: int | None = None,
) -> dict[str, Any]:
    """Top-1 accuracy of a classifier on an image-folder split (``root/split/<class>/*``).

    Each image goes through the model's own manifest preprocessing, as in deployment.

    Returns:
        ``model``, ``data``, ``split``, ``images``, ``top1``, ``per_class_top1`` (class name
        to top-1, for classes present) and ``seconds``.

    Raises:
        DatasetError: If the split is malformed or its classes differ from the model's.
        ModelError: If the model cannot be loaded or is not a classifier.
    """
    from ubiq.models.datasets.classify import load_image_folder
    from ubiq.models.runtime.tasks import Classifier

    classifier = Classifier.load(model, backend=backend, num_threads=num_threads)
    paths, labels, names = load_image_folder(Path(root), split)
    _check_classes(classifier.path, classifier.labels, names, root, split)

    def score(image_path: Path) -> np.ndarray:
        return classifier.scores(classifier.prepare(_read_image(image_path)))

    result = _top1(score, paths, labels, names, root, split)
    return {"images": result.pop("items"), "model": str(classifier.path), **result}


def evaluate_keywords(
    model: str | Path,
    root: str | Path,
    split: str = "val",
    *,
    backend: str | None = None,
    num_threads: int | None = None,
) -> dict[str, Any]:
    """Top-1 accuracy of a keyword or command model on a WAV-folder split
    (``root/split/<class>/*.wav``), each clip centred in the model's clip length and turned
    into log-mel features by the settings in its manifest, as ``ubiq listen`` does.

    Returns:
        ``model``, ``data``, ``split``, ``clips``, ``top1``, ``per_class_top1`` and
        ``seconds``.

    Raises:
        DatasetError: If the split is malformed or its classes differ from the model's.
        ModelError: If the model cannot be loaded or is not a keyword model.
    """
    from ubiq.models.datasets.speech import load_keyword_folder
    from ubiq.models.runtime.audio_features import read_wav
    from ubiq.models.runtime.tasks import KeywordModel

    keywords = KeywordModel.load(model, backend=backend, num_threads=num_threads)
    paths, labels, names = load_keyword_folder(Path(root), split)
    _check_classes(keywords.path, keywords.labels, names, root, split)

    def score(clip_path: Path) -> np.ndarray:
        clip, rate = read_wav(clip_path)
        return keywords.scores(keywords.prepare(clip, rate))

    result = _top1(score, paths, labels, names, root, split)
    return {"clips": result.pop("items"), "model": str(keywords.path), **result}


def evaluate_segmenter(
    model: str | Path,
    data_yaml: str | Path,
    split: str = "val",
    *,
    backend: str | None = None,
    num_threads: int | None = None,
) -> dict[str, Any]:
    """mIoU of a semantic segmenter on a YOLO-layout split with ``masks/`` (as training
    scores it: in the model's letterboxed input, background included as class 0).

    Returns:
        ``model``, ``data``, ``split``, ``images``, ``miou``, ``per_class_iou`` (class name to
        IoU, for classes present in truth or prediction) and ``seconds``.

    Raises:
        DatasetError: If the split is malformed, lacks masks, or its classes differ.
        ModelError: If the model cannot be loaded or is not a segmenter.
    """
    import cv2

    from ubiq.models.datasets.yolo import load_yolo_split
    from ubiq.models.runtime.metrics import confusion_matrix
    from ubiq.models.runtime.preprocess import letterbox_mask
    from ubiq.models.runtime.segment import Segmenter

    segmenter = Segmenter.load(model, backend=backend, num_threads=num_threads)
    dataset = load_yolo_split(Path(data_yaml), split)
    names = ["background", *dataset.names]
    if segmenter.manifest.labels and len(segmenter.labels) != len(names):
        raise DatasetError(
            f"{segmenter.path.name} has {len(segmenter.labels)} classes but {data_yaml} has "
            f"{len(names)} with background ({', '.join(names)})"
        )
    matrix = np.zeros((len(names), len(names)), np.int64)
    started = time.perf_counter()
    for item in dataset.items:
        image = cv2.imread(str(item.image_path), cv2.IMREAD_COLOR)
        mask = cv2.imread(str(item.mask_path), cv2.IMREAD_GRAYSCALE) if item.mask_path else None
        if image is None or mask is None:
            raise DatasetError(f"cannot read {item.image_path} or its mask ({item.mask_path})")
        predicted, transform = segmenter.class_map_at_input(image)
        matrix += confusion_matrix(
            predicted, letterbox_mask(mask, transform, *predicted.shape), len(names)
        )
    intersection = np.diag(matrix).astype(np.float64)
    union = matrix.sum(0) + matrix.sum(1) - intersection
    present = union > 0
    per_class = {n: float(i / u) for n, i, u, p in zip(names, intersection, union, present) if p}
    return {
        "model": str(segmenter.path),
        "data": str(data_yaml),
        "split": split,
        "images": len(dataset.items),
        "miou": float(np.mean(list(per_class.values()))) if per_class else float("nan"),
        "per_class_iou": per_class,
        "seconds": time.perf_counter() - started,
    }


def evaluate_model(
    model: str | Path,
    data: str | Path,
    split: str = "val",
    *,
    confidence_threshold: float = 0.001,
    iou_threshold: float = 0.6,
    max_detections: int = 100,
    backend: str | None = None,
    num_threads: int | None = None,
) -> dict[str, Any]:
    """Scores ``model`` on ``split`` of ``data`` by the task its manifest names.

    A detector or segmenter takes a ``data.yaml``; a classifier an image-folder root; a
    keyword model a WAV-folder root. The detector options apply to detectors only.

    Returns:
        The dict of the task's ``evaluate_*`` function, plus ``task``.

    Raises:
        ConfigError: If ``data`` does not exist or is a folder for a task that needs a
            ``data.yaml``.
        DatasetError: If the split is malformed or its classes differ from the model's.
        ModelError: If the model cannot be loaded, or a ``data.yaml`` is given for a task
            other than ``detect`` and ``segment``.
    """
    data = Path(data)
    if not data.exists():
        raise ConfigError(f"data {data} does not exist")
    task = model_task(model)
    options = {"backend": backend, "num_threads": num_threads}
    if data.is_dir():
        if task not in ("classify", "kws"):
            raise ConfigError(
                f"data {data} is a folder (an image-folder or WAV-folder set); "
                f"a {task} model needs a data.yaml"
            )
        score = evaluate_classifier if task == "classify" else evaluate_keywords
        return {**score(model, data, split, **options), "task": task}
    if task == "segment":
        return {**evaluate_segmenter(model, data, split, **options), "task": task}
    result = evaluate_detector(
        model,
        data,
        split,
        confidence_threshold=confidence_threshold,
        iou_threshold=iou_threshold,
        max_detections=max_detections,
        **options,
    )
    return {**result, "task": task}
