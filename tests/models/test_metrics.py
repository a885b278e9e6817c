"""Tests for ubiq.models.runtime.metrics: COCO mAP against pycocotools, and the small metrics."""

from __future__ import annotations

import contextlib
import io
import math
import subprocess
import sys

import numpy as np
import pytest

from ubiq.models.runtime.metrics import (
    MapAccumulator,
    confusion_matrix,
    detection_map,
    mean_iou,
    top1_accuracy,
)

coco_module = pytest.importorskip("pycocotools.coco")
cocoeval_module = pytest.importorskip("pycocotools.cocoeval")

Prediction = tuple[np.ndarray, np.ndarray, np.ndarray]
Truth = tuple[np.ndarray, np.ndarray]


def _coco_reference(
    predictions: list[Prediction],
    ground_truths: list[Truth],
    num_classes: int,
    max_detections: int = 100,
) -> tuple[float, float, dict[int, float], dict[int, float]]:
    """Run pycocotools COCOeval (bbox) in memory; class k is COCO category k + 1."""
    annotations = []
    for image_id, (boxes, classes) in enumerate(ground_truths, start=1):
        for (x1, y1, x2, y2), class_id in zip(boxes.tolist(), classes.tolist()):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": class_id + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    results = []
    for image_id, (boxes, scores, classes) in enumerate(predictions, start=1):
        for (x1, y1, x2, y2), score, class_id in zip(boxes.tolist(), scores.tolist(), classes):
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(class_id) + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": score,
                }
            )
    truth = coco_module.COCO()
    truth.dataset = {
        "images": [{"id": index + 1} for index in range(len(ground_truths))],
        "annotations": annotations,
        "categories": [{"id": class_id + 1} for class_id in range(num_classes)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        truth.createIndex()
        evaluator = cocoeval_module.COCOeval(truth, truth.loadRes(results), "bbox")
        if max_detections != 100:  # COCOeval sorts maxDets and applies the largest
            evaluator.params.maxDets = [max_detections]
        evaluator.evaluate()
        evaluator.accumulate()
        if max_detections == 100:
            evaluator.summarize()
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # (T, R, K), area "all", last maxDets
    ap50 = {
        k: float(precision[0, :, k].mean()) for k in range(num_classes) if precision[0, 0, k] > -1
    }
    ap50_95 = {k: float(precision[:, :, k].mean()) for k in ap50}
    map50_95 = float(np.mean(precision[precision > -1]))
    map50 = float(np.mean(precision[0][precision[0] > -1]))
    if max_detections == 100:  # the public summary numbers agree with the array we read
        assert evaluator.stats[0] == pytest.approx(map50_95, abs=1e-12)
        assert evaluator.stats[1] == pytest.approx(map50, abs=1e-12)
    return map50, map50_95, ap50, ap50_95


def _random_case(
    seed: int,
    images: int = 20,
    integer_grid: bool = False,
    tied_scores: bool = False,
    crowded: bool = False,
) -> tuple[list[Prediction], list[Truth]]:
    """Jittered ground truths plus misses, duplicates, wrong labels and false positives.

    Ground truth uses classes 0-2; class 2 is never predicted, class 3 is predicted but never
    present. About one image in six has no ground truth.
    """
    rng = np.random.default_rng(seed)
    span = 24.0 if integer_grid else 400.0
    predictions: list[Prediction] = []
    ground_truths: list[Truth] = []
    for _ in range(images):
        count = 0 if rng.random() < 0.17 else int(rng.integers(1, 12 if crowded else 7))
        corner = rng.uniform(0, span, (count, 2))
        size = rng.uniform(span * 0.05, span * 0.35, (count, 2))
        truth = np.concatenate([corner, corner + size], axis=1)
        if integer_grid:
            truth = np.round(truth)
            truth[:, 2:] = np.maximum(truth[:, 2:], truth[:, :2] + 1)
        truth_classes = rng.integers(0, 3, count)
        boxes, classes = [], []
        for box, class_id in zip(truth, truth_classes):
            copies = 0 if rng.random() < 0.2 else (2 if rng.random() < 0.15 else 1)
            for _ in range(copies):
                width, height = box[2] - box[0], box[3] - box[1]
                noise = rng.normal(0, rng.uniform(0.01, 0.15), 4) * [width, height, width, height]
                jittered = box + noise
                jittered[2:] = np.maximum(jittered[2:], jittered[:2] + 0.5)
                label = class_id if rng.random() > 0.1 else rng.integers(0, 4)
                if label == 2:
                    continue
                boxes.append(np.round(jittered) if integer_grid else jittered)
                classes.append(label)
        false_count = int(rng.integers(0, 40 if crowded else 5))
        for _ in range(false_count):
            corner = rng.uniform(0, span, 2)
            box = np.concatenate([corner, corner + rng.uniform(span * 0.05, span * 0.3, 2)])
            boxes.append(np.round(box) if integer_grid else box)
            classes.append(rng.choice([0, 1, 3]))
        # Matches tend to score higher than false positives, as from a real detector.
        scores = np.concatenate(
            [rng.uniform(0.2, 1.0, len(boxes) - false_count), rng.uniform(0.01, 0.8, false_count)]
        )
        if tied_scores:
            scores = np.round(scores, 1)
        predictions.append(
            (
                np.array(boxes, dtype=np.float64).reshape(-1, 4),
                scores,
                np.array(classes, dtype=np.int64),
            )
        )
        ground_truths.append((truth, truth_classes))
    return predictions, ground_truths


RANDOM_CASES = [
    pytest.param({"seed": 0}, 100, id="plain"),
    pytest.param({"seed": 1}, 100, id="plain-2"),
    pytest.param({"seed": 2, "images": 35}, 100, id="more-images"),
    pytest.param({"seed": 3, "tied_scores": True}, 100, id="tied-scores"),
    pytest.param({"seed": 4, "integer_grid": True}, 100, id="integer-grid-ties"),
    pytest.param({"seed": 5, "integer_grid": True, "tied_scores": True}, 100, id="grid-and-ties"),
    pytest.param({"seed": 6, "crowded": True}, 100, id="crowded"),
    pytest.param({"seed": 7, "crowded": True}, 8, id="max-detections-8"),
    pytest.param({"seed": 8, "crowded": True, "tied_scores": True}, 5, id="max-detections-5-ties"),
]


@pytest.mark.parametrize(("options", "max_detections"), RANDOM_CASES)
def test_detection_map_matches_pycocotools(options, max_detections):
    predictions, ground_truths = _random_case(**options)
    ours = detection_map(predictions, ground_truths, num_classes=4, max_detections=max_detections)
    map50, map50_95, ap50, ap50_95 = _coco_reference(predictions, ground_truths, 4, max_detections)
    assert 0.0 < ours.map50_95 < ours.map50 < 1.0  # a case that exercises partial matching
    assert ours.map50 == pytest.approx(map50, abs=1e-6)
    assert ours.map50_95 == pytest.approx(map50_95, abs=1e-6)
    assert sorted(ours.per_class_ap50) == sorted(ap50) == [0, 1, 2]
    assert ours.per_class_ap50[2] == 0.0  # ground truth but never predicted
    for class_id in ap50:
        assert ours.per_class_ap50[class_id] == pytest.approx(ap50[class_id], abs=1e-6)
        assert ours.per_class_ap50_95[class_id] == pytest.approx(ap50_95[class_id], abs=1e-6)


def test_accumulator_equals_detection_map_and_resets():
    predictions, ground_truths = _random_case(11)
    accumulator = MapAccumulator(num_classes=4)
    for (boxes, scores, classes), (truth, truth_classes) in zip(predictions, ground_truths):
        accumulator.add(boxes, scores, classes, truth, truth_classes)
    assert len(accumulator) == len(predictions)
    assert accumulator.compute() == detection_map(predictions, ground_truths, num_classes=4)
    accumulator.reset()
    assert len(accumulator) == 0
    assert math.isnan(accumulator.compute().map50)


def _single(boxes: list[list[float]], scores: list[float], classes: list[int]) -> Prediction:
    return (np.array(boxes, dtype=np.float64).reshape(-1, 4), np.array(scores), np.array(classes))


def test_perfect_predictions_score_one():
    truth = (np.array([[0, 0, 10, 10], [20, 20, 40, 50.0]]), np.array([0, 1]))
    result = detection_map([_single(truth[0].tolist(), [0.9, 0.8], [0, 1])], [truth])
    # COCO's precision tp / (tp + fp + eps) sits one ulp or two below 1.
    assert result.map50 == pytest.approx(1.0) and result.map50_95 == pytest.approx(1.0)
    assert result.per_class_ap50_95 == pytest.approx({0: 1.0, 1: 1.0})
    assert result.precision == result.recall == 1.0


def test_no_predictions_score_zero():
    truth = (np.array([[0, 0, 10, 10.0]]), np.array([0]))
    result = detection_map([_single([], [], [])], [truth])
    assert result.map50 == result.map50_95 == 0.0
    assert result.per_class_ap50 == {0: 0.0}
    assert result.precision == result.recall == 0.0


def test_single_match_at_iou_0_6_passes_three_thresholds():
    # IoU = 60 / 100 exactly: passes 0.50, 0.55 and 0.60 (COCO's 0.6 is exactly 0.6).
    predictions = [_single([[0, 0, 6, 10]], [0.5], [0])]
    ground_truths = [(np.array([[0, 0, 10, 10.0]]), np.array([0]))]
    result = detection_map(predictions, ground_truths)
    map50, map50_95, _, _ = _coco_reference(predictions, ground_truths, 1)
    assert (result.map50, result.map50_95) == pytest.approx((map50, map50_95), abs=1e-12)
    assert (result.map50, result.map50_95) == pytest.approx((1.0, 0.3), abs=1e-12)


def test_equal_iou_tie_goes_to_the_later_ground_truth_like_coco():
    # The first detection overlaps both truths with IoU 0.818 exactly; COCO gives it the later
    # one, so the second detection (identical to that truth) falls back to the first truth at
    # IoU 0.667 and misses from threshold 0.70 up.
    truth = (np.array([[0, 0, 10, 10], [2, 0, 12, 10.0]]), np.array([0, 0]))
    predictions = [_single([[1, 0, 11, 10], [2, 0, 12, 10]], [0.9, 0.8], [0, 0])]
    result = detection_map(predictions, [truth])
    map50, map50_95, _, _ = _coco_reference(predictions, [truth], 1)
    expected = (4 * 1.0 + 3 * 51 / 101 + 3 * 0.5 * 51 / 101) / 10
    assert result.map50 == map50 == pytest.approx(1.0)
    assert result.map50_95 == pytest.approx(map50_95, abs=1e-12)
    assert result.map50_95 == pytest.approx(expected, abs=1e-12)


def test_classes_without_ground_truth_are_left_out():
    predictions = [_single([[0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.95], [0, 5])]
    ground_truths = [(np.array([[0, 0, 10, 10.0]]), np.array([0]))]
    result = detection_map(predictions, ground_truths)
    assert result.per_class_ap50 == pytest.approx({0: 1.0})
    assert result.map50 == pytest.approx(1.0)


def test_max_detections_applies_per_image_and_class():
    # Class 0 has two stronger false positives; cut at 2 per class the true positive is dropped,
    # while class 1's detection survives although it scores lowest in the image.
    truth = (np.array([[0, 0, 10, 10], [30, 30, 40, 40.0]]), np.array([0, 1]))
    boxes = [[100, 100, 110, 110], [120, 120, 130, 130], [0, 0, 10, 10], [30, 30, 40, 40]]
    prediction = _single(boxes, [0.9, 0.8, 0.7, 0.1], [0, 0, 0, 1])
    result = detection_map([prediction], [truth], max_detections=2)
    assert result.per_class_ap50 == pytest.approx({0: 0.0, 1: 1.0})
    assert detection_map([prediction], [truth], max_detections=3).per_class_ap50[0] == (
        pytest.approx(1 / 3)
    )


def test_precision_and_recall_at_best_f1():
    # Scores 0.9 TP, 0.8 FP, 0.7 TP against two truths: F1 is 0.667, 0.5, then 0.8 at 0.7.
    truth = (np.array([[0, 0, 10, 10], [20, 0, 30, 10.0]]), np.array([0, 0]))
    boxes = [[0, 0, 10, 10], [50, 50, 60, 60], [20, 0, 30, 10]]
    result = detection_map([_single(boxes, [0.9, 0.8, 0.7], [0, 0, 0])], [truth])
    assert result.precision == pytest.approx(2 / 3)
    assert result.recall == 1.0


def test_no_ground_truth_anywhere_gives_nan():
    result = detection_map([_single([[0, 0, 1, 1]], [0.5], [0])], [(np.zeros((0, 4)), [])])
    assert math.isnan(result.map50) and math.isnan(result.map50_95)
    assert result.per_class_ap50 == {}


@pytest.mark.parametrize(
    ("prediction", "truth", "message"),
    [
        (_single([[0, 0, 1, 1]], [0.5], [0]), (np.zeros((1, 5)), [0]), r"shape \(N, 4\)"),
        (_single([[0, 0, 1, 1]], [0.5, 0.4], [0]), (np.zeros((0, 4)), []), "scores"),
        (_single([[0, 0, 1, 1]], [0.5], [-1]), (np.zeros((0, 4)), []), ">= 0"),
        (_single([[0, 0, 1, 1]], [0.5], [0.5]), (np.zeros((0, 4)), []), "integer"),
        (_single([[0, 0, 1, 1]], [0.5], [7]), (np.zeros((0, 4)), []), "num_classes=3"),
        (_single([[0, 0, 1, np.nan]], [0.5], [0]), (np.zeros((0, 4)), []), "finite"),
    ],
)
def test_detection_map_rejects_bad_input(prediction, truth, message):
    with pytest.raises(ValueError, match=message):
        detection_map([prediction], [truth], num_classes=3)


def test_detection_map_rejects_mismatched_lengths_and_bad_max_detections():
    with pytest.raises(ValueError, match="same length"):
        detection_map([], [(np.zeros((0, 4)), [])])
    with pytest.raises(ValueError, match="max_detections"):
        MapAccumulator(max_detections=0)


def test_top1_accuracy_from_logits_and_ids():
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    labels = np.array([1, 0, 0, 0])
    assert top1_accuracy(logits, labels) == 0.75
    assert top1_accuracy(np.array([1, 0, 1, 0]), labels) == 0.75
    with pytest.raises(ValueError, match="same N"):
        top1_accuracy(logits[:3], labels)
    with pytest.raises(ValueError, match="N > 0"):
        top1_accuracy(np.zeros((0, 2)), np.zeros(0, dtype=np.int64))


def test_confusion_matrix_rows_are_true_classes():
    matrix = confusion_matrix(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 3)
    np.testing.assert_array_equal(matrix, [[1, 0, 0], [0, 1, 0], [0, 1, 1]])
    assert matrix.dtype == np.int64
    with pytest.raises(ValueError, match="num_classes=3"):
        confusion_matrix(np.array([3]), np.array([0]), 3)


def test_mean_iou_on_two_by_two_maps():
    predicted = np.array([[[0, 1], [1, 1]]])
    truth = np.array([[[0, 1], [0, 1]]])
    miou, per_class = mean_iou(predicted, truth, num_classes=3)
    # Class 0: 1 / (1 + 2 - 1); class 1: 2 / (3 + 2 - 2); class 2 absent.
    np.testing.assert_allclose(per_class[:2], [0.5, 2 / 3])
    assert math.isnan(per_class[2])
    assert miou == pytest.approx((0.5 + 2 / 3) / 2)


def test_mean_iou_ignores_pixels_and_rejects_bad_ids():
    predicted = np.array([[0, 1], [1, 1]])
    truth = np.array([[0, 1], [255, 1]])
    miou, per_class = mean_iou(predicted, truth, num_classes=2, ignore_index=255)
    np.testing.assert_allclose(per_class, [1.0, 1.0])
    assert miou == 1.0
    with pytest.raises(ValueError, match="labels"):
        mean_iou(predicted, truth, num_classes=2)


def test_importing_metrics_does_not_import_torch():
    code = "import sys, ubiq.models.runtime.metrics; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
