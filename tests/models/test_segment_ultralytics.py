"""Ultralytics -seg ONNX exports through the runtime: the manifest from their metadata, and
boxes and instance masks that match Ultralytics' own predictions on the same file."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ubiq.errors import WrongTaskError
from ubiq.models.runtime.loader import load_model
from ubiq.models.runtime.model import DetectionModel
from ubiq.models.runtime.segment import Segmenter


@pytest.fixture(scope="module")
def yolo_seg_onnx(tmp_path_factory):
    """YOLOv8n-seg built from its yaml, exported to ONNX at 320 (random weights, offline)."""
    pytest.importorskip("ultralytics", reason="the [yolo] extra is not installed")
    import torch

    from ubiq.models.zoo.ultralytics_adapter import export_ultralytics

    torch.manual_seed(0)  # the same untrained weights every run
    return export_ultralytics("yolov8n-seg.yaml", tmp_path_factory.mktemp("yoloseg"), imgsz=320)


def test_seg_export_opens_as_an_instance_segmenter(yolo_seg_onnx):
    segmenter = load_model(yolo_seg_onnx, num_threads=1)
    assert isinstance(segmenter, Segmenter) and segmenter.decoder == "yolo_seg"
    assert segmenter.labels[0] == "background" and len(segmenter.labels) == 81  # yaml: "0".."79"
    assert segmenter.manifest.decoder.params["num_classes"] == 80
    with pytest.raises(WrongTaskError, match="is a 'segment' model, not a 'detect' one"):
        DetectionModel.load(yolo_seg_onnx)


def test_instances_match_ultralytics_own_predictions(yolo_seg_onnx):
    from skimage import data
    from ultralytics import YOLO

    image = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)[:400]  # 512x400: letterboxed
    probe = Segmenter.load(yolo_seg_onnx, num_threads=1)
    prediction = probe.infer(probe.prepare(image)[0])[0]
    # Untrained weights score low; a threshold under the best score keeps a few instances.
    threshold = float(prediction[0, 4:84].max()) * 0.9
    segmenter = Segmenter.load(
        yolo_seg_onnx, num_threads=1, confidence_threshold=threshold, max_detections=300
    )
    ours = segmenter(image).instances
    theirs = YOLO(str(yolo_seg_onnx), task="segment").predict(
        image, imgsz=320, conf=threshold, iou=0.45, retina_masks=True, verbose=False, max_det=300
    )[0]
    assert len(ours) == len(theirs.boxes) >= 1
    assert np.abs(ours.xyxy - theirs.boxes.xyxy.numpy()).max() < 1.0
    assert ours.class_id.tolist() == theirs.boxes.cls.numpy().astype(int).tolist()
    their_masks = theirs.masks.data.numpy().astype(bool)
    assert ours.mask.shape == their_masks.shape == (len(ours), 400, 512)
    for mine, other in zip(ours.mask, their_masks, strict=True):
        assert (mine & other).sum() / max(1, (mine | other).sum()) > 0.98
