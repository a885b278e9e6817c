"""Classifier, Segmenter and KeywordModel in the torch-free runtime, the shared evaluation,
and library calls in a child process."""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from support import one_op_onnx

from ubiq.errors import (
    BackendUnavailable,
    ConfigError,
    DatasetError,
    ModelError,
    UbiqError,
    ZooError,
)
from ubiq.manifest import DecoderSpec, InputSpec, ModelManifest, Preprocess, manifest_path_for
from ubiq.models.runtime.segment import Segmentation, Segmenter
from ubiq.models.runtime.tasks import Classifier, ClassProbabilities, KeywordModel, softmax

BLUE, GREEN, RED = (255, 0, 0), (0, 255, 0), (0, 0, 255)  # BGR


def _with_manifest(path: Path, task: str, preprocess: Preprocess, decoder, labels) -> Path:
    shape = (1, 3, preprocess.height, preprocess.width)
    ModelManifest(
        name=path.stem,
        task=task,
        format="onnx",
        input=InputSpec("images", shape),
        preprocess=preprocess,
        decoder=decoder,
        labels=labels,
    ).save(manifest_path_for(path))
    return path


def colour_classifier(path: Path, labels=("blue", "green", "red")) -> Path:
    """A classifier whose logits are the mean B, G, R of the image in [0, 1]."""
    onnx = pytest.importorskip("onnx")
    helper, float_type = onnx.helper, onnx.TensorProto.FLOAT
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["scores"]),
        ],
        "colours",
        [helper.make_tensor_value_info("images", float_type, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("scores", float_type, [1, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    preprocess = Preprocess(8, 8, "stretch", 0, (0.0,) * 3, (255.0,) * 3, "bgr")
    return _with_manifest(path, "classify", preprocess, DecoderSpec("softmax"), labels)


def colour_segmenter(path: Path) -> Path:
    """A segmenter whose scores are the image's R, G, B planes: red is the background."""
    one_op_onnx(path, "Identity", [1, 3, 16, 16], [1, 3, 16, 16])
    preprocess = Preprocess(16, 16, "letterbox", 114, (0.0,) * 3, (255.0,) * 3, "rgb")
    decoder = DecoderSpec("mask", {"background": 0})
    return _with_manifest(path, "segment", preprocess, decoder, ("background", "green", "blue"))


def _halves(left, right, height=20, width=40) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2] = left
    image[:, width // 2 :] = right
    return image


# --- classification ---------------------------------------------------------------------------


def test_classifier_gives_softmax_probabilities_and_top_k(tmp_path):
    classifier = Classifier.load(colour_classifier(tmp_path / "colours.onnx"), num_threads=1)
    image = np.full((30, 50, 3), BLUE, np.uint8)
    result = classifier(image)
    assert result.label == "blue" and result.class_id == 0
    assert result.confidence == pytest.approx(math.e / (math.e + 2), abs=1e-6)
    assert result.probabilities.sum() == pytest.approx(1.0, abs=1e-6)
    (first, p_first), (second, p_second) = result.top(2)
    assert (
        first == "blue"
        and second in ("green", "red")
        and p_second == pytest.approx(1 / (math.e + 2))
    )
    mixed = classifier(_halves(GREEN, RED))  # G and R both 0.5: a tie, broken by class order
    assert [label for label, _ in mixed.top(3)] == ["green", "red", "blue"]
    with pytest.raises(ConfigError, match="k must be >= 1, got 0"):
        result.top(0)


def test_class_probabilities_without_labels_name_ids():
    result = ClassProbabilities(softmax(np.array([0.0, 2.0, 1.0])))
    assert result.label == "1" and [name for name, _ in result.top(3)] == ["1", "2", "0"]
    assert softmax(np.array([[1000.0, 1000.0]])).tolist() == [[0.5, 0.5]]


def test_classifier_refuses_another_task_and_a_label_count_mismatch(tmp_path):
    with pytest.raises(ModelError, match="is a 'segment' model, not a 'classify' one"):
        Classifier.load(colour_segmenter(tmp_path / "seg.onnx"))
    wrong = colour_classifier(tmp_path / "two.onnx", labels=("blue", "green"))
    with pytest.raises(ModelError, match="outputs 3 scores .* but its manifest has 2 labels"):
        Classifier.load(wrong)


# --- segmentation -----------------------------------------------------------------------------


@pytest.mark.parametrize("interpolation", ["nearest", "linear"])
def test_segmenter_maps_the_letterboxed_output_back_to_frame_pixels(tmp_path, interpolation):
    segmenter = Segmenter.load(
        colour_segmenter(tmp_path / "seg.onnx"), num_threads=1, interpolation=interpolation
    )
    result = segmenter(_halves(RED, BLUE))  # 40x20: letterboxed into rows 4-11 of 16x16
    assert result.class_map.shape == (20, 40) and result.class_map.dtype == np.int32
    assert (result.class_map[:, :20] == 0).all() and (result.class_map[:, 20:] == 2).all()
    ids, masks = result.masks()
    assert ids.tolist() == [2] and masks.shape == (1, 20, 40) and masks[0].sum() == 400
    assert (result.mask("blue") == masks[0]).all() and (result.foreground() == masks[0]).all()
    inside, transform = segmenter.class_map_at_input(_halves(RED, BLUE))
    assert inside.shape == (16, 16) and transform.pad_y == 4
    assert (inside[4:12, 8:] == 2).all() and (inside[:4] == 0).all()  # the bars: a tie, 0


def test_segmenter_options_and_results_are_validated(tmp_path):
    with pytest.raises(ConfigError, match="interpolation must be one of nearest, linear"):
        Segmenter.load(colour_segmenter(tmp_path / "seg.onnx"), interpolation="cubic")
    with pytest.raises(ModelError, match="not a 'segment' one"):
        Segmenter.load(colour_classifier(tmp_path / "c.onnx"))
    with pytest.raises(ValueError, match=r"class_map must be an \(H, W\) integer array"):
        Segmentation(np.zeros((2, 2), np.float32))
    with pytest.raises(ConfigError, match="'cat' is not one of the labels"):
        Segmentation(np.zeros((2, 2), np.int32), ("background", "dog")).mask("cat")


def test_selfie_segmenter_finds_the_astronaut(ubiq_home):
    from ubiq.models.runtime.bench import sample_image

    segmenter = Segmenter.load("selfie-seg", num_threads=1)
    assert segmenter.single_map and segmenter.labels == ("background", "person")
    result = segmenter(sample_image())  # 640x480: the astronaut in front of a flag and a shuttle
    person = result.mask("person")
    assert person.shape == (480, 640) and 0.35 < person.mean() < 0.75
    assert person[120, 280] and person[400, 200]  # face, suit
    assert not person[20, 20] and not person[200, 510]  # flag, shuttle


# --- keywords ---------------------------------------------------------------------------------


def _speak(text: str, rate: int = 16000) -> np.ndarray:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    from ubiq.models.datasets.speech import synthesize_word

    return synthesize_word(text, "en-us", 160, 50, sample_rate=rate)


def test_keyword_model_recognises_commands_at_any_rate_and_as_int16():
    model = KeywordModel.load("ubiq-commands-demo", num_threads=1)
    assert model.sample_rate == 16000 and "volume up" in model.labels
    result = model(_speak("volume up", 22050), 22050)
    assert result.label == "volume up" and result.confidence > 0.6
    clip = _speak("what time is it")
    as_int16 = model((clip * 32767).astype(np.int16), 16000)
    assert as_int16.label == "what time is it"
    with pytest.raises(ValueError, match=r"samples must have shape \(N,\)"):
        model(np.zeros((2, 100), np.float32), 16000)
    with pytest.raises(ValueError, match="sample_rate must be positive, got 0"):
        model(clip, 0)


def test_keyword_model_refuses_an_image_model(tmp_path):
    with pytest.raises(ModelError, match="not a 'kws' one"):
        KeywordModel.load(colour_classifier(tmp_path / "c.onnx"))


# --- evaluation -------------------------------------------------------------------------------


def _image_folder(root: Path) -> Path:
    for name, colour in (("blue", BLUE), ("green", GREEN), ("red", RED)):
        folder = root / "val" / name
        folder.mkdir(parents=True)
        cv2.imwrite(str(folder / "a.png"), np.full((12, 12, 3), colour, np.uint8))
        cv2.imwrite(str(folder / "b.png"), _halves(colour, (40, 40, 40), 12, 12))
    cv2.imwrite(str(root / "val" / "red" / "c.png"), np.full((12, 12, 3), GREEN, np.uint8))
    return root


def test_evaluate_classifier_scores_top1_per_class(tmp_path):
    from ubiq.models.runtime.evaluate import evaluate_classifier, evaluate_model

    model = colour_classifier(tmp_path / "colours.onnx")
    root = _image_folder(tmp_path / "set")
    result = evaluate_classifier(model, root, num_threads=1)
    assert result["images"] == 7 and result["top1"] == pytest.approx(6 / 7)
    assert result["per_class_top1"] == {"blue": 1.0, "green": 1.0, "red": pytest.approx(2 / 3)}
    assert evaluate_model(str(model), root)["task"] == "classify"
    shutil.move(root / "val" / "red", root / "val" / "rouge")
    with pytest.raises(DatasetError, match="classes .* differ from"):
        evaluate_classifier(model, root)


def test_evaluate_segmenter_scores_miou_in_the_letterboxed_input(tmp_path):
    from ubiq.models.runtime.evaluate import evaluate_model, evaluate_segmenter

    model = colour_segmenter(tmp_path / "seg.onnx")
    root = tmp_path / "set"
    for kind in ("images", "labels", "masks"):
        (root / kind / "val").mkdir(parents=True)
    cv2.imwrite(str(root / "images" / "val" / "x.png"), _halves(RED, BLUE))
    (root / "labels" / "val" / "x.txt").write_text("")
    mask = np.zeros((20, 40), np.uint8)
    mask[:, 20:] = 2
    mask[:5, 30:] = 1  # "green" truth the model calls blue: 2x4 cells of the 8x16 letterbox
    cv2.imwrite(str(root / "masks" / "val" / "x.png"), mask)
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: images/val\nval: images/val\nnames: [green, blue]\n")
    result = evaluate_segmenter(model, data, num_threads=1)
    assert result["images"] == 1 and result["per_class_iou"]["background"] == 1.0
    assert result["per_class_iou"]["green"] == 0.0
    assert result["per_class_iou"]["blue"] == pytest.approx(56 / 64)
    assert result["miou"] == pytest.approx((1.0 + 0.0 + 56 / 64) / 3)
    assert evaluate_model(model, data)["task"] == "segment"


def test_evaluate_model_refuses_mismatched_data_naming_the_parameter(tmp_path):
    from ubiq.models.runtime.evaluate import evaluate_detector, evaluate_model

    detector = (
        Path(__file__).resolve().parents[2] / "ubiq" / "data" / "models" / "ubiq-det-mnv2.onnx"
    )
    with pytest.raises(ConfigError, match="a detect model needs a data.yaml"):
        evaluate_model(detector, _image_folder(tmp_path / "set"))
    with pytest.raises(ConfigError, match=r"^data .*missing does not exist$"):
        evaluate_model(detector, tmp_path / "missing")
    with pytest.raises(ConfigError, match=r"confidence_threshold must be in \[0, 1\], got 1.5"):
        evaluate_detector(detector, tmp_path, confidence_threshold=1.5)
    with pytest.raises(ConfigError, match="max_detections must be >= 1, got 0"):
        evaluate_detector(detector, tmp_path, max_detections=0)


# --- child processes --------------------------------------------------------------------------


def test_bench_in_child_returns_the_result_and_raises_the_child_s_error(tmp_path):
    from ubiq.models.runtime.isolated import bench_in_child, call_in_child

    model = one_op_onnx(tmp_path / "relu.onnx", "Relu", [1, 3, 16, 16], [1, 3, 16, 16])
    result = bench_in_child(str(model), runs=3, warmup=1, threads=1)
    assert result["input_shape"] == [1, 3, 16, 16] and result["runs"] == 3
    assert 0 < result["latency_p50_ms"] <= result["latency_p90_ms"] and result["peak_rss_mb"] > 10
    with pytest.raises(ModelError, match="model file not found") as caught:
        bench_in_child(str(tmp_path / "missing.onnx"), runs=1)
    assert caught.value.exit_code == ModelError.exit_code
    with pytest.raises(ConfigError, match="runs must be >= 1"):
        bench_in_child(str(model), runs=0)
    with pytest.raises(ConfigError, match="entry must be one of bench, pull"):
        call_in_child("detect", {})
    with pytest.raises(UbiqError, match="unexpected keyword argument 'colour'"):
        call_in_child("bench", {"name_or_path": str(model), "colour": 1})  # dies: traceback


def test_bench_in_child_keeps_a_backend_error_s_class_and_fields(tmp_path):
    import onnxruntime

    if "TensorrtExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("TensorRT is built into this onnxruntime")
    from ubiq.models.runtime.isolated import bench_in_child

    model = one_op_onnx(tmp_path / "relu.onnx", "Relu", [1, 3, 16, 16], [1, 3, 16, 16])
    with pytest.raises(BackendUnavailable, match="TensorrtExecutionProvider") as caught:
        bench_in_child(str(model), runs=1, device="tensorrt")
    assert caught.value.exit_code == BackendUnavailable.exit_code
    assert caught.value.name == "tensorrt" and "TensorrtExecutionProvider" in caught.value.missing


def test_pull_in_child_raises_a_zoo_error_and_leaves_this_process_alone(ubiq_home):
    from ubiq.models.runtime.isolated import pull_in_child
    from ubiq.models.zoo import cached_path

    before = set(sys.modules)
    with pytest.raises(ZooError, match="unknown model 'blazefce'.*blazeface"):
        pull_in_child("blazefce")
    assert pull_in_child("blazeface") == cached_path("blazeface")
    assert not {"torch", "ultralytics"} & (set(sys.modules) - before)


def test_evaluate_keywords_scores_a_wav_folder_as_listen_hears_it(tmp_path):
    from ubiq.models.runtime.audio_features import write_wav
    from ubiq.models.runtime.evaluate import evaluate_keywords

    model = KeywordModel.load("ubiq-commands-demo")
    for label in model.labels:
        folder = tmp_path / "val" / label
        folder.mkdir(parents=True)
        if label == "_silence_":
            clip = np.zeros(16000, np.float32)
        else:
            clip = _speak("the weather is nice today" if label == "_unknown_" else label, 22050)
        write_wav(folder / "clip.wav", clip, 16000 if label == "_silence_" else 22050)
    result = evaluate_keywords("ubiq-commands-demo", tmp_path, num_threads=1)
    assert result["clips"] == len(model.labels) == 18
    assert set(result["per_class_top1"]) == set(model.labels)
    assert result["top1"] >= 0.8, result["per_class_top1"]
    (tmp_path / "val" / "volume up").rename(tmp_path / "val" / "louder")
    with pytest.raises(DatasetError, match="differ from"):
        evaluate_keywords("ubiq-commands-demo", tmp_path)
