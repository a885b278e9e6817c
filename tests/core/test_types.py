import json

import numpy as np
import pytest

from ubiq.types import Detections, Event, Frame, iou_matrix


def make_detections():
    return Detections(
        xyxy=[[0, 0, 10, 10], [5, 5, 25, 15], [100, 100, 110, 130]],
        confidence=[0.9, 0.5, 0.7],
        class_id=[0, 1, 0],
        labels=("person", "car"),
    )


def test_detections_normalise_dtypes_and_select_rows():
    detections = make_detections()
    assert detections.xyxy.dtype == np.float32
    assert detections.class_id.dtype == np.int64
    people = detections[detections.class_id == 0]
    assert len(people) == 2
    np.testing.assert_allclose(people.confidence, [0.9, 0.7])
    assert people.labels == ("person", "car")
    np.testing.assert_allclose(detections.area(), [100, 200, 300])
    single = detections[1]
    assert len(single) == 1 and single.label(int(single.class_id[0])) == "car"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"xyxy": np.zeros((3, 5))}, r"xyxy must have shape \(N, 4\), got \(3, 5\)"),
        ({"confidence": np.zeros(2)}, r"confidence must have shape \(3,\), got \(2,\)"),
        ({"class_id": np.zeros((3, 1))}, r"class_id must have 1 dimension"),
        ({"tracker_id": np.zeros(4)}, r"tracker_id must have shape \(3,\)"),
        ({"mask": np.zeros((2, 4, 4))}, r"mask must have shape \(3, H, W\)"),
    ],
)
def test_detections_reject_bad_shapes_naming_the_field(kwargs, message):
    fields = {"xyxy": np.zeros((3, 4)), "confidence": np.zeros(3), "class_id": np.zeros(3)}
    fields.update(kwargs)
    with pytest.raises(ValueError, match=message):
        Detections(**fields)


def test_records_are_json_safe_with_labels():
    records = make_detections().to_records()
    assert json.loads(json.dumps(records))[1] == {
        "xyxy": [5.0, 5.0, 25.0, 15.0],
        "confidence": 0.5,
        "class_id": 1,
        "label": "car",
    }
    assert Detections.empty().to_records() == []


def test_unknown_class_label_falls_back_to_number():
    assert make_detections().label(7) == "7"


def test_iou_matrix_known_values():
    iou = iou_matrix([[0, 0, 10, 10]], [[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    np.testing.assert_allclose(iou, [[1.0, 50 / 150, 0.0]], rtol=1e-6)


def test_iou_matrix_matches_pairwise_arithmetic_and_edge_cases():
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 100, (6, 4)).astype(np.float32)
    b = rng.uniform(0, 100, (5, 4)).astype(np.float32)
    a[:, 2:] = a[:, :2] + rng.uniform(-5, 40, (6, 2)).astype(np.float32)  # some inverted
    b[:, 2:] = b[:, :2] + rng.uniform(0, 40, (5, 2)).astype(np.float32)
    b[0, 2:] = b[0, :2]  # an empty box
    iou = iou_matrix(a, b)
    assert iou.shape == (6, 5) and iou.dtype == np.float32
    for i in range(6):
        for j in range(5):
            w = max(0.0, min(a[i, 2], b[j, 2]) - max(a[i, 0], b[j, 0]))
            h = max(0.0, min(a[i, 3], b[j, 3]) - max(a[i, 1], b[j, 1]))
            area_a = max(0.0, a[i, 2] - a[i, 0]) * max(0.0, a[i, 3] - a[i, 1])
            area_b = max(0.0, b[j, 2] - b[j, 0]) * max(0.0, b[j, 3] - b[j, 1])
            union = area_a + area_b - w * h
            assert iou[i, j] == pytest.approx(w * h / union if union > 0 else 0.0, abs=1e-6)
    assert iou_matrix(np.zeros((2, 4)), np.zeros((0, 4))).shape == (2, 0)
    assert iou_matrix([[3, 3, 3, 3]], [[3, 3, 3, 3]])[0, 0] == 0.0  # empty boxes: no NaN


def test_frame_validation():
    frame = Frame(np.zeros((4, 6, 3), np.uint8), index=2, timestamp_ns=5)
    assert (frame.width, frame.height) == (6, 4)
    with pytest.raises(ValueError, match=r"shape \(H, W, 3\), got \(4, 6\)"):
        Frame(np.zeros((4, 6), np.uint8), 0, 0)
    with pytest.raises(ValueError, match="uint8, got float32"):
        Frame(np.zeros((4, 6, 3), np.float32), 0, 0)


def test_event_payload_must_be_json_safe():
    event = Event("zone.enter", 10, "cam1", {"zone": "door", "ids": [1, 2]})
    assert json.loads(event.to_json())["payload"] == {"zone": "door", "ids": [1, 2]}
    with pytest.raises(ValueError, match=r"payload.box must be JSON-safe, got ndarray"):
        Event("detection", 0, payload={"box": np.zeros(4)})
    with pytest.raises(ValueError, match="finite"):
        Event("detection", 0, payload={"score": float("nan")})
    with pytest.raises(ValueError, match="kind"):
        Event("", 0)
