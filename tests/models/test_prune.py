"""Pruning: DepGraph channel pruning of ubiq models to a MACs target, unstructured sparsity,
bad input, and a checkpoint round trip through fine-tuning and ONNX export."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")

from ubiq.errors import ConfigError  # noqa: E402
from ubiq.models.toolchain.compress.prune import (  # noqa: E402
    DENSE_RUNTIME_NOTE,
    count_macs_params,
    prune_structured,
    prune_unstructured,
)
from ubiq.models.toolchain.compress.prune_checkpoint import prune_checkpoint  # noqa: E402
from ubiq.models.toolchain.nets import ModelConfig, build_model  # noqa: E402

LABELS = ("cat", "cup", "rocket")
SHAPE = (1, 3, 64, 64)


def _model(task: str, width: float = 0.5) -> torch.nn.Module:
    torch.manual_seed(0)
    config = ModelConfig(
        task=task, backbone="mobilenet_v2", labels=LABELS, width=width, imgsz=SHAPE[2:]
    )
    return build_model(config).eval()


@pytest.fixture(scope="module")
def detector():
    return _model("detect")


@pytest.fixture(scope="module")
def pruned_detector(detector):
    torch.set_num_threads(1)
    return prune_structured(detector, SHAPE, target_macs_ratio=0.5)


def test_detector_pruned_to_half_the_macs(detector, pruned_detector):
    result = pruned_detector
    assert (result.macs_before, result.params_before) == count_macs_params(detector, SHAPE)
    assert (result.macs_after, result.params_after) == count_macs_params(result.model, SHAPE)
    assert 0.4 <= result.macs_ratio <= 0.6
    assert result.params_after < result.params_before
    assert result.layers and all(
        change.out_after % 8 == 0 for change in result.layers if change.out_after != 7
    )
    assert "MACs" in result.summary() and result.to_dict()["macs_ratio"] == result.macs_ratio
    # The input model is untouched.
    assert count_macs_params(detector, SHAPE) == (result.macs_before, result.params_before)


def test_pruned_detector_keeps_outputs_stem_and_predictors(detector, pruned_detector):
    model = pruned_detector.model.eval()
    images = torch.rand(2, *SHAPE[1:])
    with torch.no_grad():
        logits, distances, points, strides = model(images)
        original = detector(images)
    assert logits.shape == original[0].shape == (2, 84, len(LABELS))
    assert distances.shape == original[1].shape == (2, 84, 4)
    assert torch.equal(points, original[2]) and torch.equal(strides, original[3])
    assert torch.isfinite(logits).all() and (distances >= 0).all()
    for predictor in model.head.predictors:
        assert predictor.out_channels == len(LABELS) + 4
        assert predictor.in_channels < 64
    stem = model.backbone.stem[0][0]
    assert (stem.in_channels, stem.out_channels) == (3, 16)
    assert model.neck.channels == model.head.predictors[0].in_channels
    with torch.no_grad():
        features = model.backbone(images)
    assert model.backbone.out_channels == tuple(f.shape[1] for f in features)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_pruned_detector_exports_to_onnx_like_torch(pruned_detector, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = pruned_detector.model.eval()
    path = tmp_path / "pruned.onnx"
    images = torch.rand(1, *SHAPE[1:], generator=torch.Generator().manual_seed(1))
    model.export_mode = True
    try:
        with torch.no_grad():
            torch.onnx.export(
                model, (images,), str(path), input_names=["images"], opset_version=17, dynamo=False
            )
            expected = model.predict(images).numpy()
    finally:
        model.export_mode = False
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {"images": images.numpy()})
    assert actual.shape == (1, 4 + len(LABELS), 84)
    np.testing.assert_allclose(actual, expected, atol=1e-4)


def test_classifier_keeps_its_logits():
    model = _model("classify")
    result = prune_structured(model, SHAPE, target_macs_ratio=0.5, iterative_steps=2)
    assert 0.4 <= result.macs_ratio <= 0.6
    assert result.model.head.linear.out_features == len(LABELS)
    assert result.model.head.linear.in_features < model.head.linear.in_features
    with torch.no_grad():
        assert result.model(torch.rand(3, *SHAPE[1:])).shape == (3, len(LABELS))


def test_segmenter_keeps_its_classes():
    model = _model("segment")
    result = prune_structured(model, SHAPE, target_macs_ratio=0.6, iterative_steps=1)
    assert 0.45 <= result.macs_ratio <= 0.6
    with torch.no_grad():
        assert result.model(torch.rand(1, *SHAPE[1:])).shape == (1, len(LABELS), 64, 64)


def test_ignored_layers_keep_their_channels():
    model = _model("classify")
    result = prune_structured(
        model, SHAPE, target_macs_ratio=0.7, ignored_layers=["head.expand.0"], iterative_steps=1
    )
    expand = result.model.head.expand[0]
    assert expand.out_channels == 256 and result.model.head.linear.in_features == 256
    # Its input (the backbone's last stage) may shrink; its output may not.
    assert expand.in_channels < model.head.expand[0].in_channels


def test_unstructured_pruning_reaches_the_sparsity_and_says_it_is_not_faster():
    model = _model("detect", width=0.25)
    report = prune_unstructured(model, 0.5)
    weights = [
        module.weight
        for module in model.modules()
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear))
    ]
    zeros = sum(int((weight == 0).sum()) for weight in weights)
    total = sum(weight.numel() for weight in weights)
    assert report.total_weights == total and report.zero_weights == zeros
    assert report.sparsity == pytest.approx(0.5, abs=0.01)
    assert not any(hasattr(module, "weight_mask") for module in model.modules())
    assert "no faster" in report.note and report.note == DENSE_RUNTIME_NOTE
    assert "no faster" in report.summary()


@pytest.mark.parametrize("ratio", [0.0, 1.0, 1.5, -0.2])
def test_bad_ratio_is_a_config_error_naming_the_value(detector, ratio):
    with pytest.raises(ConfigError, match=f"target_macs_ratio .*{ratio}"):
        prune_structured(detector, SHAPE, target_macs_ratio=ratio)
    with pytest.raises(ConfigError, match=f"amount .*{ratio}"):
        prune_unstructured(_model("classify", width=0.25), ratio)
    with pytest.raises(ConfigError, match=f"target_macs_ratio .*{ratio}"):
        prune_checkpoint("missing.pt", "out", target_macs_ratio=ratio)


def test_bad_options_are_config_errors(detector):
    with pytest.raises(ConfigError, match="importance"):
        prune_structured(detector, SHAPE, importance="vibes")
    with pytest.raises(ConfigError, match="ignored layer"):
        prune_structured(detector, SHAPE, ignored_layers=["head.nothing"])
    with pytest.raises(ConfigError, match="out of reach"):
        prune_structured(detector, SHAPE, target_macs_ratio=0.01)


def test_prune_checkpoint_round_trip(tmp_path):
    pytest.importorskip("skimage")
    pytest.importorskip("onnxruntime")
    from ubiq.models.datasets.synth import generate_detection_set
    from ubiq.models.toolchain.export.onnx_export import export_onnx, load_checkpoint
    from ubiq.models.toolchain.train.trainer import TrainOptions, train

    data = generate_detection_set(
        tmp_path / "data", train_images=16, val_images=4, imgsz=64, seed=0, progress=False
    )
    trained = train(
        TrainOptions(
            task="detect",
            data=str(data),
            out=str(tmp_path / "run"),
            width=0.25,
            imgsz=64,
            epochs=1,
            batch=8,
            threads=1,
            progress=False,
        )
    )
    result = prune_checkpoint(
        trained.best,
        tmp_path / "pruned",
        target_macs_ratio=0.6,
        finetune_epochs=1,
        threads=1,
        progress=False,
        iterative_steps=1,
        distill=True,
    )
    assert result.checkpoint.is_file() and result.report.is_file()
    assert json.loads(result.report.read_text())["macs_after"] == result.macs_after
    assert result.macs_after <= 0.6 * result.macs_before
    assert result.params_after < result.params_before
    assert set(result.metrics) >= {"map50", "map50_95"}
    assert result.metrics_before == trained.metrics
    model, config, state = load_checkpoint(result.checkpoint)
    assert "module" in state and config.labels == load_checkpoint(trained.best)[1].labels
    assert count_macs_params(model, (1, 3, 64, 64)) == (result.macs_after, result.params_after)
    exported = export_onnx(result.checkpoint, tmp_path / "pruned.onnx")
    assert exported.path.is_file() and exported.max_abs_diff <= 1e-4
    raw = prune_checkpoint(
        trained.best, tmp_path / "raw", target_macs_ratio=0.6, finetune_epochs=0, iterative_steps=1
    )
    assert raw.metrics == {} and raw.macs_after == result.macs_after
    raw_model = load_checkpoint(raw.checkpoint)[0]
    assert count_macs_params(raw_model, (1, 3, 64, 64))[0] == raw.macs_after


def test_prune_checkpoint_keeps_its_old_import_path():
    from ubiq.models.toolchain.compress import prune
    from ubiq.models.toolchain.compress import prune_checkpoint as module

    assert prune.prune_checkpoint is module.prune_checkpoint
    assert prune.PruneCheckpointResult is module.PruneCheckpointResult
