"""Backbones: published parameter counts and MACs, feature shapes, ONNX export, the CLI."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ubiq.cli import main  # noqa: E402
from ubiq.errors import ConfigError  # noqa: E402
from ubiq.models.toolchain.backbones import (  # noqa: E402
    BACKBONES,
    build_backbone,
    build_classifier,
    list_backbones,
)
from ubiq.models.toolchain.backbones.common import make_divisible  # noqa: E402
from ubiq.models.toolchain.backbones.profile import count_macs, count_parameters  # noqa: E402

# Published 1000-class ImageNet models at width 1.0: (parameters, MACs at 224) in millions.
PUBLISHED = {
    "mobilenet_v2": (3.50, 300),
    "mobilenet_v3_small": (2.54, 56),
    "mobilenet_v3_large": (5.48, 219),
    "shufflenet_v2": (2.28, 146),
    "ghostnet": (5.18, 141),
    "squeezenet1_1": (1.24, 350),
    "efficientnet_lite0": (4.65, 400),
}
TORCHVISION = {
    "mobilenet_v2": "mobilenet_v2",
    "mobilenet_v3_small": "mobilenet_v3_small",
    "mobilenet_v3_large": "mobilenet_v3_large",
    "shufflenet_v2": "shufflenet_v2_x1_0",
    "squeezenet1_1": "squeezenet1_1",
}
OUT_CHANNELS = {
    "mobilenet_v2": {0.5: (16, 48, 160), 1.0: (32, 96, 320)},
    "mobilenet_v3_small": {0.5: (16, 24, 48), 1.0: (24, 48, 96)},
    "mobilenet_v3_large": {0.5: (24, 56, 80), 1.0: (40, 112, 160)},
    "shufflenet_v2": {0.5: (48, 96, 192), 1.0: (116, 232, 464)},
    "ghostnet": {0.5: (20, 56, 80), 1.0: (40, 112, 160)},
    "squeezenet1_1": {0.5: (128, 256, 256), 1.0: (256, 512, 512)},
    "efficientnet_lite0": {0.5: (24, 56, 160), 1.0: (40, 112, 320)},
}


def calibrate_batchnorm(model: torch.nn.Module, images: torch.Tensor) -> torch.nn.Module:
    """Sets every batch norm's running statistics from one batch, then switches to eval.

    Freshly initialized networks in eval mode shrink the signal towards zero (running
    variance 1), which would make an output comparison meaningless; calibrated, the outputs
    are of order one.
    """
    for layer in model.modules():
        if isinstance(layer, torch.nn.BatchNorm2d):
            layer.reset_running_stats()
            layer.momentum = None
    model.train()
    with torch.no_grad():
        model(images)
    return model.eval()


def assert_close(actual: np.ndarray, expected: np.ndarray) -> None:
    """Max abs difference within 2e-4, scaled up for outputs larger than 1 (onnxruntime folds
    batch norms into the convolutions, which rounds differently; features reach about 30;
    ShuffleNetV2's channel shuffles measured 1.2e-4 of its largest output)."""
    tolerance = 2e-4 * max(1.0, float(np.abs(expected).max()))
    assert float(np.abs(actual - expected).max()) <= tolerance


def test_names():
    assert list_backbones() == list(BACKBONES)
    assert len(set(BACKBONES)) == 7 == len(PUBLISHED)


@pytest.mark.parametrize("name", BACKBONES)
def test_classifier_matches_published_parameters_and_macs(name):
    params_millions, macs_millions = PUBLISHED[name]
    model = build_classifier(name, 1000, 1.0)
    params = count_parameters(model)
    macs = count_macs(model, (1, 3, 224, 224))
    assert abs(params / 1e6 / params_millions - 1) < 0.02, params
    # SqueezeNet's padded stem and pools give 112/56/28/14 maps instead of the published
    # 111/55/27/13 (so that features are exactly H / stride): 387M instead of 349M MACs.
    tolerance = 0.12 if name == "squeezenet1_1" else 0.10
    assert abs(macs / 1e6 / macs_millions - 1) < tolerance, macs
    backbone = build_backbone(name)
    assert count_parameters(backbone) == count_parameters(model.backbone)
    assert count_parameters(backbone) < params


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_same_counts_as_torchvision(name):
    torchvision_models = pytest.importorskip("torchvision.models")
    reference = getattr(torchvision_models, TORCHVISION[name])(weights=None)
    model = build_classifier(name, 1000, 1.0)
    assert count_parameters(model) == count_parameters(reference)
    if name != "squeezenet1_1":  # padded on purpose, see above
        assert count_macs(model) == count_macs(reference)


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("width", [0.5, 1.0])
def test_feature_shapes(name, width):
    backbone = build_backbone(name, width).eval()
    assert backbone.out_channels == OUT_CHANNELS[name][width]
    assert backbone.strides == (8, 16, 32)
    with torch.no_grad():
        for batch, height, image_width in ((1, 64, 64), (2, 96, 128), (1, 65, 97)):
            features = backbone(torch.zeros(batch, 3, height, image_width))
            assert len(features) == 3
            for feature, channels, stride in zip(features, backbone.out_channels, backbone.strides):
                expected = (batch, channels, -(-height // stride), -(-image_width // stride))
                assert tuple(feature.shape) == expected


@pytest.mark.parametrize("name", BACKBONES)
def test_classifier_shapes_channels_and_weight_transfer(name):
    model = build_classifier(name, num_classes=10, width=0.5, in_channels=1).eval()
    with torch.no_grad():
        logits = model(torch.rand(2, 1, 64, 80))
    assert tuple(logits.shape) == (2, 10)
    model.train()
    model(torch.rand(2, 1, 64, 80)).sum().backward()  # trains: no in-place autograd faults
    assert all(parameter.grad is not None for parameter in model.parameters())
    backbone = build_backbone(name, 0.5, in_channels=1)
    backbone.load_state_dict(model.backbone.state_dict())  # strict: same names and shapes


def test_other_widths():
    shufflenet = build_backbone("shufflenet_v2", 0.75)
    assert shufflenet.out_channels == (88, 176, 352)
    assert build_backbone("shufflenet_v2", 2.0).out_channels == (244, 488, 976)
    assert build_backbone("mobilenet_v2", 1.4).out_channels == (48, 136, 448)
    assert make_divisible(0.35 * 32) == 16 and make_divisible(18, 4) == 20


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name", BACKBONES)
def test_onnx_export_matches_torch(name):
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    torch.manual_seed(0)  # the weights too: unseeded ones made the fp32 error a coin toss
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 64, 64, generator=generator)
    test_images = torch.rand(2, 3, 96, 64, generator=generator)  # not the export shape
    backbone = calibrate_batchnorm(build_backbone(name, 0.5), test_images)
    classifier = calibrate_batchnorm(build_classifier(name, 10, 1.0), images)
    buffer = io.BytesIO()
    # The dynamo exporter needs onnxscript; the TorchScript exporter works with torch 2.14.
    torch.onnx.export(
        backbone,
        (images[:1],),
        buffer,
        opset_version=17,
        dynamo=False,
        input_names=["images"],
        output_names=["p3", "p4", "p5"],
        dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"}},
    )
    session = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"images": test_images.numpy()})
    with torch.no_grad():
        expected = backbone(test_images)
    for output, reference in zip(outputs, expected):
        assert output.shape == tuple(reference.shape)
        assert float(reference.abs().max()) > 0.1  # a real signal, not a collapsed one
        assert_close(output, reference.numpy())

    buffer = io.BytesIO()
    torch.onnx.export(classifier, (images,), buffer, opset_version=17, dynamo=False)
    session = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: images.numpy()})
    with torch.no_grad():
        expected_logits = classifier(images).numpy()
    assert logits.shape == (2, 10)
    assert np.abs(expected_logits).max() > 1e-3
    assert_close(logits, expected_logits)


def test_count_macs_by_hand():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),  # 8*10*10 outputs * 3*9 = 21600
        torch.nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8),  # 8*5*5 * 1*9 = 1800
        torch.nn.ConvTranspose2d(8, 4, 2, stride=2),  # 8*5*5 inputs * 4*4 = 3200
        torch.nn.BatchNorm2d(4),
        torch.nn.Flatten(1),
        torch.nn.Linear(400, 5),  # 2000
    )
    model.train()
    assert count_macs(model, (1, 3, 10, 10)) == 21600 + 1800 + 3200 + 2000
    assert count_macs(model, (2, 3, 10, 10)) == 2 * (21600 + 1800 + 3200 + 2000)
    assert model.training  # restored
    assert count_parameters(model) == 224 + 80 + 132 + 8 + 2005
    with pytest.raises(ValueError, match="input_shape"):
        count_macs(model, (1, 3, 0, 10))


def test_bad_names_and_widths():
    with pytest.raises(ConfigError, match="resnet50") as error:
        build_backbone("resnet50")
    assert "mobilenet_v2" in str(error.value) and "efficientnet_lite0" in str(error.value)
    with pytest.raises(ConfigError, match="resnet50"):
        build_classifier("resnet50")
    for width in (0, -0.5, float("nan")):
        with pytest.raises(ConfigError, match="ghostnet") as error:
            build_backbone("ghostnet", width)
        assert "width" in str(error.value)
    with pytest.raises(ConfigError, match="width"):
        build_classifier("squeezenet1_1", 10, width=0.0)
    with pytest.raises(ConfigError, match="num_classes"):
        build_classifier("squeezenet1_1", 0)
    with pytest.raises(ConfigError, match="in_channels"):
        build_backbone("mobilenet_v2", in_channels=0)


def test_import_does_not_import_torch():
    code = (
        "import sys, ubiq.models.toolchain.backbones as b; "
        "print(len(b.BACKBONES), 'torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.split() == ["7", "False"]


def test_cli_backbones_json_and_table(capsys):
    assert main(["models", "backbones", "--json", "--imgsz", "64"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in rows] == list(BACKBONES)
    for row in rows:
        assert row["width"] == 1.0 and row["imgsz"] == 64
        assert abs(row["params"] / 1e6 / PUBLISHED[row["name"]][0] - 1) < 0.02
        assert 0 < row["backbone_macs"] <= row["macs"]
        assert tuple(row["out_channels"]) == OUT_CHANNELS[row["name"]][1.0]

    assert main(["models", "backbones", "--width", "0.5", "--imgsz", "64"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("NAME") and "MACS@64" in lines[0]
    assert len(lines) == 8
    assert lines[1].split()[:3] == ["mobilenet_v2", "0.5", "1.97"]


def test_cli_backbones_errors(capsys, monkeypatch):
    assert main(["models", "backbones", "--width", "0"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "--width" in error
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    assert main(["models", "backbones"]) == 5
    error = capsys.readouterr().err
    assert "torch" in error and "pip install 'ubiq[train]'" in error
