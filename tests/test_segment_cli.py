"""`ubiq segment` through the real command line: label PNGs, JSONL, overlay video, blur, the
DeepLab-format agreement bar, and bad input as one line that leaves outputs untouched."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
from segment_support import deeplab_format_onnx, save_onnx
from support import run_ubiq

from ubiq.models.runtime.label_png import VOC_PALETTE, read_label_png


def one_error_line(result):
    assert result.returncode not in (0, 134), result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def selfie_path(ubiq_home):
    from ubiq.models.zoo import pull

    return pull("selfie-seg", progress=False)


@pytest.fixture()
def photo_folder(tmp_path):
    from skimage import data

    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "astronaut.jpg"), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(folder / "coffee.png"), cv2.cvtColor(data.coffee(), cv2.COLOR_RGB2BGR))
    return folder


def test_selfie_seg_writes_label_pngs_jsonl_fractions_and_an_overlay_video(selfie_path, tmp_path):
    masks, jsonl, video = tmp_path / "masks", tmp_path / "seg.jsonl", tmp_path / "overlay.mp4"
    result = run_ubiq(
        "segment", "--model", str(selfie_path), "--max-frames", "8", "--masks", str(masks),
        "--jsonl", str(jsonl), "--save", str(video),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "selfie-seg (mask; litert" in result.stderr.splitlines()[-1]
    names = sorted(os.listdir(masks))
    assert names == [f"{index:06d}.png" for index in range(8)]
    first = read_label_png(masks / names[0])
    assert first.shape == (480, 640) and set(np.unique(first)) == {0, 1}
    # A palette PNG: OpenCV shows the VOC colours, so class 1 (person) is VOC's dark red.
    colours = cv2.imread(str(masks / names[0]), cv2.IMREAD_COLOR)
    assert tuple(colours[first == 1][0][::-1]) == tuple(VOC_PALETTE[1])
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(8))
    fractions = records[0]["classes"]
    assert set(fractions) == {"background", "person"}
    assert sum(fractions.values()) == pytest.approx(1.0, abs=1e-5)
    assert fractions["person"] == pytest.approx(float((first == 1).mean()), abs=1e-5)
    assert 0.3 < fractions["person"] < 0.7  # the astronaut fills about half the demo frame
    capture = cv2.VideoCapture(str(video))
    ok, overlay = capture.read()
    capture.release()
    assert ok and overlay.shape == (480, 640, 3)


def test_deeplab_format_png_agrees_with_the_model_at_image_resolution(tmp_path, photo_folder):
    """The bar: a label-map model's PNG agrees with its own output resized nearest-neighbour
    to the image on at least 99% of pixels."""
    import onnxruntime

    model = deeplab_format_onnx(tmp_path / "deeplab.onnx")
    masks = tmp_path / "masks"
    result = run_ubiq(
        "segment", "--model", str(model), "--source", str(photo_folder), "--masks", str(masks)
    )
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(masks)) == ["astronaut.png", "coffee.png"]
    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    for name in ("astronaut.jpg", "coffee.png"):
        image = cv2.imread(str(photo_folder / name))
        tensor = cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), (129, 129))[None]
        own = session.run(None, {"ImageTensor": tensor})[0][0].astype(np.uint8)
        size = (image.shape[1], image.shape[0])
        expected = cv2.resize(own, size, interpolation=cv2.INTER_NEAREST_EXACT)
        written = read_label_png(masks / (name.rsplit(".", 1)[0] + ".png"))
        assert written.shape == image.shape[:2]
        assert (written == expected).mean() >= 0.99


def test_blur_background_keeps_the_person_sharp(selfie_path, tmp_path, photo_folder):
    from ubiq.models.runtime.segment import Segmenter

    out = tmp_path / "out.mp4"
    source = str(photo_folder / "astronaut.jpg")
    result = run_ubiq(
        "segment", "--model", str(selfie_path), "--source", source, "--blur", "background",
        "--save", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    capture = cv2.VideoCapture(str(out))
    ok, blurred = capture.read()
    capture.release()
    assert ok
    original = cv2.imread(source)
    person = Segmenter.load(selfie_path, num_threads=1)(original).mask("person")
    inner = cv2.erode(person.astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool)
    outer = cv2.erode((~person).astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool)

    def sharpness(image, where):
        return float(
            np.abs(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.CV_32F))[where].mean()
        )

    # The video codec softens a little; the background loses most of its detail.
    assert sharpness(blurred, outer) < 0.5 * sharpness(original, outer)
    assert sharpness(blurred, inner) > 0.5 * sharpness(original, inner)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("outputs", "no decoder understands the outputs of flat.onnx (vector (4, 4, 3, 1))"),
        ("masks-under-a-file", "--masks: cannot create"),
        ("masks-is-a-file", "is a file, not a folder"),
        ("blur-class", "--blur 'cat' is not a class of selfie-seg.tflite (classes: "),
        ("blur-empty", "--blur must name background, faces or a class"),
        ("max-frames", "--max-frames must be >= 1, got 0"),
    ],
)
def test_bad_input_is_one_line_and_touches_no_output(selfie_path, tmp_path, case, expected):
    import onnx

    jsonl, video, masks = tmp_path / "keep.jsonl", tmp_path / "keep.mp4", tmp_path / "masks"
    masks.mkdir()
    (masks / "a.png").write_text("x")
    jsonl.write_text("{}\n")
    video.write_text("video")
    model, extra = str(selfie_path), []
    if case == "outputs":
        helper = onnx.helper
        graph = helper.make_graph(
            [helper.make_node("Transpose", ["images"], ["vector"], perm=[2, 3, 1, 0])],
            "flat",
            [helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, [1, 3, 4, 4])],
            [helper.make_tensor_value_info("vector", onnx.TensorProto.FLOAT, [4, 4, 3, 1])],
        )
        model = str(save_onnx(graph, tmp_path / "flat.onnx"))
    masks_flag = str(masks)
    if case == "masks-under-a-file":
        masks_flag = str(jsonl / "masks")
    elif case == "masks-is-a-file":
        masks_flag = str(video)
    elif case == "blur-class":
        extra = ["--blur", "cat"]
    elif case == "blur-empty":
        extra = ["--blur", " "]
    elif case == "max-frames":
        extra = ["--max-frames", "0"]
    result = run_ubiq(
        "segment", "--model", model, "--jsonl", str(jsonl), "--save", str(video),
        "--masks", masks_flag, *extra,
    )  # fmt: skip
    line = one_error_line(result)
    assert line.startswith("ubiq segment: error: ") and expected in line, line
    assert jsonl.read_text() == "{}\n" and video.read_text() == "video"
    assert os.listdir(masks) == ["a.png"]
