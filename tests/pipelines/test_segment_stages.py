"""The Segment and Blur stages and the mask outputs, in the Python API."""

from __future__ import annotations

import numpy as np
import pytest

from ubiq.errors import ConfigError
from ubiq.models.runtime.label_png import read_label_png
from ubiq.pipelines.pipeline import Pipeline
from ubiq.pipelines.segment import Blur, Segment, blur_pixels
from ubiq.pipelines.sinks.masks import MaskSink, mask_rle


@pytest.fixture(scope="module")
def selfie(ubiq_home):
    from ubiq.models.runtime.segment import Segmenter

    return Segmenter.load("selfie-seg", num_threads=1)


@pytest.fixture(scope="module")
def photo():
    from ubiq.models.runtime.bench import sample_image

    return sample_image()  # 640x480 astronaut


def test_segment_stage_sets_the_class_map_and_its_labels(selfie, photo):
    result = Pipeline([Segment(selfie)]).process(photo)
    assert result.class_map.shape == (480, 640) and result.class_labels == (
        "background",
        "person",
    )
    segmentation = result.data["segmentation"]
    assert (segmentation.class_map == selfie(photo).class_map).all()
    assert {"segment.inference", "segment.decode"} <= set(result.timings_ms)
    with pytest.raises(ConfigError, match="must be a segmentation model"):
        Segment(object())


def test_blur_changes_only_the_chosen_pixels(selfie, photo):
    person = selfie(photo).mask("person")
    for target, blurred_pixels in (("person", person), ("background", ~person)):
        result = Pipeline([Segment(selfie), Blur(target, labels=selfie.labels)]).process(photo)
        image = result.frame.image
        assert (image[~blurred_pixels] == photo[~blurred_pixels]).all()
        changed = (image != photo).any(axis=2)
        assert changed[blurred_pixels].mean() > 0.8
    with pytest.raises(ConfigError, match="target 'cat' is not a class of the model"):
        Blur("cat", labels=selfie.labels)
    with pytest.raises(ConfigError, match="needs a face detector"):
        Blur("faces")


def test_blur_faces_blurs_the_face_the_detector_finds(ubiq_home, photo):
    from ubiq.models.runtime.model import DetectionModel

    detector = DetectionModel.load("blazeface", num_threads=1)
    boxes = detector(photo).xyxy
    (x1, y1, x2, y2), *_ = boxes
    result = Pipeline([Blur("faces", detector=detector)]).process(photo)
    changed = (result.frame.image != photo).any(axis=2)
    centre = changed[int(y1 + (y2 - y1) * 0.3) : int(y2 - (y2 - y1) * 0.3), int(x1) : int(x2)]
    assert centre.mean() > 0.8
    near = np.zeros_like(changed)  # each box grown by its ellipse's reach (a fifth a side)
    for bx1, by1, bx2, by2 in boxes:
        grow_x, grow_y = (bx2 - bx1) * 0.2, (by2 - by1) * 0.3
        near[
            max(0, int(by1 - grow_y)) : int(by2 + grow_y) + 1,
            max(0, int(bx1 - grow_x)) : int(bx2 + grow_x) + 1,
        ] = True
    assert not changed[~near].any()


def test_blur_pixels_checks_its_inputs(photo):
    with pytest.raises(ValueError, match=r"where must have shape \(480, 640\)"):
        blur_pixels(photo, np.zeros((2, 2), bool))
    assert (blur_pixels(photo, np.zeros((480, 640), bool)) == photo).all()


def test_mask_sink_and_rle(tmp_path, selfie, photo):
    result = Pipeline([Segment(selfie)]).process(photo)
    sink = MaskSink(tmp_path / "masks")
    sink.write(result)
    sink.close()
    assert sink.written == [tmp_path / "masks" / "000000.png"]
    assert (read_label_png(sink.written[0]) == result.class_map).all()
    mask = np.zeros((3, 4), bool)
    mask[1:, 2] = True
    rle = mask_rle(mask)  # column-major: 6 off, 2 on, 4 off
    assert rle == {"size": [3, 4], "counts": [7, 2, 3]}
    assert mask_rle(np.ones((2, 2), bool))["counts"] == [0, 4]
