"""Segmentation decoders on real model files: a DeepLab-format label-map model built here,
class logits in both layouts, person masks of one and two channels, and Ultralytics -seg
outputs; shape recognition, and errors that name the shapes they saw."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from segment_support import VOC, deeplab_format_onnx
from segment_support import save_onnx as _save

from ubiq.errors import ModelError
from ubiq.manifest import DecoderSpec, InputSpec, ModelManifest, Preprocess, manifest_path_for
from ubiq.models.runtime.decoders.segment import decode_yolo_seg, guess_segment_decoder
from ubiq.models.runtime.preprocess import ImageTransform
from ubiq.models.runtime.segment import Segmenter, frame_affine

onnx = pytest.importorskip("onnx")
helper, numpy_helper, TensorProto = onnx.helper, onnx.numpy_helper, onnx.TensorProto


def _astronaut() -> np.ndarray:
    from skimage import data

    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)[:384]  # 512x384, not square


@pytest.mark.parametrize("stride", [1, 2])
def test_label_map_model_reproduces_its_own_output_resized_to_the_image(tmp_path, stride):
    import onnxruntime

    path = deeplab_format_onnx(tmp_path / "deeplab.onnx", stride=stride)
    segmenter = Segmenter.load(path, num_threads=1)  # no manifest: recognised from its output
    assert segmenter.decoder == "label_map" and segmenter.manifest.preprocess.resize == "stretch"
    image = _astronaut()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    tensor = cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), (129, 129))[None]
    own = session.run(None, {"ImageTensor": tensor})[0][0].astype(np.uint8)
    assert len(np.unique(own)) >= 3  # several classes, not a trivial map
    expected = cv2.resize(
        own, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST_EXACT
    )
    class_map = segmenter(image).class_map
    assert class_map.shape == image.shape[:2]
    agreement = float((class_map == expected).mean())
    assert agreement >= 0.99, agreement


def test_label_map_with_a_manifest_gets_voc_labels_and_a_letterbox_undone(tmp_path):
    path = deeplab_format_onnx(tmp_path / "voc.onnx", size=65)
    ModelManifest(
        name="voc",
        task="segment",
        format="onnx",
        input=InputSpec("ImageTensor", (1, 65, 65, 3), "uint8", "NHWC"),
        preprocess=Preprocess(65, 65, "letterbox", 0, (127.5,) * 3, (127.5,) * 3),
        decoder=DecoderSpec("label_map"),
        labels=VOC,
    ).save(manifest_path_for(path))
    segmenter = Segmenter.load(path, num_threads=1)
    assert segmenter.labels == VOC and segmenter.background == 0
    segmentation = segmenter(_astronaut())
    assert segmentation.class_map.shape == (384, 512)
    grid, transform = segmenter.class_map_at_input(_astronaut())
    assert grid.shape == (65, 65) and transform.pad_y > 0
    assert set(segmentation.fractions()) <= set(VOC)
    assert sum(segmentation.fractions().values()) == pytest.approx(1.0, abs=1e-4)


def test_frame_affine_maps_frame_pixel_centres_into_the_letterboxed_grid():
    # 40x20 frame letterboxed into 16x16: scale 0.4, rows 4..12; an 8x8 grid (stride 2).
    transform = ImageTransform(0.4, 0.4, 0.0, 4.0, 40, 20)
    matrix = frame_affine(transform, Preprocess(16, 16), 8, 8)
    corners = matrix @ np.array([[0.0, 39.0], [0.0, 19.0], [1.0, 1.0]])
    # First pixel centre (0.5, 0.5) -> input (0.2, 4.2) -> grid (0.1, 2.1) -> index 0.1 - 0.5.
    assert corners[:, 0] == pytest.approx([-0.4, 1.6])
    assert corners[:, 1] == pytest.approx([7.4, 5.4])


def _score_model(path: Path, output_shape, layout: str, labels, decoder="mask") -> Path:
    """A model whose score maps are channel sums of the image, shaped as ``output_shape``."""
    channels = output_shape[1] if layout == "NCHW" else output_shape[3]
    height = output_shape[2] if layout == "NCHW" else output_shape[1]
    weights = np.zeros((channels, 3, 1, 1), np.float32)
    for channel in range(channels):
        weights[channel, channel % 3] = 1.0 if channel < 3 else -1.0
    nodes = [
        helper.make_node("Resize", ["images", "", "", "size"], ["small"], mode="nearest"),
        helper.make_node("Conv", ["small", "w"], ["scores"]),
    ]
    last = "scores"
    if channels == 1:
        nodes.append(helper.make_node("Sigmoid", ["scores"], ["probability"]))
        last = "probability"
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", [last], ["out"], perm=[0, 2, 3, 1]))
    else:
        nodes.append(helper.make_node("Identity", [last], ["out"]))
    graph = helper.make_graph(
        nodes,
        "scores",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, list(output_shape))],
        [
            numpy_helper.from_array(weights, "w"),
            numpy_helper.from_array(np.array([1, 3, height, height], np.int64), "size"),
        ],
    )
    _save(graph, path)
    ModelManifest(
        name=path.stem,
        task="segment",
        format="onnx",
        input=InputSpec("images", (1, 3, 32, 32)),
        preprocess=Preprocess(32, 32, "stretch", 0, (0.0,) * 3, (255.0,) * 3, "bgr"),
        decoder=DecoderSpec(decoder, {"background": 0}),
        labels=labels,
    ).save(manifest_path_for(path))
    return path


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_class_logits_in_either_layout_give_the_same_class_map(tmp_path, layout):
    shape = (1, 3, 8, 8) if layout == "NCHW" else (1, 8, 8, 3)
    path = _score_model(tmp_path / f"{layout}.onnx", shape, layout, ("blue", "green", "red"))
    segmenter = Segmenter.load(path, num_threads=1, interpolation="linear")
    image = np.zeros((30, 60, 3), np.uint8)
    image[:, :20] = (255, 0, 0)
    image[:, 20:40] = (0, 255, 0)
    image[:, 40:] = (0, 0, 255)
    class_map = segmenter(image).class_map
    assert class_map.shape == (30, 60)
    assert (class_map[:, :18] == 0).all() and (class_map[:, 23:37] == 1).all()
    assert (class_map[:, 42:] == 2).all()


@pytest.mark.parametrize("channels", [1, 2])
def test_person_masks_of_one_or_two_channels(tmp_path, channels):
    shape = (1, 8, 8, channels)
    path = _score_model(tmp_path / f"person{channels}.onnx", shape, "NHWC", ("person",))
    segmenter = Segmenter.load(path, num_threads=1)
    assert segmenter.labels == ("background", "person") and segmenter.single_map == (channels == 1)
    image = np.zeros((16, 32, 3), np.uint8)
    image[:, 16:] = (0, 255, 0)  # green: channel 1 wins (two channels) or p = 0.5 (one: blue)
    image[:, :16] = (255, 0, 0)  # blue: p = sigmoid(1) (one channel) or channel 0 wins (two)
    person = segmenter(image).mask("person")
    if channels == 1:
        assert person[:, :14].all() and not person[:, 18:].any()
    else:
        assert person[:, 18:].all() and not person[:, :14].any()


def test_outputs_no_decoder_understands_are_named(tmp_path):
    path = tmp_path / "flat.onnx"
    graph = helper.make_graph(
        # not a class map, and not one vector per image (that would be an embedder)
        [helper.make_node("Transpose", ["images"], ["vector"], perm=[2, 3, 1, 0])],
        "flat",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("vector", TensorProto.FLOAT, [4, 4, 3, 1])],
    )
    _save(graph, path)
    with pytest.raises(ModelError, match=r"no decoder understands the outputs of flat.onnx "
                       r"\(vector \(4, 4, 3, 1\)\)"):  # fmt: skip
        Segmenter.load(path)
    wrong = _score_model(tmp_path / "wrong.onnx", (1, 3, 8, 8), "NCHW", ("a", "b", "c"), "yolo_seg")
    with pytest.raises(ModelError, match=r"decoder 'yolo_seg' does not fit its outputs \(out "
                       r"\(1, 3, 8, 8\)\); expected a label map"):  # fmt: skip
        Segmenter.load(wrong)


def test_shapes_are_recognised():
    assert guess_segment_decoder([(1, 513, 513)], ["int64"]) == "label_map"
    assert guess_segment_decoder([(1, 257, 257, 21)]) == "mask"
    assert guess_segment_decoder([(1, 256, 256, 1)]) == "mask"
    assert guess_segment_decoder([(1, 116, 2100), (1, 32, 80, 80)]) == "yolo_seg"
    assert guess_segment_decoder([(1, 32, 80, 80), (1, 8400, 38)]) == "yolo_seg"
    assert guess_segment_decoder([(1, 84, 8400)]) == "label_map"  # 3-D: a map, not boxes
    assert guess_segment_decoder([(1, 48)]) is None
    assert guess_segment_decoder([(1, 36, 8400), (1, 32, 80, 80)]) is None  # no classes


def _instance_outputs() -> list[np.ndarray]:
    """Two instances of a 2-class -seg model on a 64x64 input with 16x16 prototypes: class 1
    at input box (8, 8)-(40, 40) whose mask is its left half; class 0 at (40, 40)-(60, 60)."""
    prototypes = np.full((1, 32, 16, 16), -10.0, np.float32)
    prototypes[0, 0, :, :6] = 10.0  # left 6 cells (24 input pixels): mask 0 on
    prototypes[0, 1] = 10.0  # everywhere: mask 1 on (cropped by its box)
    prediction = np.zeros((1, 4 + 2 + 32, 64), np.float32)  # 64 anchors, 61 empty
    prediction[0, :6, 0] = (24, 24, 32, 32, 0.1, 0.9)  # cx, cy, w, h, class scores
    prediction[0, 6 + 0, 0] = 1.0
    prediction[0, :6, 1] = (50, 50, 20, 20, 0.8, 0.2)
    prediction[0, 6 + 1, 1] = 1.0
    prediction[0, :6, 2] = (10, 10, 4, 4, 0.1, 0.1)  # below the threshold
    return [prediction, prototypes]


def test_instance_decoder_keeps_boxes_classes_and_masks():
    raw = decode_yolo_seg(
        _instance_outputs(), input_width=64, input_height=64, confidence_threshold=0.25,
        iou_threshold=0.5, max_detections=10, params={"num_classes": 2},
    )  # fmt: skip
    assert raw.class_id.tolist() == [1, 0] and raw.confidence == pytest.approx([0.9, 0.8])
    assert raw.xyxy[0] == pytest.approx([8, 8, 40, 40])
    assert raw.probabilities.shape == (2, 16, 16)
    assert (raw.probabilities[0, :, :6] > 0.99).all() and (raw.probabilities[0, :, 6:] < 0.01).all()


def test_instance_model_masks_are_cropped_to_boxes_in_frame_pixels(tmp_path):
    path = tmp_path / "inst.onnx"
    prediction, prototypes = _instance_outputs()
    graph = helper.make_graph(
        [
            helper.make_node(
                "Constant", [], ["output0"], value=numpy_helper.from_array(prediction)
            ),
            helper.make_node(
                "Constant", [], ["output1"], value=numpy_helper.from_array(prototypes)
            ),
        ],
        "inst",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
        [
            helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(prediction.shape)),
            helper.make_tensor_value_info("output1", TensorProto.FLOAT, list(prototypes.shape)),
        ],
    )
    _save(graph, path)
    segmenter = Segmenter.load(path, num_threads=1)  # no manifest: recognised as yolo_seg
    assert segmenter.decoder == "yolo_seg" and segmenter.labels == ("background",)
    # A 128x64 frame letterboxed into 64x64: scale 0.5, 16 rows of padding above.
    segmentation = segmenter(np.zeros((64, 128, 3), np.uint8))
    instances = segmentation.instances
    assert len(instances) == 2 and instances.mask.shape == (2, 64, 128)
    assert instances.xyxy[0] == pytest.approx([16, -16 + 16, 80, 48], abs=0.01)
    first = instances.mask[0]
    # Box x 16..80, y 0..48; the mask is on over the left 24 input pixels: frame x < 48.
    assert first[:48, 16:48].all() and not first[:, 48:].any() and not first[48:].any()
    assert not first[:, :16].any()
    second = instances.mask[1]
    assert second[48:64, 80:120].all() and second.sum() == 16 * 40
    assert segmentation.class_map[10, 20] == 2 and segmentation.class_map[60, 100] == 1
