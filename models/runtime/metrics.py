"""Evaluation metrics in numpy alone: COCO box mAP, top-1 accuracy, confusion matrix and mIoU.

:func:`detection_map` reproduces pycocotools' ``COCOeval`` for boxes (``iouType="bbox"``, area
range "all", no crowd annotations) to floating-point rounding: per image and class the
detections are sorted by score (stable, like COCO's mergesort) and cut to ``max_detections``,
each is greedily matched to the unmatched ground truth of best IoU (ties go to the later ground
truth, as in COCO) when that IoU reaches the threshold, and the average precision is the mean of
the precision envelope sampled at the 101 recall points ``0, 0.01, ..., 1``. The IoU is COCO's:
continuous coordinates, box area ``w * h`` (no ``+1``), computed from ``x, y, w, h`` in float64
the way pycocotools does, so results agree even for boxes that sit exactly on a threshold.

Nothing here imports torch, so validation loops, benchmarks and device-side checks can share it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "IOU_THRESHOLDS",
    "RECALL_THRESHOLDS",
    "DetectionMetrics",
    "MapAccumulator",
    "confusion_matrix",
    "detection_map",
    "mean_iou",
    "top1_accuracy",
]

#: COCO's IoU thresholds 0.50:0.05:0.95, built with the same expression as pycocotools.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
#: COCO's 101 recall points at which the precision envelope is sampled.
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, int(np.round((1.0 - 0.0) / 0.01)) + 1, endpoint=True)
# COCO caps the threshold just below 1 so that a perfect box still matches at IoU 1.0.
_MATCH_THRESHOLDS = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)
# Elements of the padded (groups, detections, ground truths) IoU block matched at once.
_MATCH_BUDGET = 4_000_000
# Most confidence thresholds tried when choosing the F1-maximising operating point.
_MAX_CONFIDENCE_CANDIDATES = 1000


@dataclass(frozen=True)
class DetectionMetrics:
    """COCO-style detection summary.

    Attributes:
        map50: Mean over classes of AP at IoU 0.5 (COCO ``AP50``).
        map50_95: Mean over classes of AP averaged over IoU 0.50:0.05:0.95 (COCO ``AP``).
        per_class_ap50: AP at IoU 0.5 for every class with at least one ground truth.
        per_class_ap50_95: AP at IoU 0.50:0.95 for the same classes.
        precision: Macro precision (mean over classes with ground truth) at IoU 0.5 and at the
            single confidence threshold that maximises the F1 of macro precision and recall.
        recall: Macro recall at that same threshold.

    Classes without ground truth are left out of every mean and every dict, as COCO leaves out
    categories whose precision is -1. When no image has any ground truth, all four numbers are
    ``nan`` and the dicts are empty.
    """

    map50: float
    map50_95: float
    per_class_ap50: dict[int, float]
    per_class_ap50_95: dict[int, float]
    precision: float
    recall: float


@dataclass(frozen=True)
class _Image:
    """One validated image: detections sorted by (class, descending score) and cut per class."""

    detection_xyxy: np.ndarray  # (D, 4) float64
    detection_scores: np.ndarray  # (D,) float64
    detection_classes: np.ndarray  # (D,) int64, non-decreasing
    truth_xyxy: np.ndarray  # (G, 4) float64, stable-sorted by class
    truth_classes: np.ndarray  # (G,) int64, non-decreasing


def _boxes(values: object, name: str) -> np.ndarray:
    boxes = np.asarray(values, dtype=np.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4), got {boxes.shape}")
    if not np.all(np.isfinite(boxes)):
        raise ValueError(f"{name} must hold finite coordinates")
    return boxes


def _class_ids(values: object, name: str, num_classes: int | None = None) -> np.ndarray:
    raw = np.asarray(values)
    if raw.size == 0:
        return np.zeros(raw.shape, dtype=np.int64)
    integral = raw.dtype.kind in "iub" or (
        raw.dtype.kind == "f" and np.all(np.isfinite(raw)) and np.all(raw == np.round(raw))
    )
    if not integral:
        raise ValueError(f"{name} must hold integer class ids, got {raw.dtype} values")
    ids = raw.astype(np.int64)
    if ids.min() < 0:
        raise ValueError(f"{name} must hold class ids >= 0, got {int(ids.min())}")
    if num_classes is not None and ids.max() >= num_classes:
        raise ValueError(f"{name} must hold class ids < num_classes={num_classes}, got {ids.max()}")
    return ids


def _vector(values: np.ndarray, length: int, name: str) -> np.ndarray:
    vector = values.reshape(-1)
    if vector.shape != (length,):
        raise ValueError(f"{name} must have shape ({length},), got {values.shape}")
    return vector


def _prepare_image(
    prediction: Sequence[object],
    truth: Sequence[object],
    num_classes: int | None,
    max_detections: int,
    name: str,
) -> _Image:
    """Validate one image and apply COCO's per-class sort and ``maxDets`` cut.

    Args:
        prediction: ``(xyxy (N, 4), scores (N,), class_ids (N,))``.
        truth: ``(xyxy (M, 4), class_ids (M,))``.
        num_classes: Optional upper bound on class ids.
        max_detections: Detections kept per class.
        name: How error messages name this image.
    """
    if len(prediction) != 3 or len(truth) != 2:
        raise ValueError(
            f"{name}: expected a prediction (xyxy, scores, class_ids) and a ground truth "
            f"(xyxy, class_ids), got {len(prediction)} and {len(truth)} items"
        )
    boxes = _boxes(prediction[0], f"{name} prediction xyxy")
    count = len(boxes)
    scores = _vector(np.asarray(prediction[1], dtype=np.float64), count, f"{name} scores")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{name} scores must be finite")
    classes = _class_ids(prediction[2], f"{name} class_ids", num_classes)
    classes = _vector(classes, count, f"{name} class_ids")
    truth_boxes = _boxes(truth[0], f"{name} ground-truth xyxy")
    truth_classes = _class_ids(truth[1], f"{name} gt_class_ids", num_classes)
    truth_classes = _vector(truth_classes, len(truth_boxes), f"{name} gt_class_ids")
    # Stable sort by descending score, then stable by class: per class, COCO's mergesort order.
    order = np.argsort(-scores, kind="stable")
    order = order[np.argsort(classes[order], kind="stable")]
    sorted_classes = classes[order]
    rank = np.arange(count) - np.searchsorted(sorted_classes, sorted_classes, side="left")
    order = order[rank < max_detections]
    truth_order = np.argsort(truth_classes, kind="stable")
    return _Image(
        boxes[order],
        scores[order],
        classes[order],
        truth_boxes[truth_order],
        truth_classes[truth_order],
    )


def _coco_box_iou(detections: np.ndarray, truths: np.ndarray) -> np.ndarray:
    """IoU exactly as pycocotools' ``bbIou`` computes it from ``x, y, w, h``.

    Args:
        detections: Detection boxes, xyxy, shape (D, 4), float64.
        truths: Ground-truth boxes, xyxy, shape (G, 4), float64.

    Returns:
        IoU matrix of shape (D, G); zero where the boxes do not overlap.
    """
    det_x, det_y = detections[:, 0:1], detections[:, 1:2]
    det_w, det_h = detections[:, 2:3] - det_x, detections[:, 3:4] - det_y
    gt_x, gt_y = truths[:, 0], truths[:, 1]
    gt_w, gt_h = truths[:, 2] - gt_x, truths[:, 3] - gt_y
    inter_w = np.minimum(det_w + det_x, gt_w + gt_x) - np.maximum(det_x, gt_x)
    inter_h = np.minimum(det_h + det_y, gt_h + gt_y) - np.maximum(det_y, gt_y)
    overlap = (inter_w > 0) & (inter_h > 0)
    intersection = inter_w * inter_h
    union = det_w * det_h + gt_w * gt_h - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=overlap)


def _match_chunk(ious: list[np.ndarray]) -> list[np.ndarray]:
    """COCO greedy matching of several (image, class) groups at once, at every IoU threshold.

    Args:
        ious: Per group an IoU matrix (D, G) with detections sorted by descending score.

    Returns:
        Per group a bool array (T, D): whether each detection matched at each threshold.
    """
    batch = len(ious)
    max_detections = max(iou.shape[0] for iou in ious)
    max_truths = max(iou.shape[1] for iou in ious)
    thresholds = len(_MATCH_THRESHOLDS)
    padded = np.full((batch, max_detections, max_truths), -np.inf)
    for index, iou in enumerate(ious):
        padded[index, : iou.shape[0], : iou.shape[1]] = iou
    taken = np.zeros((batch, thresholds, max_truths), dtype=bool)
    matched = np.zeros((batch, thresholds, max_detections), dtype=bool)
    batch_index = np.arange(batch)[:, None]
    threshold_index = np.arange(thresholds)[None, :]
    for detection in range(max_detections):
        candidates = np.where(taken, -np.inf, padded[:, None, detection, :])  # (B, T, G)
        # COCO walks the ground truths in order and keeps one whose IoU >= the best so far:
        # the last index of the maximum wins.
        best = max_truths - 1 - np.argmax(candidates[..., ::-1], axis=-1)  # (B, T)
        best_iou = np.take_along_axis(candidates, best[..., None], axis=-1)[..., 0]
        hit = best_iou >= _MATCH_THRESHOLDS
        matched[:, :, detection] = hit
        taken[batch_index, threshold_index, best] |= hit
    return [matched[index, :, : iou.shape[0]] for index, iou in enumerate(ious)]


def _match_groups(ious: list[np.ndarray]) -> list[np.ndarray]:
    """Run :func:`_match_chunk` over groups bucketed by size so the padding stays small."""
    results: list[np.ndarray] = [np.zeros((len(_MATCH_THRESHOLDS), 0), dtype=bool)] * len(ious)
    order = sorted(range(len(ious)), key=lambda index: ious[index].shape[1])
    chunk: list[int] = []
    chunk_detections = 0
    for index in [*order, None]:
        if index is not None:
            detections, truths = ious[index].shape
            widest = max(chunk_detections, detections)
            if not chunk or (len(chunk) + 1) * widest * truths <= _MATCH_BUDGET:
                chunk.append(index)
                chunk_detections = widest
                continue
        if chunk:
            for position, matched in zip(chunk, _match_chunk([ious[i] for i in chunk])):
                results[position] = matched
        if index is not None:
            chunk, chunk_detections = [index], ious[index].shape[0]
    return results


def _average_precision(true_positive: np.ndarray, truth_count: int) -> np.ndarray:
    """COCO 101-point interpolated AP per threshold.

    Args:
        true_positive: Bool (T, N), detections of one class sorted by descending score.
        truth_count: Ground truths of that class (> 0).

    Returns:
        AP per IoU threshold, shape (T,).
    """
    thresholds, count = true_positive.shape
    if count == 0:
        return np.zeros(thresholds)
    tp = np.cumsum(true_positive, axis=1).astype(np.float64)
    fp = np.cumsum(~true_positive, axis=1).astype(np.float64)
    recall = tp / truth_count
    precision = tp / (fp + tp + np.spacing(1))
    envelope = np.flip(np.maximum.accumulate(np.flip(precision, axis=1), axis=1), axis=1)
    average = np.zeros(thresholds)
    for threshold in range(thresholds):
        index = np.searchsorted(recall[threshold], RECALL_THRESHOLDS, side="left")
        sampled = np.where(index < count, envelope[threshold, np.minimum(index, count - 1)], 0.0)
        average[threshold] = sampled.mean()
    return average


def _best_f1_point(
    class_scores: list[np.ndarray], class_hits: list[np.ndarray], truth_counts: np.ndarray
) -> tuple[float, float]:
    """Macro precision and recall at the confidence threshold maximising their F1.

    Args:
        class_scores: Per class with ground truth, its detection scores, descending.
        class_hits: Per class, whether each of those detections matched at IoU 0.5.
        truth_counts: Ground truths per class, shape (K,).

    Returns:
        ``(precision, recall)``; ``(0.0, 0.0)`` when there are no detections.
    """
    candidates = np.unique(np.concatenate(class_scores))[::-1]
    if len(candidates) == 0:
        return 0.0, 0.0
    if len(candidates) > _MAX_CONFIDENCE_CANDIDATES:
        picks = np.linspace(0, len(candidates) - 1, _MAX_CONFIDENCE_CANDIDATES).round()
        candidates = candidates[picks.astype(np.int64)]
    precision = np.zeros((len(class_scores), len(candidates)))
    recall = np.zeros_like(precision)
    for row, (scores, hits) in enumerate(zip(class_scores, class_hits)):
        kept = np.searchsorted(-scores, -candidates, side="right")  # detections with score >= c
        tp = np.concatenate([[0], np.cumsum(hits)])[kept]
        precision[row] = tp / np.maximum(kept, 1)
        recall[row] = tp / truth_counts[row]
    mean_precision, mean_recall = precision.mean(axis=0), recall.mean(axis=0)
    total = mean_precision + mean_recall
    f1 = np.divide(
        2 * mean_precision * mean_recall, total, out=np.zeros_like(total), where=total > 0
    )
    best = int(np.argmax(f1))
    return float(mean_precision[best]), float(mean_recall[best])


def _evaluate(images: Sequence[_Image]) -> DetectionMetrics:
    """Match every image, then accumulate per class the way ``COCOeval.accumulate`` does."""
    ious: list[np.ndarray] = []
    offsets: list[int] = []
    offset = 0
    for image in images:
        if len(image.detection_classes) and len(image.truth_classes):
            det_classes, det_start = np.unique(image.detection_classes, return_index=True)
            gt_classes, gt_start = np.unique(image.truth_classes, return_index=True)
            det_stop = np.append(det_start[1:], len(image.detection_classes))
            gt_stop = np.append(gt_start[1:], len(image.truth_classes))
            iou = _coco_box_iou(image.detection_xyxy, image.truth_xyxy)
            _, det_pick, gt_pick = np.intersect1d(det_classes, gt_classes, return_indices=True)
            for det_index, gt_index in zip(det_pick, gt_pick):
                rows = slice(det_start[det_index], det_stop[det_index])
                ious.append(iou[rows, gt_start[gt_index] : gt_stop[gt_index]])
                offsets.append(offset + det_start[det_index])
        offset += len(image.detection_classes)
    matched = np.zeros((len(IOU_THRESHOLDS), offset), dtype=bool)
    for start, group in zip(offsets, _match_groups(ious)):
        matched[:, start : start + group.shape[1]] = group

    # Image order, then per class a stable sort by descending score: COCO's accumulate order.
    scores = np.concatenate([np.zeros(0)] + [image.detection_scores for image in images])
    classes = np.concatenate(
        [np.zeros(0, np.int64)] + [image.detection_classes for image in images]
    )
    truth_classes = np.concatenate(
        [np.zeros(0, np.int64)] + [image.truth_classes for image in images]
    )
    order = np.argsort(-scores, kind="stable")
    order = order[np.argsort(classes[order], kind="stable")]
    sorted_classes = classes[order]
    truth_counts = np.bincount(truth_classes)
    ap50: dict[int, float] = {}
    ap50_95: dict[int, float] = {}
    class_scores: list[np.ndarray] = []
    class_hits: list[np.ndarray] = []
    for class_id in np.flatnonzero(truth_counts):
        start, stop = np.searchsorted(sorted_classes, [class_id, class_id + 1])
        picked = order[start:stop]
        average = _average_precision(matched[:, picked], int(truth_counts[class_id]))
        ap50[int(class_id)] = float(average[0])
        ap50_95[int(class_id)] = float(average.mean())
        class_scores.append(scores[picked])
        class_hits.append(matched[0, picked])
    if not ap50:
        nan = float("nan")
        return DetectionMetrics(nan, nan, {}, {}, nan, nan)
    precision, recall = _best_f1_point(class_scores, class_hits, truth_counts[truth_counts > 0])
    return DetectionMetrics(
        map50=float(np.mean(list(ap50.values()))),
        map50_95=float(np.mean(list(ap50_95.values()))),
        per_class_ap50=ap50,
        per_class_ap50_95=ap50_95,
        precision=precision,
        recall=recall,
    )


def _check_max_detections(max_detections: int) -> int:
    if isinstance(max_detections, bool) or not isinstance(max_detections, (int, np.integer)):
        raise ValueError(f"max_detections must be an int, got {type(max_detections).__name__}")
    if max_detections < 1:
        raise ValueError(f"max_detections must be >= 1, got {max_detections}")
    return int(max_detections)


def detection_map(
    predictions: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    ground_truths: Sequence[tuple[np.ndarray, np.ndarray]],
    num_classes: int | None = None,
    max_detections: int = 100,
) -> DetectionMetrics:
    """COCO box mAP (pycocotools ``COCOeval``, area "all", ``maxDets=max_detections``).

    Args:
        predictions: Per image ``(xyxy (N, 4), scores (N,), class_ids (N,))`` in pixels.
        ground_truths: Per image ``(xyxy (M, 4), class_ids (M,))``, same order as predictions.
        num_classes: When given, every class id must be below it (checked, otherwise unused).
        max_detections: Highest-scoring detections kept per image and per class (COCO applies
            ``maxDets`` per image and category in ``evaluateImg``).

    Returns:
        The :class:`DetectionMetrics`; AP is averaged over the classes that have ground truth.

    Raises:
        ValueError: On mismatched lengths, bad shapes, non-finite values or bad class ids.
    """
    if len(predictions) != len(ground_truths):
        raise ValueError(
            f"predictions and ground_truths must have the same length, "
            f"got {len(predictions)} and {len(ground_truths)}"
        )
    max_detections = _check_max_detections(max_detections)
    images = [
        _prepare_image(prediction, truth, num_classes, max_detections, f"image {index}")
        for index, (prediction, truth) in enumerate(zip(predictions, ground_truths))
    ]
    return _evaluate(images)


class MapAccumulator:
    """Collects detections image by image and computes :func:`detection_map` at the end.

    Each ``add`` validates at once (so a bad batch fails where it is produced) and keeps only
    the ``max_detections`` best detections per class, so memory stays small during validation.

    Args:
        num_classes: Optional upper bound on class ids, as in :func:`detection_map`.
        max_detections: Detections kept per image and class, as in :func:`detection_map`.
    """

    def __init__(self, num_classes: int | None = None, max_detections: int = 100) -> None:
        self.num_classes = num_classes
        self.max_detections = _check_max_detections(max_detections)
        self._images: list[_Image] = []

    def __len__(self) -> int:
        return len(self._images)

    def add(
        self,
        pred_xyxy: np.ndarray,
        scores: np.ndarray,
        class_ids: np.ndarray,
        gt_xyxy: np.ndarray,
        gt_class_ids: np.ndarray,
    ) -> None:
        """Add one image: detections (N, 4), (N,), (N,) and ground truth (M, 4), (M,).

        Raises:
            ValueError: On bad shapes, non-finite values or bad class ids.
        """
        prediction, truth = (pred_xyxy, scores, class_ids), (gt_xyxy, gt_class_ids)
        name = f"image {len(self._images)}"
        image = _prepare_image(prediction, truth, self.num_classes, self.max_detections, name)
        self._images.append(image)

    def compute(self) -> DetectionMetrics:
        """Metrics over every image added so far."""
        return _evaluate(self._images)

    def reset(self) -> None:
        """Forget every image added."""
        self._images.clear()


def top1_accuracy(logits_or_pred: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose predicted class equals the label.

    Args:
        logits_or_pred: Scores (N, C) (argmax taken over C) or predicted class ids (N,).
        labels: True class ids, shape (N,).

    Returns:
        Accuracy in [0, 1].

    Raises:
        ValueError: On empty input, mismatched lengths or non-integer ids.
    """
    truth = _class_ids(labels, "labels")
    values = np.asarray(logits_or_pred)
    if truth.ndim != 1 or len(truth) == 0:
        raise ValueError(f"labels must have shape (N,) with N > 0, got {truth.shape}")
    if values.ndim == 2:
        predicted = np.argmax(values, axis=1)
    elif values.ndim == 1:
        predicted = _class_ids(values, "logits_or_pred")
    else:
        raise ValueError(f"logits_or_pred must have shape (N, C) or (N,), got {values.shape}")
    if len(predicted) != len(truth):
        raise ValueError(
            f"logits_or_pred and labels must have the same N, got {len(predicted)} and {len(truth)}"
        )
    return float(np.mean(predicted == truth))


def confusion_matrix(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts of (true class, predicted class) pairs.

    Args:
        pred: Predicted class ids, any shape.
        labels: True class ids, same shape as ``pred``.
        num_classes: Number of classes C; every id must be in [0, C).

    Returns:
        int64 matrix (C, C): rows are true classes, columns predicted classes.

    Raises:
        ValueError: On mismatched shapes or ids outside [0, C).
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    predicted = _class_ids(pred, "pred", num_classes)
    truth = _class_ids(labels, "labels", num_classes)
    if predicted.shape != truth.shape:
        raise ValueError(
            f"pred and labels must have the same shape, got {predicted.shape} and {truth.shape}"
        )
    pairs = truth.reshape(-1) * num_classes + predicted.reshape(-1)
    return np.bincount(pairs, minlength=num_classes**2).reshape(num_classes, num_classes)


def mean_iou(
    pred_masks: np.ndarray,
    gt_masks: np.ndarray,
    num_classes: int,
    ignore_index: int | None = None,
) -> tuple[float, np.ndarray]:
    """Semantic-segmentation IoU per class and its mean, accumulated over all pixels.

    Args:
        pred_masks: Predicted class map (N, H, W) (or (H, W)) of ids in [0, C).
        gt_masks: True class map, same shape; ids in [0, C) or ``ignore_index``.
        num_classes: Number of classes C.
        ignore_index: Ground-truth value whose pixels are left out entirely (e.g. 255).

    Returns:
        ``(miou, per_class)``: ``per_class`` has shape (C,) with ``intersection / union`` per
        class and ``nan`` for a class absent from both prediction and ground truth (on counted
        pixels); ``miou`` is the mean over the other classes, ``nan`` if there are none.

    Raises:
        ValueError: On mismatched shapes or ids outside [0, C).
    """
    predicted = np.asarray(pred_masks)
    truth = np.asarray(gt_masks)
    if predicted.shape != truth.shape or predicted.ndim not in (2, 3):
        raise ValueError(
            f"pred_masks and gt_masks must share a shape (N, H, W) or (H, W), "
            f"got {predicted.shape} and {truth.shape}"
        )
    if ignore_index is not None:
        counted = truth != ignore_index
        predicted, truth = predicted[counted], truth[counted]
    matrix = confusion_matrix(predicted, truth, num_classes).astype(np.float64)
    intersection = np.diag(matrix)
    union = matrix.sum(axis=0) + matrix.sum(axis=1) - intersection
    per_class = np.full(num_classes, np.nan)
    np.divide(intersection, union, out=per_class, where=union > 0)
    present = per_class[union > 0]
    return (float(present.mean()) if len(present) else float("nan")), per_class
