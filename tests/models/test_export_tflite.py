"""TFLite export (litert-torch + ai-edge-quantizer): float32 within 1e-4 of torch, and a
full-integer int8 model (int8 input and outputs, no float op) within cosine 0.99.

The converters are an optional install (see ``ubiq.models.toolchain.export.tflite``); without
them the conversion tests skip and only the missing-package error is checked.
"""

import sys

import numpy as np
import pytest

from ubiq.errors import BackendUnavailable
from ubiq.models.toolchain.export import tflite as tflite_export

SIZE = 96


def test_missing_converter_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "litert_torch", None)  # import raises ImportError
    with pytest.raises(BackendUnavailable) as caught:
        tflite_export.export_tflite(object(), np.zeros((1, 3, SIZE, SIZE)), tmp_path)
    assert caught.value.name == "tflite-export"
    assert "litert-torch" in caught.value.missing
    assert tflite_export.LITERT_TORCH_SPEC in caught.value.hint


def _tiny_detector():
    """Depthwise convs, BatchNorm, ReLU6, hardswish, nearest upsample + concat, two outputs."""
    torch = pytest.importorskip("torch")
    from torch import nn

    def separable(cin, cout, stride):
        return nn.Sequential(
            nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
            nn.BatchNorm2d(cin),
            nn.ReLU6(),
            nn.Conv2d(cin, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.Hardswish(),
        )

    class TinyDetector(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6()
            )
            self.stage1 = separable(16, 32, 2)
            self.stage2 = separable(32, 48, 2)
            self.stage3 = separable(48, 64, 2)
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
            self.fuse = separable(64 + 48, 48, 1)
            self.small = nn.Conv2d(48, 7, 1)
            self.large = nn.Conv2d(64, 7, 1)

        def forward(self, x):
            p3 = self.stage2(self.stage1(self.stem(x)))
            p4 = self.stage3(p3)
            fused = self.fuse(torch.cat([self.up(p4), p3], 1))
            return self.small(fused), self.large(p4)

    torch.manual_seed(0)
    model = TinyDetector()
    # BatchNorm statistics from data, so activations have a trained net's scale.
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None
    model.train()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(4):
            model(torch.rand(8, 3, SIZE, SIZE, generator=generator))
    return model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch = pytest.importorskip("torch")
    pytest.importorskip("litert_torch", reason="litert-torch (TFLite export) is not installed")
    pytest.importorskip("ai_edge_quantizer", reason="ai-edge-quantizer is not installed")
    from ubiq.manifest import DecoderSpec, InputSpec, ModelManifest, Preprocess

    model = _tiny_detector()
    rng = np.random.default_rng(2)
    calibration = [rng.random((1, 3, SIZE, SIZE), dtype=np.float32) for _ in range(32)]
    checks = [rng.random((1, 3, SIZE, SIZE), dtype=np.float32) for _ in range(2)]
    manifest = ModelManifest(
        name="tiny",
        task="detect",
        format="onnx",
        input=InputSpec(name="images", shape=(1, 3, SIZE, SIZE)),
        preprocess=Preprocess(width=SIZE, height=SIZE),
        decoder=DecoderSpec("yolo"),
    )
    out = tmp_path_factory.mktemp("tflite")
    result = tflite_export.export_tflite(
        model,
        torch.rand(1, 3, SIZE, SIZE),
        out,
        name="tiny",
        int8=True,
        calibration=calibration,
        check_inputs=checks,
        manifest=manifest,
    )
    return model, result, checks


@pytest.mark.slow
def test_float_model_is_nhwc_and_matches_torch(exported):
    torch = pytest.importorskip("torch")
    model, result, checks = exported
    info = result.float_model
    assert info.path.name == "tiny_float32.tflite" and info.path.is_file()
    assert [(t.shape, t.dtype) for t in info.inputs] == [((1, SIZE, SIZE, 3), "float32")]
    assert [t.shape for t in info.outputs] == [(1, 12, 12, 7), (1, 6, 6, 7)]
    # The channels-last wrapper cancels every layout transpose.
    assert "TRANSPOSE" not in info.ops
    assert {"DEPTHWISE_CONV_2D", "HARD_SWISH", "RESIZE_NEAREST_NEIGHBOR"} <= set(info.ops)
    assert result.max_abs_diff < 1e-4
    # Independent check through the runtime's own LiteRT backend.
    from ubiq.models.runtime.litert_backend import LiteRTBackend

    backend = LiteRTBackend(info.path)
    with torch.no_grad():
        expected = [o.numpy().transpose(0, 2, 3, 1) for o in model(torch.from_numpy(checks[0]))]
    outputs = backend.run({backend.inputs[0].name: checks[0].transpose(0, 2, 3, 1).copy()})
    for want, got in zip(expected, outputs.values()):
        assert np.abs(want - got).max() < 1e-4


@pytest.mark.slow
def test_int8_model_is_full_integer_and_close_to_torch(exported):
    _, result, _ = exported
    info = result.int8_model
    assert info is not None and info.path.name == "tiny_int8.tflite"
    (tensor,) = info.inputs
    assert (tensor.shape, tensor.dtype) == ((1, SIZE, SIZE, 3), "int8")
    scale, zero_point = tensor.quantization
    # Calibration covered [0, 1): about 1/255 per step, 0.0 at -128.
    assert scale == pytest.approx(1 / 255, rel=0.02) and zero_point == -128
    assert [t.dtype for t in info.outputs] == ["int8", "int8"]
    assert all(t.quantization is not None for t in info.outputs)
    assert info.float_ops == ()
    assert "DEQUANTIZE" not in info.ops
    assert len(result.int8_cosine) == 2
    assert min(result.int8_cosine) > 0.99
    assert info.size_bytes < result.float_model.size_bytes
    assert "int8" in result.seconds


@pytest.mark.slow
def test_manifest_describes_the_int8_file(exported):
    from ubiq.manifest import ModelManifest

    _, result, _ = exported
    assert result.manifest_path == result.int8_model.path.with_suffix(".json")
    manifest = ModelManifest.load(result.manifest_path)
    assert manifest.format == "tflite"
    assert manifest.input.layout == "NHWC"
    assert manifest.input.dtype == "int8"
    assert manifest.input.shape == (1, SIZE, SIZE, 3)
    assert manifest.preprocess.quantization == result.int8_model.inputs[0].quantization


@pytest.mark.slow
def test_int8_without_calibration_is_refused(exported, tmp_path):
    torch = pytest.importorskip("torch")
    model, _, _ = exported
    with pytest.raises(ValueError, match="calibration"):
        tflite_export.export_tflite(model, torch.rand(1, 3, SIZE, SIZE), tmp_path, int8=True)


@pytest.mark.slow
def test_calibration_of_the_wrong_shape_is_named(exported, tmp_path):
    _, result, _ = exported
    with pytest.raises(ValueError, match=r"calibration\[0\] must have the input shape"):
        tflite_export.quantize_tflite_int8(
            result.float_model.path, tmp_path / "bad.tflite", [np.zeros((1, 3, SIZE, SIZE))]
        )


@pytest.mark.slow
def test_scores_sharing_a_tensor_with_pixel_boxes_are_reported(tmp_path):
    """One int8 scale for boxes in pixels and sigmoid scores leaves the scores constant."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("litert_torch", reason="litert-torch (TFLite export) is not installed")
    pytest.importorskip("ai_edge_quantizer", reason="ai-edge-quantizer is not installed")
    from torch import nn

    class PixelBoxesAndScores(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 8, 3, 4, 1), nn.ReLU())
            self.boxes = nn.Conv2d(8, 4, 1)
            self.scores = nn.Conv2d(8, 2, 1)

        def forward(self, x):
            features = self.features(x)
            boxes = self.boxes(features).sigmoid().flatten(2) * 320.0  # pixels
            scores = self.scores(features).sigmoid().flatten(2)
            return torch.cat([boxes, scores], 1)  # (1, 4 + 2, anchors)

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    calibration = [rng.random((1, 3, 32, 32), dtype=np.float32) for _ in range(8)]
    result = tflite_export.export_tflite(
        PixelBoxesAndScores().eval(),
        torch.rand(1, 3, 32, 32),
        tmp_path,
        int8=True,
        calibration=calibration,
    )
    assert result.float_model.outputs[0].shape == (1, 6, 64)
    assert result.int8_model.float_ops == ()
    flagged = [note for note in result.notes if "read as constants" in note]
    assert len(flagged) == 1 and "channels [4, 5]" in flagged[0]
