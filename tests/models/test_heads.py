"""Heads and assembled models: shapes on small inputs, ONNX export within 1e-4 of torch."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from ubiq.errors import ConfigError  # noqa: E402
from ubiq.models.toolchain.heads.detect import distances_to_xyxy, make_points  # noqa: E402
from ubiq.models.toolchain.nets import ModelConfig, build_model  # noqa: E402

LABELS = ("cat", "cup", "rocket")


def _calibrated(model, shape):
    """Sets BatchNorm statistics from one random batch: a fresh network in eval mode shrinks
    its activations towards zero layer by layer, which would make a 1e-4 comparison empty."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # cumulative average: one batch sets the statistics
    model.train()
    with torch.no_grad():
        model(torch.rand(shape))
    return model.eval()


def _model(task, backbone="mobilenet_v2", **kwargs):
    torch.manual_seed(0)
    kwargs.setdefault("imgsz", (64, 96))
    config = ModelConfig(task=task, backbone=backbone, labels=LABELS, width=0.5, **kwargs)
    return _calibrated(build_model(config), (4, 3, 64, 96)), config


def _export_and_compare(model, example, tmp_path, name):
    """Exports, runs with onnxruntime and compares with torch within 1e-4."""
    path = tmp_path / f"{name}.onnx"
    with torch.no_grad():
        torch.onnx.export(model, (example,), str(path), opset_version=17, dynamo=False)
        expected = model(example)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {session.get_inputs()[0].name: example.numpy()})
    expected = expected.numpy()
    assert actual.shape == expected.shape
    assert np.abs(expected).max() > 0.05  # a comparison of real values, not of ~0
    assert np.abs(actual - expected).max() < 1e-4


def test_points_are_cell_centres_in_input_pixels():
    points, strides = make_points([(2, 3), (1, 2)], (8, 16))
    assert points.shape == (8, 2)
    assert points[:3].tolist() == [[4, 4], [12, 4], [20, 4]]
    assert points[3].tolist() == [4, 12]
    assert points[6:].tolist() == [[8, 8], [24, 8]]
    assert strides.tolist() == [8] * 6 + [16] * 2
    boxes = distances_to_xyxy(points[:1], torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    assert boxes.tolist() == [[3.0, 2.0, 7.0, 8.0]]


@pytest.mark.parametrize("backbone", ["mobilenet_v2", "shufflenet_v2", "ghostnet"])
def test_detector_shapes_and_export_form(backbone):
    model, _ = _model("detect", backbone)
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        logits, distances, points, strides = model(x)
        predicted = model.predict(x)
    anchors = 8 * 12 + 4 * 6 + 2 * 3
    assert logits.shape == (2, anchors, 3)
    assert distances.shape == (2, anchors, 4)
    assert (distances >= 0).all()
    assert points.shape == (anchors, 2) and strides.shape == (anchors,)
    assert predicted.shape == (2, 4 + 3, anchors)
    # cx, cy, w, h follow from points and distances, as fractions of the input width and
    # height; scores are sigmoids of the logits.
    boxes = distances_to_xyxy(points, distances[0])
    assert torch.allclose(predicted[0, 0], (boxes[:, 0] + boxes[:, 2]) / 2 / 96, atol=1e-6)
    assert torch.allclose(predicted[0, 3], (boxes[:, 3] - boxes[:, 1]) / 64, atol=1e-6)
    assert torch.allclose(predicted[0, 4:], logits[0].sigmoid().T, atol=1e-6)


def test_classifier_and_segmenter_shapes():
    classifier, _ = _model("classify")
    segmenter, _ = _model("segment")
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        assert classifier(x).shape == (2, 3)
        assert segmenter(x).shape == (2, 3, 64, 96)


def test_keyword_spotter_takes_log_mel_spectrograms():
    config = ModelConfig(
        task="kws",
        backbone="dscnn",
        labels=("yes", "no", "_unknown"),
        imgsz=(40, 98),
        in_channels=1,
    )
    model = build_model(config).eval()
    with torch.no_grad():
        assert model(torch.rand(3, 1, 40, 98)).shape == (3, 3)


@pytest.mark.parametrize("task", ["detect", "classify", "segment"])
def test_heads_export_to_onnx_within_1e_4(task, tmp_path):
    model, _ = _model(task)
    if task == "detect":
        model.export_mode = True
    _export_and_compare(model, torch.rand(1, 3, 64, 96), tmp_path, task)


def test_keyword_spotter_exports_to_onnx_within_1e_4(tmp_path):
    config = ModelConfig(
        task="kws", backbone="dscnn", labels=("yes", "no"), imgsz=(40, 98), in_channels=1
    )
    torch.manual_seed(0)
    model = _calibrated(build_model(config), (4, 1, 40, 98))
    _export_and_compare(model, torch.rand(1, 1, 40, 98), tmp_path, "kws")


def test_image_size_not_divisible_by_stride_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"300x300 is not divisible by the stride 32.*288|320"):
        ModelConfig(task="detect", backbone="mobilenet_v2", labels=LABELS, imgsz=(300, 300))


def test_unknown_backbone_is_a_config_error():
    with pytest.raises(ConfigError, match="mobilenet_v9"):
        build_model(ModelConfig(task="detect", backbone="mobilenet_v9", labels=LABELS))


def test_config_round_trips_and_rejects_unknown_keys():
    _, config = _model("detect")
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="colour"):
        ModelConfig.from_dict({**config.to_dict(), "colour": 1})
