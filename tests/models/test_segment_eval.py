"""`ubiq val --task segment` on a folder of images and label PNGs, through the runtime."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from support import run_ubiq

from ubiq.errors import DatasetError
from ubiq.models.runtime.label_png import read_label_png, write_label_png
from ubiq.models.runtime.segment import Segmenter
from ubiq.models.runtime.segment_eval import evaluate_segment_folder


@pytest.fixture(scope="module")
def selfie_path(ubiq_home):
    from ubiq.models.zoo import pull

    return pull("selfie-seg", progress=False)


def _folder(root, segmenter):
    """images/ and labels/ whose labels are the model's own answers."""
    from skimage import data

    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for name, picture in (("astronaut", data.astronaut()), ("coffee", data.coffee())):
        image = cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(root / "images" / f"{name}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 100])
        stored = cv2.imread(str(root / "images" / f"{name}.jpg"))
        write_label_png(root / "labels" / f"{name}.png", segmenter(stored).class_map)
    return root


def test_labels_the_model_wrote_score_one_and_known_errors_lower_it(selfie_path, tmp_path):
    segmenter = Segmenter.load(selfie_path, num_threads=1)
    root = _folder(tmp_path / "set", segmenter)
    perfect = evaluate_segment_folder(selfie_path, root)
    assert perfect["images"] == 2 and perfect["miou"] == pytest.approx(1.0)
    label_path = root / "labels" / "astronaut.png"
    truth = read_label_png(label_path)
    person = int((truth == 1).sum())
    changed = truth.copy()
    changed[truth == 1] = 0  # the astronaut marked background: person IoU drops
    write_label_png(label_path, changed)
    coffee_person = int((read_label_png(root / "labels" / "coffee.png") == 1).sum())
    result = evaluate_segment_folder(selfie_path, root)
    expected_person_iou = coffee_person / (coffee_person + person)
    assert result["per_class_iou"]["person"] == pytest.approx(expected_person_iou, abs=1e-6)
    changed[:, :100] = 255  # not scored
    write_label_png(label_path, changed)
    ignored = evaluate_segment_folder(selfie_path, root)
    assert ignored["per_class_iou"]["person"] > result["per_class_iou"]["person"] - 1e-9
    write_label_png(label_path, np.full_like(truth, 7))
    with pytest.raises(DatasetError, match="holds class 7, but selfie-seg.tflite has 2 classes"):
        evaluate_segment_folder(selfie_path, root)


def test_val_cli_scores_a_segment_folder(selfie_path, tmp_path):
    segmenter = Segmenter.load(selfie_path, num_threads=1)
    root = _folder(tmp_path / "set", segmenter)
    result = run_ubiq("val", str(selfie_path), "--task", "segment", "--data", str(root), "--json")
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    assert scores["miou"] == pytest.approx(1.0) and set(scores["per_class_iou"]) == {
        "background",
        "person",
    }
    text = run_ubiq("val", str(selfie_path), "--task", "segment", "--data", str(root))
    assert "selfie-seg.tflite on 2 val images: mIoU 1.000" in text.stdout
    wrong = run_ubiq("val", str(selfie_path), "--task", "detect", "--data", str(root))
    assert wrong.returncode != 0
    assert "--task detect:" in wrong.stderr and "is a 'segment' model" in wrong.stderr
    (tmp_path / "empty").mkdir()
    empty = run_ubiq("val", str(selfie_path), "--data", str(tmp_path / "empty"))
    assert empty.returncode != 0 and "is not a segmentation folder" in empty.stderr
