"""The `person` zoo model: MediaPipe's BlazePose person detector and its decoder.

Real model (pulled through the zoo from the ``mediapipe==0.10.14`` wheel), real photographs:
scikit-image's astronaut and coffee, matplotlib's Grace Hopper portrait and, when the
``[yolo]`` extra is installed, Ultralytics' ``bus.jpg`` (people standing full length). The
person boxes are compared with boxes measured by hand on those photographs; the decoder is
compared with numbers MediaPipe 0.10.14's own graph (``PoseDetectionCpu`` followed by
``PoseDetectionToRoi``) gave on the same 224x224 input.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from support import run_ubiq

from ubiq.errors import ModelError
from ubiq.models.runtime.decoders import DecodeOptions, get_decoder
from ubiq.models.runtime.decoders.blazeface import ssd_anchors
from ubiq.models.runtime.decoders.blazepose import decode_blazepose, person_boxes
from ubiq.types import iou_matrix

PERSON_SHA256 = "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c"

# Boxes measured by hand (head top to feet or frame edge, outer edge of shoulders or arms).
ASTRONAUT_PERSON_XYXY = (18.0, 15.0, 362.0, 512.0)  # waist up; the helmet on her lap left out
HOPPER_PERSON_XYXY = (0.0, 22.0, 512.0, 600.0)  # head and shoulders, cap included
BUS_MAN_XYXY = (50.0, 402.0, 240.0, 901.0)  # the man on the left, standing full length

# MediaPipe 0.10.14 (mediapipe.CalculatorGraph running the wheel's PoseDetectionCpu and
# PoseDetectionToRoi) on the astronaut resized to 224x224 as the `person` manifest does:
# the detection in input pixels and the region of interest (centre, side, rotation).
MEDIAPIPE_ASTRONAUT_SCORE = 0.8144
MEDIAPIPE_ASTRONAUT_FACE_XYXY = (70.09, 58.67, 114.86, 103.43)
MEDIAPIPE_ASTRONAUT_KEYPOINTS = ((68.49, 230.58), (104.58, 9.66), (91.38, 105.42), (116.05, -56.24))
MEDIAPIPE_ASTRONAUT_ROI = (68.49, 230.58, 559.62, 0.1619)  # x, y, side, rotation (radians)


@pytest.fixture(scope="module")
def person_model(ubiq_home):
    """The real `person` model, pulled through the zoo (offline route: the mediapipe wheel)."""
    from ubiq.models.runtime.model import DetectionModel

    return DetectionModel.load("person")


def _bgr(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data

    return _bgr(data.astronaut())


def _bus_photo() -> np.ndarray:
    spec = importlib.util.find_spec("ultralytics")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("bus.jpg comes with the [yolo] extra (ultralytics), not installed")
    image = cv2.imread(str(Path(spec.submodule_search_locations[0]) / "assets" / "bus.jpg"))
    assert image is not None
    return image


# --- the zoo entry ---------------------------------------------------------------------------


def test_zoo_entry_reads_the_pose_detector_from_the_mediapipe_wheel():
    from ubiq.manifest import ModelManifest
    from ubiq.models import zoo

    entry = zoo.get_entry("person")
    assert (entry.task, entry.license, entry.sha256) == ("detect", "Apache-2.0", PERSON_SHA256)
    assert [s.kind for s in entry.sources] == ["url", "pip-wheel"]
    assert entry.sources[1].package == "mediapipe==0.10.14"
    assert entry.sources[1].member == "mediapipe/modules/pose_detection/pose_detection.tflite"
    manifest = ModelManifest.from_dict({**entry.manifest, "sha256": "", "source": ""})
    assert manifest.labels == ("person",) and manifest.decoder.name == "blazepose"
    assert manifest.input.shape == (1, 224, 224, 3)
    assert (manifest.preprocess.resize, manifest.preprocess.pad_value) == ("letterbox", 0)
    assert get_decoder("blazepose") is decode_blazepose


def test_pull_verifies_the_file_and_writes_its_manifest(person_model):
    assert person_model.path.name == "person.tflite"
    assert person_model.manifest.sha256 == PERSON_SHA256
    assert [t.shape for t in person_model.backend.outputs] == [(1, 2254, 12), (1, 2254, 1)]


# --- the decoder against MediaPipe -----------------------------------------------------------


def test_decoder_matches_mediapipe_on_the_same_input(person_model, astronaut):
    canvas = cv2.resize(astronaut, (224, 224), interpolation=cv2.INTER_LINEAR)
    tensor, transform = person_model.prepare(canvas)
    assert (transform.scale_x, transform.pad_x, transform.pad_y) == (1.0, 0.0, 0.0)
    outputs = person_model.infer(tensor)

    def decode(box: str):
        options = DecodeOptions(224, 224, 0.5, 0.45, params={"box": box})
        return decode_blazepose(outputs, options)

    face, roi, body = decode("face"), decode("roi"), decode("body")
    assert len(face) == len(roi) == len(body) == 1
    assert face.confidence[0] == pytest.approx(MEDIAPIPE_ASTRONAUT_SCORE, abs=1e-3)
    np.testing.assert_allclose(face.xyxy[0], MEDIAPIPE_ASTRONAUT_FACE_XYXY, atol=0.05)
    np.testing.assert_allclose(face.keypoints[0], MEDIAPIPE_ASTRONAUT_KEYPOINTS, atol=0.05)
    # The model's "face" box has the same size on every input: a fifth of the input side.
    assert face.xyxy[0, 2] - face.xyxy[0, 0] == pytest.approx(0.2 * 224, abs=0.2)
    # MediaPipe's rotated square region of interest, and the axis-aligned box around it.
    x, y, side, rotation = MEDIAPIPE_ASTRONAUT_ROI
    half = side / 2 * (abs(math.cos(rotation)) + abs(math.sin(rotation)))
    np.testing.assert_allclose(roi.xyxy[0], (x - half, y - half, x + half, y + half), atol=0.1)
    # The body box: the rectangle from the head top (keypoint 1) to its mirror image (the
    # feet), 0.41 times as wide, turned with the body, and the axis-aligned box around it.
    hip, head = face.keypoints[0, 0].astype(np.float64), face.keypoints[0, 1]
    along = head - hip
    across = np.array([-along[1], along[0]]) * 0.41
    corners = np.array([hip + a * along + b * across for a in (-1, 1) for b in (-1, 1)])
    np.testing.assert_allclose(
        body.xyxy[0], [*corners.min(axis=0), *corners.max(axis=0)], atol=1e-3
    )


# --- real photographs ------------------------------------------------------------------------


def _one_person(detections, truth: tuple[float, ...]) -> float:
    assert len(detections) == 1, detections.xyxy
    assert detections.labels[int(detections.class_id[0])] == "person"
    assert detections.keypoints.shape == (1, 4, 2)
    return float(iou_matrix(detections.xyxy, np.asarray(truth)[None])[0, 0])


def test_astronaut_from_the_waist_up(person_model, astronaut):
    detections = person_model(astronaut)
    assert _one_person(detections, ASTRONAUT_PERSON_XYXY) >= 0.7  # 0.75 measured
    assert detections.confidence[0] > 0.75
    # Her hips are below the frame: the mid-hip keypoint is too, and the box is clipped.
    assert detections.keypoints[0, 0, 1] > 512
    assert detections.xyxy[0, 3] == 512
    # Mid-shoulder keypoint near the base of her neck (measured at about (205, 255)).
    assert np.hypot(*(detections.keypoints[0, 2] - (205, 255))) < 30


def test_grace_hopper_head_and_shoulders(person_model):
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    detections = person_model(cv2.imread(str(path)))
    assert _one_person(detections, HOPPER_PERSON_XYXY) >= 0.8  # 0.90 measured


def test_person_standing_full_length(person_model):
    detections = person_model(_bus_photo())
    # Of the four people in the photo only the most prominent one scores above 0.25 (the
    # README says so): this detector is for one or a few people close to the camera.
    assert _one_person(detections, BUS_MAN_XYXY) >= 0.7  # 0.77 measured
    assert detections.confidence[0] > 0.9


def test_no_person_on_photos_without_people(person_model):
    from skimage import data

    assert len(person_model(_bgr(data.coffee()))) == 0
    assert len(person_model(np.full((480, 640, 3), 128, np.uint8))) == 0
    assert len(person_model(np.zeros((300, 200, 3), np.uint8))) == 0


@pytest.mark.parametrize("crop", ["landscape", "portrait"])
def test_letterbox_maps_back_exactly(person_model, astronaut, crop):
    """A non-square frame gives what its letterboxed 224x224 canvas gives, mapped back."""
    frame = astronaut[:360] if crop == "landscape" else astronaut[:, 60:420]
    height, width = frame.shape[:2]
    ratio = 224 / max(width, height)
    new_width, new_height = round(width * ratio), round(height * ratio)
    assert sorted((new_width, new_height)) == [158, 224]  # 360 * 0.4375 = 157.5 -> 158
    pad_x, pad_y = (224 - new_width) // 2, (224 - new_height) // 2
    canvas = np.zeros((224, 224, 3), np.uint8)
    canvas[pad_y : pad_y + new_height, pad_x : pad_x + new_width] = cv2.resize(
        frame, (new_width, new_height), interpolation=cv2.INTER_LINEAR
    )
    in_frame, in_canvas = person_model(frame), person_model(canvas)
    assert len(in_frame) == len(in_canvas) == 1
    np.testing.assert_allclose(in_frame.confidence, in_canvas.confidence, rtol=1e-6)
    scale = np.array([new_width / width, new_height / height], np.float32)
    expected_points = (in_canvas.keypoints - (pad_x, pad_y)) / scale
    np.testing.assert_allclose(in_frame.keypoints, expected_points, atol=1e-3)
    expected_boxes = (in_canvas.xyxy - (pad_x, pad_y, pad_x, pad_y)) / np.tile(scale, 2)
    expected_boxes = np.clip(expected_boxes, 0, (width, height, width, height))
    np.testing.assert_allclose(in_frame.xyxy, expected_boxes, atol=1e-3)


def test_detect_cli_on_the_demo_clip(person_model, tmp_path):
    from ubiq.hardware.sources.demo import demo_ground_truth

    jsonl = tmp_path / "person.jsonl"
    result = run_ubiq(
        "detect",
        "--model",
        "person",
        "--source",
        "demo",
        "--max-frames",
        "10",
        "--jsonl",
        str(jsonl),
    )
    assert result.returncode == 0, result.stderr
    assert "10 frames" in result.stderr
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    frames = [r for r in records if "detections" in r]
    assert [r["frame"] for r in frames] == list(range(10))
    faces = demo_ground_truth()
    for record in frames:
        # The astronaut, once per frame, her face (the clip's ground truth) inside the box.
        (person,) = record["detections"]
        assert person["label"] == "person" and person["confidence"] > 0.5
        x1, y1, x2, y2 = person["xyxy"]
        fx1, fy1, fx2, fy2 = np.asarray(faces[record["frame"]]).reshape(4)
        assert x1 <= fx1 and y1 <= fy1 + 5 and fx2 <= x2 and fy2 <= y2


# --- the decoder on made-up outputs ----------------------------------------------------------


def test_person_boxes_follow_the_body_axis():
    upright = np.array([[[100, 200], [100, 100]]], np.float32)  # head 100 px above the hips
    np.testing.assert_allclose(person_boxes(upright), [[59, 100, 141, 300]], atol=1e-4)
    np.testing.assert_allclose(person_boxes(upright, "roi"), [[-25, 75, 225, 325]], atol=1e-4)
    lying = np.array([[[100, 200], [200, 200]]], np.float32)
    np.testing.assert_allclose(person_boxes(lying), [[0, 159, 200, 241]], atol=1e-4)
    tilted = np.array([[[0, 0], [30, -40]]], np.float32)  # r = 50, tilted 36.87 degrees
    extent_x, extent_y = 0.6 * 50 + 0.8 * 20.5, 0.8 * 50 + 0.6 * 20.5
    np.testing.assert_allclose(
        person_boxes(tilted), [[-extent_x, -extent_y, extent_x, extent_y]], atol=1e-4
    )
    assert person_boxes(np.zeros((0, 4, 2))).shape == (0, 4)
    with pytest.raises(ValueError, match="box must be 'body' or 'roi'"):
        person_boxes(upright, "face")
    with pytest.raises(ValueError, match=r"keypoints must have shape"):
        person_boxes(np.zeros((1, 1, 2)))


def _outputs(people: list[tuple[int, float, tuple[float, float]]]) -> list[np.ndarray]:
    """Model outputs with every anchor silent except ``(anchor, logit, hip-to-head)``."""
    regressors = np.zeros((1, 2254, 12), np.float32)
    logits = np.full((1, 2254, 1), -50.0, np.float32)
    for anchor, logit, (dx, dy) in people:
        logits[0, anchor, 0] = logit
        regressors[0, anchor, 2:4] = 44.8  # the face box's constant size
        regressors[0, anchor, 4:8] = (0, 60, dx, 60 + dy)  # keypoints 0 and 1
    return [regressors, logits]


def test_decoder_merges_one_person_and_keeps_two_apart():
    anchors = ssd_anchors(224, 224, (8, 16, 32, 32, 32), (2,) * 5) * 224
    assert anchors.shape == (2254, 2)
    options = DecodeOptions(224, 224, 0.5, 0.45)
    # Anchors 0 and 2 are neighbouring cells (8 px apart): one person, blended.
    merged = decode_blazepose(_outputs([(0, 3.0, (0, -80)), (2, 1.0, (0, -80))]), options)
    assert len(merged) == 1
    weights = 1 / (1 + np.exp(-np.array([3.0, 1.0])))
    hip = (weights[0] * anchors[0] + weights[1] * anchors[2]) / weights.sum() + (0, 60)
    np.testing.assert_allclose(merged.keypoints[0, 0], hip, atol=1e-3)
    np.testing.assert_allclose(
        merged.xyxy[0], [*(hip + (-0.41 * 80, -80)), *(hip + (0.41 * 80, 80))], atol=1e-3
    )
    # Anchors 0 and 1000 are far apart: two people, by descending confidence.
    two = decode_blazepose(_outputs([(0, 1.0, (0, -40)), (1000, 2.0, (0, -40))]), options)
    assert len(two) == 2 and two.confidence[0] > two.confidence[1]
    np.testing.assert_allclose(two.keypoints[0, 0], anchors[1000] + (0, 60), atol=1e-3)
    face = decode_blazepose(
        _outputs([(0, 3.0, (0, -80))]), DecodeOptions(224, 224, params={"box": "face"})
    )
    np.testing.assert_allclose(face.xyxy[0, 2:] - face.xyxy[0, :2], [44.8, 44.8], atol=1e-3)
    assert len(decode_blazepose(_outputs([]), options)) == 0
    assert (
        len(
            decode_blazepose(_outputs([(0, 3.0, (0, -80))]), DecodeOptions(224, 224, class_ids=[1]))
        )
        == 0
    )


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"box": "torso"}, "box must be one of body, roi, face, got 'torso'"),
        ({"body_width_ratio": 0}, "body_width_ratio must be a number above 0"),
        ({"face_iou_threshold": 1.5}, "face_iou_threshold must be a number above 0 and at most 1"),
        ({"roi_scale": "big"}, "roi_scale must be a number above 0"),
    ],
)
def test_bad_params_are_one_clear_error(params, message):
    with pytest.raises(ModelError, match=message):
        decode_blazepose(_outputs([]), DecodeOptions(224, 224, params=params))


def test_outputs_of_another_model_are_refused():
    blazeface_like = [np.zeros((1, 896, 16), np.float32), np.zeros((1, 896, 1), np.float32)]
    with pytest.raises(ModelError, match="896 anchors"):
        decode_blazepose(blazeface_like, DecodeOptions(224, 224))
