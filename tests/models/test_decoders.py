"""Tests for ubiq.models.runtime.decoders: NMS, YOLO, SSD, BlazeFace, registry and guessing."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ubiq.errors import ModelError
from ubiq.models.runtime.decoders import (
    DECODERS,
    DecodeOptions,
    RawDetections,
    get_decoder,
    guess_decoder,
)
from ubiq.models.runtime.decoders import nms as nms_module
from ubiq.models.runtime.decoders.blazeface import decode_blazeface, ssd_anchors
from ubiq.models.runtime.decoders.nms import batched_nms, nms, weighted_nms
from ubiq.models.runtime.decoders.ssd import decode_ssd
from ubiq.models.runtime.decoders.yolo import decode_yolo
from ubiq.types import iou_matrix

# --- NMS -------------------------------------------------------------------------------


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10.5]])
    scores = np.array([0.8, 0.9, 0.5, 0.3])
    np.testing.assert_array_equal(nms(boxes, scores, 0.5), [1, 2])
    np.testing.assert_array_equal(nms(boxes, scores, 0.5, max_detections=1), [1])
    # IoU of boxes 0 and 1 is 81 / 119 = 0.68: a threshold above it keeps both.
    np.testing.assert_array_equal(nms(boxes, scores, 0.7), [1, 0, 2])
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).shape == (0,)


def test_nms_numpy_fallback_agrees_with_opencv(monkeypatch):
    rng = np.random.default_rng(1)
    corners = rng.uniform(0, 300, (400, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(5, 60, (400, 2))], axis=1)
    scores = rng.uniform(0, 1, 400)
    with_opencv = nms(boxes, scores, 0.45, 1000)
    monkeypatch.setattr(nms_module, "_CV2_NMS", None)
    with_numpy = nms(boxes, scores, 0.45, 1000)
    assert 50 < len(with_numpy) < 400
    np.testing.assert_array_equal(with_opencv, with_numpy)
    # Every kept pair overlaps at most the threshold; every dropped box overlaps a kept one.
    kept = boxes[with_numpy]
    iou = iou_matrix(kept, kept) - np.eye(len(kept))
    assert iou.max() <= 0.45 + 1e-6
    dropped = np.setdiff1d(np.arange(400), with_numpy)
    assert (iou_matrix(boxes[dropped], kept).max(axis=1) > 0.45 - 1e-6).all()


def test_batched_nms_never_suppresses_across_classes():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10.5]])
    scores = np.array([0.9, 0.8, 0.7])
    np.testing.assert_array_equal(batched_nms(boxes, scores, np.array([0, 1, 0]), 0.5), [0, 1])
    np.testing.assert_array_equal(batched_nms(boxes, scores, np.array([90, 7, 3]), 0.5), [0, 1, 2])


def test_weighted_nms_blends_boxes_and_keypoints_by_score():
    boxes = np.array([[0, 0, 10, 10], [2, 0, 12, 10], [50, 50, 60, 60]], dtype=np.float32)
    scores = np.array([0.9, 0.1, 0.5])
    keypoints = np.array([[[1, 1]], [[3, 1]], [[55, 55]]], dtype=np.float32)
    indices, blended, points = weighted_nms(boxes, scores, 0.3, keypoints=keypoints)
    np.testing.assert_array_equal(indices, [0, 2])
    np.testing.assert_allclose(blended, [[0.2, 0, 10.2, 10], [50, 50, 60, 60]], atol=1e-5)
    np.testing.assert_allclose(points, [[[1.2, 1]], [[55, 55]]], atol=1e-5)
    indices, blended, points = weighted_nms(boxes, scores, 0.3, max_detections=1)
    assert indices.tolist() == [0] and blended.shape == (1, 4) and points is None


def test_nms_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"xyxy must have shape \(N, 4\), got \(2, 3\)"):
        nms(np.zeros((2, 3)), np.zeros(2), 0.5)
    with pytest.raises(ValueError, match=r"scores must have shape \(2,\), got \(3,\)"):
        nms(np.zeros((2, 4)), np.zeros(3), 0.5)
    with pytest.raises(ValueError, match="iou_threshold must be in"):
        nms(np.zeros((2, 4)), np.zeros(2), 1.5)


# --- YOLO ------------------------------------------------------------------------------


def _yolo_output(entries, num_classes=80, anchors=2100, extra=0):
    """(1, 4 + nc + extra, A) with ``(anchor, cx, cy, w, h, class, score)`` entries."""
    output = np.zeros((1, 4 + num_classes + extra, anchors), dtype=np.float32)
    output[0, 4 : 4 + num_classes] = 0.01
    for anchor, cx, cy, w, h, class_id, score in entries:
        output[0, :4, anchor] = (cx, cy, w, h)
        output[0, 4 + class_id, anchor] = score
    return output


YOLO_ENTRIES = [
    (123, 100, 80, 40, 20, 3, 0.9),  # the box
    (124, 102, 80, 40, 20, 3, 0.8),  # a duplicate of the same class: suppressed
    (500, 100, 80, 40, 20, 5, 0.7),  # the same place, another class: kept
    (900, 250, 250, 30, 30, 0, 0.2),  # below the default threshold 0.25
]


def test_yolo_decodes_known_boxes_with_class_aware_nms():
    result = decode_yolo([_yolo_output(YOLO_ENTRIES)], DecodeOptions(320, 320))
    np.testing.assert_allclose(result.xyxy, [[80, 70, 120, 90], [80, 70, 120, 90]])
    np.testing.assert_allclose(result.confidence, [0.9, 0.7], rtol=1e-6)
    assert result.class_id.tolist() == [3, 5]
    assert result.keypoints is None
    assert result.xyxy.dtype == np.float32 and result.class_id.dtype == np.int64


def test_yolo_threshold_class_filter_agnostic_and_limit():
    output = _yolo_output(YOLO_ENTRIES)
    low = decode_yolo([output], DecodeOptions(320, 320, confidence_threshold=0.1))
    assert low.class_id.tolist() == [3, 5, 0]
    np.testing.assert_allclose(low.xyxy[2], [235, 235, 265, 265])
    only_five = decode_yolo([output], DecodeOptions(320, 320, class_ids=np.array([5])))
    assert only_five.class_id.tolist() == [5] and only_five.confidence[0] == pytest.approx(0.7)
    agnostic = decode_yolo([output], DecodeOptions(320, 320, params={"agnostic_nms": True}))
    assert agnostic.class_id.tolist() == [3]
    # The class filter runs before NMS: with class 3 gone, class 5 is not suppressed by it.
    options = DecodeOptions(320, 320, class_ids=np.array([5]), params={"agnostic_nms": True})
    assert decode_yolo([output], options).class_id.tolist() == [5]
    limited = decode_yolo([output], DecodeOptions(320, 320, max_detections=1))
    assert limited.class_id.tolist() == [3]
    none = decode_yolo([output], DecodeOptions(320, 320, class_ids=np.array([7])))
    assert len(none) == 0 and none.xyxy.shape == (0, 4)


def test_yolo_accepts_the_transposed_layout_and_extra_outputs():
    output = _yolo_output(YOLO_ENTRIES)
    expected = decode_yolo([output], DecodeOptions(320, 320))
    transposed = np.ascontiguousarray(output.transpose(0, 2, 1))
    proto = np.zeros((1, 32, 80, 80), dtype=np.float32)
    result = decode_yolo([transposed, proto], DecodeOptions(320, 320))
    np.testing.assert_allclose(result.xyxy, expected.xyxy)
    assert result.class_id.tolist() == expected.class_id.tolist()


def test_yolo_segmentation_output_needs_and_uses_num_classes():
    output = _yolo_output(YOLO_ENTRIES, extra=32)
    output[0, 84:] = 5.0  # mask coefficients must not be read as class scores
    result = decode_yolo([output], DecodeOptions(320, 320, params={"num_classes": 80}))
    assert result.class_id.tolist() == [3, 5]
    for layout in (output, output.transpose(0, 2, 1)):
        again = decode_yolo([layout], DecodeOptions(320, 320, params={"num_classes": 80}))
        np.testing.assert_allclose(again.xyxy, result.xyxy)


def test_yolo_pose_keypoints():
    output = _yolo_output([(7, 60, 60, 20, 40, 0, 0.95)], num_classes=1, anchors=300, extra=51)
    keypoints = np.stack([np.arange(17) + 50.0, np.arange(17) + 40.0, np.ones(17)], axis=1)
    output[0, 5:, 7] = keypoints.reshape(-1)
    options = DecodeOptions(160, 160, params={"num_classes": 1, "num_keypoints": 17})
    result = decode_yolo([output], options)
    np.testing.assert_allclose(result.xyxy, [[50, 40, 70, 80]])
    assert result.keypoints.shape == (1, 17, 2)
    np.testing.assert_allclose(result.keypoints[0], keypoints[:, :2])


def test_yolo_rejects_unusable_outputs():
    with pytest.raises(ModelError, match="yolo decoder needs"):
        decode_yolo([np.zeros((1, 2, 3, 4))], DecodeOptions(320, 320))
    with pytest.raises(ModelError, match="too small for 80 classes"):
        decode_yolo([np.zeros((1, 50, 60))], DecodeOptions(320, 320, params={"num_classes": 80}))


# --- SSD -------------------------------------------------------------------------------


def _ssd_outputs():
    boxes = np.zeros((1, 10, 4), dtype=np.float32)
    boxes[0, 0] = (0.1, 0.2, 0.5, 0.6)  # ymin, xmin, ymax, xmax
    boxes[0, 1] = (0.0, 0.0, 0.25, 0.5)
    boxes[0, 2] = (0.1, 0.2, 0.5, 0.61)
    boxes[0, 3] = (0.7, 0.7, 0.9, 0.9)
    classes = np.zeros((1, 10), dtype=np.float32)
    classes[0, :5] = (17, 2, 17, 0, 5)
    scores = np.zeros((1, 10), dtype=np.float32)
    scores[0, :5] = (0.9, 0.6, 0.8, 0.1, 0.95)  # entry 4 lies past the count: stale
    count = np.array([4], dtype=np.float32)
    return {"boxes": boxes, "classes": classes, "scores": scores, "count": count}


@pytest.mark.parametrize(
    "order", list(itertools.permutations(["boxes", "classes", "scores", "count"]))
)
def test_ssd_identifies_outputs_in_any_order(order):
    outputs = _ssd_outputs()
    result = decode_ssd([outputs[name] for name in order], DecodeOptions(200, 100))
    np.testing.assert_allclose(
        result.xyxy, [[40, 10, 120, 50], [40, 10, 122, 50], [0, 0, 100, 25]], atol=1e-4
    )
    np.testing.assert_allclose(result.confidence, [0.9, 0.8, 0.6], rtol=1e-6)
    assert result.class_id.tolist() == [17, 17, 2]


def test_ssd_uses_names_when_values_cannot_tell_classes_from_scores():
    outputs = _ssd_outputs()
    outputs["scores"][0, :4] = (1, 1, 0, 1)  # whole numbers, like the classes
    outputs["classes"][0, :4] = (0, 1, 1, 0)
    names = ("detection_scores", "detection_boxes", "num_detections", "detection_classes")
    arrays = [outputs["scores"], outputs["boxes"], outputs["count"], outputs["classes"]]
    result = decode_ssd(arrays, DecodeOptions(200, 100, output_names=names))
    assert result.class_id.tolist() == [0, 1, 0]
    np.testing.assert_allclose(result.confidence, [1, 1, 1])


def test_ssd_params_threshold_and_class_filter():
    outputs = list(_ssd_outputs().values())
    shifted = decode_ssd(outputs, DecodeOptions(200, 100, params={"label_offset": 1}))
    assert shifted.class_id.tolist() == [18, 18, 3]
    filtered = decode_ssd(outputs, DecodeOptions(200, 100, class_ids=np.array([2])))
    assert filtered.class_id.tolist() == [2]
    strict = decode_ssd(outputs, DecodeOptions(200, 100, confidence_threshold=0.85))
    assert strict.class_id.tolist() == [17]
    with_nms = decode_ssd(outputs, DecodeOptions(200, 100, params={"nms": True}))
    assert with_nms.class_id.tolist() == [17, 2]
    assert len(decode_ssd(outputs, DecodeOptions(200, 100, max_detections=2))) == 2


def test_ssd_rejects_other_outputs():
    with pytest.raises(ModelError, match="needs 4 outputs"):
        decode_ssd([np.zeros((1, 10, 4))], DecodeOptions(100, 100))
    with pytest.raises(ModelError, match="boxes output and one count"):
        decode_ssd([np.zeros((1, 10))] * 4, DecodeOptions(100, 100))


# --- BlazeFace -------------------------------------------------------------------------


def test_blazeface_anchors_follow_mediapipe():
    anchors = ssd_anchors(128, 128)
    assert anchors.shape == (896, 2)
    np.testing.assert_allclose(anchors[0], [0.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(anchors[1], anchors[0])  # two anchors per 16x16 cell
    np.testing.assert_allclose(anchors[2], [1.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(anchors[32], [0.5 / 16, 1.5 / 16])  # next row
    np.testing.assert_allclose(anchors[512], [0.5 / 8, 0.5 / 8])  # first 8x8 cell ...
    np.testing.assert_allclose(anchors[517], [0.5 / 8, 0.5 / 8])  # ... holds 6 anchors
    np.testing.assert_allclose(anchors[518], [1.5 / 8, 0.5 / 8])
    np.testing.assert_allclose(anchors[895], [7.5 / 8, 7.5 / 8])
    assert ssd_anchors(192, 192, (4,), (1,)).shape == (2304, 2)  # full range
    assert ssd_anchors(128, 128) is anchors  # cached
    assert not anchors.flags.writeable


def _encode_face(regressors, logits, anchor, box, keypoints, logit, size=128):
    """Writes a face box (pixels) and keypoints into the raw outputs at ``anchor``."""
    centre = ssd_anchors(size, size)[anchor] * size
    x1, y1, x2, y2 = box
    regressors[0, anchor, :4] = (
        (x1 + x2) / 2 - centre[0],
        (y1 + y2) / 2 - centre[1],
        x2 - x1,
        y2 - y1,
    )
    regressors[0, anchor, 4:] = (np.asarray(keypoints) - centre).reshape(-1)
    logits[0, anchor, 0] = logit


def _blank_blazeface():
    return np.zeros((1, 896, 16), np.float32), np.full((1, 896, 1), -20.0, np.float32)


FACE_KEYPOINTS = [[50, 40], [70, 40], [60, 50], [60, 60], [40, 45], [80, 45]]


def test_blazeface_decodes_an_encoded_face():
    regressors, logits = _blank_blazeface()
    _encode_face(regressors, logits, 600, (40, 30, 80, 74), FACE_KEYPOINTS, 3.0)
    _encode_face(regressors, logits, 10, (0, 0, 10, 10), FACE_KEYPOINTS, -1.0)  # score 0.27
    options = DecodeOptions(128, 128, confidence_threshold=0.5, iou_threshold=0.3)
    result = decode_blazeface([regressors, logits], options)
    np.testing.assert_allclose(result.xyxy, [[40, 30, 80, 74]], atol=1e-4)
    np.testing.assert_allclose(result.confidence, [1 / (1 + np.exp(-3.0))], rtol=1e-6)
    assert result.class_id.tolist() == [0]
    np.testing.assert_allclose(result.keypoints[0], FACE_KEYPOINTS, atol=1e-4)
    swapped = decode_blazeface([logits, regressors], options)  # any output order
    np.testing.assert_allclose(swapped.xyxy, result.xyxy)


def test_blazeface_blends_overlapping_faces_and_plain_nms_keeps_the_top_one():
    regressors, logits = _blank_blazeface()
    _encode_face(regressors, logits, 600, (40, 30, 80, 70), FACE_KEYPOINTS, np.log(3.0))  # 0.75
    shifted = np.asarray(FACE_KEYPOINTS) + 4
    _encode_face(regressors, logits, 601, (44, 30, 84, 70), shifted, 0.0)  # score 0.5
    _encode_face(regressors, logits, 100, (0, 0, 20, 20), FACE_KEYPOINTS, 2.0)  # far away
    options = DecodeOptions(128, 128, confidence_threshold=0.4, iou_threshold=0.3)
    result = decode_blazeface([regressors, logits], options)
    assert len(result) == 2
    np.testing.assert_allclose(result.confidence, [0.880797, 0.75], rtol=1e-5)
    # Weights 0.75 and 0.5: x moves by 4 * 0.5 / 1.25 = 1.6 pixels.
    np.testing.assert_allclose(result.xyxy[1], [41.6, 30, 81.6, 70], atol=1e-4)
    np.testing.assert_allclose(result.keypoints[1], np.asarray(FACE_KEYPOINTS) + 1.6, atol=1e-4)
    plain = decode_blazeface(
        [regressors, logits], DecodeOptions(128, 128, 0.4, 0.3, params={"nms": "plain"})
    )
    np.testing.assert_allclose(plain.xyxy[1], [40, 30, 80, 70], atol=1e-4)


def test_blazeface_class_filter_and_empty_results():
    regressors, logits = _blank_blazeface()
    _encode_face(regressors, logits, 600, (40, 30, 80, 74), FACE_KEYPOINTS, 3.0)
    options = DecodeOptions(128, 128, class_ids=np.array([1]))
    filtered = decode_blazeface([regressors, logits], options)
    assert len(filtered) == 0 and filtered.keypoints.shape == (0, 6, 2)
    logits[:] = -200.0  # clipped to -100 before the sigmoid: no overflow, no faces
    assert len(decode_blazeface([regressors, logits], DecodeOptions(128, 128))) == 0


def test_blazeface_full_range_params_and_anchor_mismatch():
    regressors = np.zeros((1, 2304, 16), np.float32)
    logits = np.full((1, 2304, 1), -20.0, np.float32)
    logits[0, 1000, 0] = 4.0
    params = {"strides": [4], "num_anchors_per_layer": 1}
    result = decode_blazeface([regressors, logits], DecodeOptions(192, 192, params=params))
    centre = ssd_anchors(192, 192, (4,), (1,))[1000] * 192  # cell (40, 20) of 48x48
    np.testing.assert_allclose(centre, [40.5 * 4, 20.5 * 4])
    np.testing.assert_allclose(result.xyxy, [[*centre, *centre]], atol=1e-4)
    # 2304 anchors without params: the full range layout is chosen by the anchor count.
    guessed = decode_blazeface([regressors, logits], DecodeOptions(192, 192))
    np.testing.assert_allclose(guessed.xyxy, result.xyxy)
    with pytest.raises(ModelError, match="has 2304 anchors but the anchor params"):
        decode_blazeface([regressors, logits], DecodeOptions(128, 128, params={"strides": [8]}))
    with pytest.raises(ModelError, match="has 1000 anchors but the anchor params"):
        decode_blazeface([np.zeros((1, 1000, 16)), np.zeros((1, 1000, 1))], DecodeOptions(128, 128))
    with pytest.raises(ModelError, match="blazeface decoder needs regressors"):
        decode_blazeface([regressors], DecodeOptions(192, 192, params=params))


# --- Registry, options and guessing ----------------------------------------------------


def test_get_decoder_resolves_every_registered_name():
    assert get_decoder("yolo") is decode_yolo
    assert get_decoder("ssd") is decode_ssd
    assert get_decoder("blazeface") is decode_blazeface
    assert set(DECODERS) == {"yolo", "ssd", "blazeface", "blazepose"}
    with pytest.raises(
        ModelError, match=r"unknown decoder 'yolov99' \(known: blazeface, blazepose, ssd, yolo\)"
    ):
        get_decoder("yolov99")


@pytest.mark.parametrize(
    ("shapes", "expected"),
    [
        ([(1, 84, 2100)], "yolo"),
        ([(1, 8400, 84)], "yolo"),
        ([(1, 5, 2100)], "yolo"),
        ([(1, 896, 16), (1, 896, 1)], "blazeface"),
        ([(1, 2304, 1), (1, 2304, 16)], "blazeface"),
        ([(1, 25, 4), (1, 25), (1, 25), (1,)], "ssd"),
        ([(1, 25), (1, 25, 4), (1,), (1, 25)], "ssd"),
        ([(1, 1000)], None),
        ([(1, 84, 84)], None),
        ([(1, 896, 16), (1, 895, 1)], None),
        ([(1, 25, 4), (1, 25), (1, 24), (1,)], None),
        ([(1, 84, None)], "yolo"),  # dynamic anchor axis
        ([(np.int32(1), np.int32(896), np.int32(16)), (1, 896, 1)], "blazeface"),
        ([(1, "anchors", "classes")], None),
        ([], None),
    ],
)
def test_guess_decoder(shapes, expected):
    assert guess_decoder(shapes, [f"out{i}" for i in range(len(shapes))]) == expected


def test_options_and_raw_detections_validate():
    with pytest.raises(ValueError, match="confidence_threshold must be in"):
        DecodeOptions(320, 320, confidence_threshold=2.0)
    with pytest.raises(ValueError, match="input size must be positive, got 0x320"):
        DecodeOptions(0, 320)
    with pytest.raises(ValueError, match="max_detections must be positive"):
        DecodeOptions(320, 320, max_detections=0)
    assert DecodeOptions(320, 320, class_ids=[1, 2]).class_ids.dtype == np.int64
    with pytest.raises(ValueError, match=r"confidence must have shape \(2,\)"):
        RawDetections(np.zeros((2, 4)), np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match=r"keypoints must have shape \(2, K, 2\)"):
        RawDetections(np.zeros((2, 4)), np.zeros(2), np.zeros(2), np.zeros((2, 3)))
    empty = RawDetections.empty(num_keypoints=6)
    assert len(empty) == 0 and empty.keypoints.shape == (0, 6, 2)


def test_yolo_end_to_end_rows_decode_without_nms():
    rows = np.zeros((1, 300, 6), np.float32)
    rows[0, 0] = [10, 20, 50, 80, 0.9, 3]
    rows[0, 1] = [12, 22, 52, 82, 0.8, 3]  # overlapping: an NMS-free model already chose
    rows[0, 2] = [100, 100, 120, 140, 0.3, 1]
    rows[0, 3] = [0, 0, 5, 5, 0.1, 2]  # below the threshold
    options = DecodeOptions(320, 320, confidence_threshold=0.25, params={"end2end": True})
    raw = get_decoder("yolo")([rows], options)
    np.testing.assert_allclose(raw.xyxy[0], [10, 20, 50, 80])
    assert raw.class_id.tolist() == [3, 3, 1]
    np.testing.assert_allclose(raw.confidence, [0.9, 0.8, 0.3])
    filtered = get_decoder("yolo")(
        [rows],
        DecodeOptions(320, 320, class_ids=np.array([1]), params={"end2end": True}),
    )
    assert filtered.class_id.tolist() == [1]


def test_yolo_decoder_scales_normalized_boxes_to_input_pixels():
    from ubiq.models.runtime.decoders import DecodeOptions
    from ubiq.models.runtime.decoders.yolo import decode_yolo

    prediction = np.zeros((1, 4 + 2, 8), np.float32)
    prediction[0, :4, 1] = [0.5, 0.25, 0.2, 0.1]  # cx, cy, w, h as fractions
    prediction[0, 5, 1] = 0.9
    options = DecodeOptions(
        input_width=320,
        input_height=160,
        confidence_threshold=0.5,
        iou_threshold=0.5,
        class_ids=None,
        max_detections=10,
        params={"normalized": True},
        output_names=("y",),
    )
    raw = decode_yolo([prediction], options)
    np.testing.assert_allclose(raw.xyxy, [[128.0, 32.0, 192.0, 48.0]], atol=1e-4)
    assert raw.class_id.tolist() == [1]
