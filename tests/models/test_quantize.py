"""Tests for ubiq.models.toolchain.compress.quantize and .sensitivity: int8 built, measured and
gated.

The real detector (``ubiq-det-mnv2.onnx``) is quantized with images of a tiny synthetic
set through its deployment preprocessing. The gates use two graphs built here whose int8
speed is known on x86 and ARM alike: a single Sigmoid over a 256x256 image (int8 adds a
QuantizeLinear and a DequantizeLinear pass around a cheap op: about half fp32 speed) and
a stack of 128-channel 1x1 convolutions (int8 GEMM: about twice fp32 speed).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

import ubiq  # noqa: E402
from ubiq.errors import ConfigError, DatasetError, ModelError  # noqa: E402
from ubiq.manifest import (  # noqa: E402
    MANIFEST_METADATA_KEY,
    DecoderSpec,
    InputSpec,
    ModelManifest,
    Preprocess,
    manifest_path_for,
)
from ubiq.models.toolchain.compress import quantize as q  # noqa: E402
from ubiq.models.toolchain.compress.sensitivity import MAX_SQNR_DB, image_tensor  # noqa: E402
from ubiq.paths import file_sha256  # noqa: E402

DETECTOR = Path(ubiq.__file__).parent / "data" / "models" / "ubiq-det-mnv2.onnx"


def _manifest(path, size: int) -> None:
    ModelManifest(
        name=path.stem,
        task="detect",
        format="onnx",
        input=InputSpec("images", (1, 3, size, size)),
        preprocess=Preprocess(size, size),
        decoder=DecoderSpec("yolo", {"num_classes": 6, "normalized": True}),
    ).save(manifest_path_for(path))


def _save(path, nodes, initializers, size: int, output_shape) -> object:
    helper = onnx.helper
    graph = helper.make_graph(
        nodes,
        path.stem,
        [helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output0", onnx.TensorProto.FLOAT, output_shape)],
        [onnx.numpy_helper.from_array(value, name) for name, value in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    _manifest(path, size)
    return path


def _sigmoid_model(path, size: int = 256):
    """One elementwise op: int8 only adds quantize and dequantize passes around it."""
    node = onnx.helper.make_node("Sigmoid", ["images"], ["output0"], name="sigmoid")
    return _save(path, [node], {}, size, [1, 3, size, size])


def _pointwise_model(path, size: int = 96, channels: int = 128, blocks: int = 4):
    """A stride-2 stem and 1x1 convolutions: GEMM-bound, so int8 is clearly faster."""
    rng = np.random.default_rng(0)
    helper, nodes, weights = onnx.helper, [], {}
    previous, inputs = "images", 3
    for index in range(blocks + 1):
        kernel, stride = (3, 2) if index == 0 else (1, 1)
        name = f"conv{index}"
        weights[f"{name}.w"] = (
            rng.standard_normal((channels, inputs, kernel, kernel)) * np.sqrt(2 / inputs)
        ).astype(np.float32) / kernel
        weights[f"{name}.b"] = np.zeros(channels, np.float32)
        nodes.append(
            helper.make_node(
                "Conv",
                [previous, f"{name}.w", f"{name}.b"],
                [f"{name}.out"],
                name=name,
                kernel_shape=[kernel, kernel],
                strides=[stride, stride],
                pads=[kernel // 2] * 4,
            )
        )
        nodes.append(
            helper.make_node("Relu", [f"{name}.out"], [f"{name}.act"], name=f"relu{index}")
        )
        previous, inputs = f"{name}.act", channels
    weights["head.w"] = (rng.standard_normal((10, channels, 1, 1)) * 0.1).astype(np.float32)
    weights["shape"] = np.array([1, 10, -1], np.int64)
    nodes.append(helper.make_node("Conv", [previous, "head.w"], ["head"], name="head"))
    nodes.append(helper.make_node("Reshape", ["head", "shape"], ["output0"], name="flatten"))
    return _save(path, nodes, weights, size, [1, 10, (size // 2) ** 2])


def _op_types(path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from ubiq.models.datasets.synth import generate_detection_set

    folder = tmp_path_factory.mktemp("synth")
    data_yaml = generate_detection_set(
        folder, train_images=8, val_images=4, imgsz=256, seed=1, progress=False
    )
    return q.calibration_images(data_yaml, count=8)


@pytest.fixture(scope="module")
def qdq_detector(tmp_path_factory, images):
    out = tmp_path_factory.mktemp("qdq") / "det.int8.onnx"
    return q.quantize_static(DETECTOR, out, images, q.QuantCandidate())


def test_candidate_label_and_validation():
    assert q.QuantCandidate().label() == "QDQ u8/s8 per-channel minmax"
    assert q.QuantCandidate("QOperator", "int8", per_channel=False).label() == (
        "QOperator s8/s8 per-tensor minmax"
    )
    with pytest.raises(ConfigError, match="activation_type must be one of uint8, int8"):
        q.QuantCandidate(activation_type="int4")


def test_qdq_detector_has_quantize_nodes_its_manifest_and_runs(qdq_detector, images):
    from ubiq.models.runtime.model import DetectionModel

    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= _op_types(qdq_detector)
    entry = ModelManifest.load(manifest_path_for(qdq_detector)).compression[-1]
    assert entry == {
        "step": "quantize",
        "method": "static",
        "quant_format": "QDQ",
        "activation_type": "uint8",
        "weight_type": "int8",
        "per_channel": True,
        "calibrator": "minmax",
        "excluded_nodes": [],
    }
    metadata = {p.key: p.value for p in onnx.load(str(qdq_detector)).metadata_props}
    embedded = json.loads(metadata[MANIFEST_METADATA_KEY])
    assert embedded["compression"][-1]["method"] == "static"
    assert embedded["labels"] == list(ModelManifest.load(DETECTOR.with_suffix(".json")).labels)
    assert ModelManifest.load(manifest_path_for(qdq_detector)).sha256 == file_sha256(qdq_detector)
    model = DetectionModel.load(qdq_detector)
    detections = model(cv2.imread(str(images[0])))
    assert model.manifest.compression[-1]["quant_format"] == "QDQ"
    assert detections.xyxy.shape[1] == 4


def test_qoperator_uses_qlinear_conv_and_keeps_excluded_nodes_float(tmp_path, images):
    first_conv = next(n.name for n in onnx.load(str(DETECTOR)).graph.node if n.op_type == "Conv")
    out = q.quantize_static(
        DETECTOR,
        tmp_path / "qop.onnx",
        images[:4],
        q.QuantCandidate("QOperator"),
        exclude_nodes=[first_conv],
    )
    nodes = onnx.load(str(out)).graph.node
    assert "QLinearConv" in {node.op_type for node in nodes}
    assert [node.op_type for node in nodes if node.name == first_conv] == ["Conv"]
    entry = ModelManifest.load(manifest_path_for(out)).compression[-1]
    assert entry["quant_format"] == "QOperator"
    assert entry["excluded_nodes"] == [first_conv]
    assert q.fidelity(DETECTOR, out, images[:2])["cosine"] > 0.9


def test_int8_detector_stays_close_to_fp32(qdq_detector, images):
    result = q.fidelity(DETECTOR, qdq_detector, images[:4])
    assert result["output"] == "output0" and result["images"] == 4
    assert result["cosine"] > 0.9
    assert 15.0 < result["sqnr_db"] < MAX_SQNR_DB


def test_node_sensitivity_ranks_named_nodes_worst_first(qdq_detector, images):
    errors = q.node_sensitivity(DETECTOR, qdq_detector, images[:2], top=6)
    float_nodes = {n.name: n.op_type for n in onnx.load(str(DETECTOR)).graph.node}
    assert len(errors) == 6
    assert all(float_nodes[e.name] == e.op_type for e in errors)
    assert [e.own_sqnr_db for e in errors] == sorted(e.own_sqnr_db for e in errors)
    assert all(e.own_sqnr_db >= e.sqnr_db for e in errors)  # own noise is part of the total
    assert min(e.sqnr_db for e in errors) < 40.0  # int8 noise is measurable
    assert errors[0].to_dict()["tensor"]


def test_node_sensitivity_of_identical_models_is_max(tmp_path, images):
    model = _pointwise_model(tmp_path / "conv.onnx")
    errors = q.node_sensitivity(model, model, images[:1], top=3)
    assert [e.sqnr_db for e in errors] == [MAX_SQNR_DB] * 3


def test_calibration_images_spread_over_a_folder_and_resize_any_size(tmp_path):
    folder = tmp_path / "calib"
    (folder / "sub").mkdir(parents=True)
    for index in range(9):
        target = folder / ("sub" if index % 2 else "") / f"{index:02d}.png"
        cv2.imwrite(str(target), np.full((60, 100, 3), index * 20, np.uint8))
    (folder / "notes.txt").write_text("not an image")
    every = q.calibration_images(folder, count=64)
    assert sorted(p.name for p in every) == [f"{index:02d}.png" for index in range(9)]
    picked = q.calibration_images(folder, count=3)
    assert picked == [every[0], every[4], every[8]]
    assert len(q.calibration_images(f"{folder}/*.png", count=64)) == 5
    manifest = ModelManifest.load(DETECTOR.with_suffix(".json"))
    assert image_tensor(picked[0], manifest).shape == (1, 3, 256, 256)


def test_calibration_images_errors_name_the_problem(tmp_path, images):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=f"calib {empty} holds no images"):
        q.calibration_images(empty)
    with pytest.raises(ConfigError, match="matches no images"):
        q.calibration_images(tmp_path / "*.jpg")
    with pytest.raises(ConfigError, match="not found"):
        q.calibration_images(tmp_path / "missing")
    broken = tmp_path / "broken" / "image.jpg"
    broken.parent.mkdir()
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(ConfigError, match="is not a readable image"):
        q.calibration_images(broken.parent)
    data_yaml = images[0].parents[2] / "data.yaml"
    with pytest.raises(DatasetError, match="no 'test' split"):
        q.calibration_images(data_yaml, split="test")
    with pytest.raises(ConfigError, match="count must be >= 1"):
        q.calibration_images(data_yaml, count=0)


def test_fp16_keeps_float32_io_and_matches(tmp_path, images):
    out = q.convert_fp16(DETECTOR, tmp_path / "det.fp16.onnx")
    model = onnx.load(str(out))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    assert ModelManifest.load(manifest_path_for(out)).compression[-1]["method"] == "fp16"
    assert q.fidelity(DETECTOR, out, images[:2])["cosine"] > 0.999


def test_dynamic_quantizes_matmul_weights(tmp_path, images):
    weight = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    node = onnx.helper.make_node("MatMul", ["images", "weight"], ["output0"], name="matmul")
    model = _save(tmp_path / "mm.onnx", [node], {"weight": weight}, 64, [1, 3, 64, 64])
    out = q.quantize_dynamic(model, tmp_path / "mm.dynamic.onnx")
    assert _op_types(out) & {"DynamicQuantizeMatMul", "MatMulInteger"}
    assert ModelManifest.load(manifest_path_for(out)).compression[-1]["method"] == "dynamic"
    assert q.fidelity(model, out, images[:1])["cosine"] > 0.99


def test_measure_latency_times_every_model(tmp_path):
    models = [_sigmoid_model(tmp_path / "a.onnx", 64), _sigmoid_model(tmp_path / "b.onnx", 32)]
    stats = q.measure_latency(models, threads=1, warmup=2, runs=5)
    assert set(stats) == set(models)
    assert all(0 < s.p50_ms <= s.p90_ms for s in stats.values())
    with pytest.raises(ConfigError, match="threads=0"):
        q.measure_latency(models, threads=0)


def test_measure_runtimes_times_each_model_on_each_runtime(tmp_path):
    pytest.importorskip("openvino", reason="openvino is not installed (ubiq[openvino])")
    from ubiq.models.toolchain.compress.latency import measure_runtimes

    models = [_sigmoid_model(tmp_path / "a.onnx", 64), _sigmoid_model(tmp_path / "b.onnx", 32)]
    stats = measure_runtimes(models, ("onnxruntime", "openvino"), threads=1, warmup=2, runs=5)
    assert set(stats) == {(r, m) for r in ("onnxruntime", "openvino") for m in models}
    assert all(0 < s.p50_ms <= s.p90_ms for s in stats.values())
    # with `failed`, a model a runtime cannot load is left out and named; without, it raises
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    failed: dict = {}
    stats = measure_runtimes(
        [*models, broken], ("onnxruntime", "openvino"), threads=1, warmup=1, runs=3, failed=failed
    )
    assert set(stats) == {(r, m) for r in ("onnxruntime", "openvino") for m in models}
    assert set(failed) == {("onnxruntime", broken), ("openvino", broken)}
    assert all(str(broken) in reason for reason in failed.values())
    with pytest.raises(ModelError, match="broken.onnx"):
        measure_runtimes([broken], ("onnxruntime",), threads=1, warmup=1, runs=3)
    with pytest.raises(ConfigError, match="runtimes must be among onnxruntime, openvino"):
        measure_runtimes(models, ("tensorrt",))


def test_auto_quantize_keeps_fp32_when_int8_is_slower(tmp_path, images):
    model = _sigmoid_model(tmp_path / "sigmoid.onnx")
    report = q.auto_quantize(model, tmp_path / "out", images[:2], threads=1, progress=False)
    assert report.chosen is None
    assert report.result == model
    assert "slower" in report.gate_reason
    assert not (tmp_path / "out" / "model.int8.onnx").exists()
    assert len(list((tmp_path / "out" / "candidates").glob("*.onnx"))) == 3
    assert [a.label for a in report.attempts] == [c.label() for c in q.DEFAULT_CANDIDATES]
    assert all(a.speedup < 1.0 and not a.accepted for a in report.attempts)
    saved = json.loads((tmp_path / "out" / "quantize_report.json").read_text())
    assert saved == json.loads(json.dumps(report.to_dict()))
    assert saved["machine"]["threads"] == 1 and saved["machine"]["cpu"]


def test_auto_quantize_keeps_fp32_when_every_attempt_drops_too_much(tmp_path, images):
    model = _pointwise_model(tmp_path / "conv.onnx")
    evaluated = []

    def evaluate(path):
        evaluated.append(path)
        return 50.0 if path == model else 45.0

    report = q.auto_quantize(
        model,
        tmp_path / "out",
        images[:2],
        evaluate=evaluate,
        candidates=[q.QuantCandidate()],
        threads=1,
        progress=False,
    )
    assert report.chosen is None and report.result == model
    assert "drop" in report.gate_reason and "max_drop=1" in report.gate_reason
    assert report.fp32_metric == 50.0
    stages = [a.stage for a in report.attempts]
    assert stages[:2] == ["format", "speed"]  # the stem conv (3 input channels) in float
    assert report.attempts[1].excluded_nodes == ("conv0",)
    assert stages.count("calibrator") == 2 and "exclude" in stages
    assert {a.candidate.calibrator for a in report.attempts} == {"minmax", "entropy", "percentile"}
    excluded = [a.excluded_nodes for a in report.attempts if a.stage == "exclude"]
    assert len(excluded[0]) >= 2 and all(name in _node_names(model) for name in excluded[0])
    ranked = report.to_dict()["sensitive_nodes"]
    assert ranked and {"name", "sqnr_db", "own_sqnr_db"} <= set(ranked[0])
    assert [n["own_sqnr_db"] for n in ranked] == sorted(n["own_sqnr_db"] for n in ranked)
    assert report.attempts[0].speedup > 1.0 and report.attempts[0].drop == 5.0
    assert not any(a.accepted for a in report.attempts)
    assert evaluated[0] == model and len(evaluated) >= 2


def _node_names(path) -> set[str]:
    return {node.name for node in onnx.load(str(path)).graph.node}


def test_auto_quantize_writes_the_faster_int8_model(tmp_path, images):
    model = _pointwise_model(tmp_path / "conv.onnx")
    report = q.auto_quantize(
        model,
        tmp_path / "out",
        images[:2],
        evaluate=lambda path: 50.0,
        candidates=[q.QuantCandidate()],
        threads=1,
        progress=False,
    )
    assert report.gate_reason is None
    assert report.chosen.startswith("QDQ u8/s8 per-channel minmax")
    assert report.result == tmp_path / "out" / "model.int8.onnx"
    manifest = ModelManifest.load(manifest_path_for(report.result))
    assert manifest.compression[-1]["method"] == "static"
    summary = manifest.report["quantize"]
    assert summary["speedup"] > 1.0 and summary["drop"] == 0.0
    assert "QuantizeLinear" in _op_types(report.result)


def test_output_tail_is_everything_after_the_last_convolutions(tmp_path):
    """The decode tail (kept in float when a shared int8 scale would zero the scores)."""
    onnx = pytest.importorskip("onnx")
    from ubiq.models.toolchain.compress.sensitivity import output_tail

    helper, tensor = onnx.helper, onnx.TensorProto.FLOAT
    weight = helper.make_tensor("w", tensor, [4, 3, 1, 1], [0.1] * 12)
    scale = helper.make_tensor("s", tensor, [], [8.0])
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Sigmoid", ["c"], ["scores"], name="sigmoid"),
        helper.make_node("Mul", ["c", "s"], ["boxes"], name="to_pixels"),
        helper.make_node("Concat", ["boxes", "scores"], ["y"], name="join", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tail",
        [helper.make_tensor_value_info("x", tensor, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", tensor, [1, 8, 4, 4])],
        [weight, scale],
    )
    path = tmp_path / "tail.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    assert sorted(output_tail(path)) == ["join", "sigmoid", "to_pixels"]


def test_node_sensitivity_ranks_the_node_that_causes_an_error_above_those_that_inherit_it(
    tmp_path, images
):
    """conv2's output gets a 16 times coarser int8 scale (as a bad calibration would give):
    every node after it inherits that noise, so by total SQNR they rank as bad as conv2;
    by own SQNR conv2 stands out."""
    path = _pointwise_model(tmp_path / "chain.onnx", blocks=4)
    int8 = q.quantize_static(path, tmp_path / "chain.int8.onnx", images[:4], q.QuantCandidate())
    model = onnx.load(str(int8))
    quantizers = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    (culprit_q,) = [n for n in quantizers if n.input[0] in ("conv2.out", "conv2.act")]
    for init in model.graph.initializer:
        if init.name == culprit_q.input[1]:
            scale = onnx.numpy_helper.to_array(init) * np.float32(16)
            init.CopyFrom(onnx.numpy_helper.from_array(scale, init.name))
    onnx.save(model, str(int8))
    own = q.node_sensitivity(path, int8, images[:2], top=20)
    total = q.node_sensitivity(path, int8, images[:2], top=20, rank_by="total")
    assert own[0].tensor == culprit_q.input[0], [(e.name, e.own_sqnr_db) for e in own]
    culprit = own[0]
    after = [e for e in own if e.name in ("conv3", "relu3", "conv4", "relu4")]
    assert after, [e.name for e in own]
    # the nodes after it are as noisy in total, but add far less noise of their own
    assert min(e.sqnr_db for e in after) <= culprit.sqnr_db + 1.0
    assert all(e.own_sqnr_db > culprit.own_sqnr_db + 5.0 for e in after), [
        (e.name, e.sqnr_db, e.own_sqnr_db) for e in own
    ]
    assert total[0].sqnr_db <= culprit.sqnr_db
    assert [e.own_sqnr_db for e in own] == sorted(e.own_sqnr_db for e in own)
    with pytest.raises(ConfigError, match="rank_by"):
        q.node_sensitivity(path, int8, images[:1], rank_by="worst")


def _activation_scales(path) -> dict[str, float]:
    graph = onnx.load(str(path)).graph
    return {
        i.name: float(onnx.numpy_helper.to_array(i).ravel()[0])
        for i in graph.initializer
        if i.name.endswith("_scale") and onnx.numpy_helper.to_array(i).size == 1
    }


def test_entropy_calibration_is_not_min_max(tmp_path, images):
    """onnxruntime's default entropy settings reduce to min-max; ubiq's search thresholds."""
    model = _pointwise_model(tmp_path / "conv.onnx")
    scales = {
        name: _activation_scales(
            q.quantize_static(
                model, tmp_path / f"{name}.onnx", images, q.QuantCandidate(calibrator=name)
            )
        )
        for name in ("minmax", "entropy")
    }
    shared = set(scales["minmax"]) & set(scales["entropy"])
    assert len(shared) >= 5
    differ = [n for n in shared if not np.isclose(scales["minmax"][n], scales["entropy"][n])]
    assert len(differ) >= len(shared) // 2, (scales, differ)


def test_calibration_in_chunks_gives_the_same_min_max_ranges(tmp_path, images):
    model = _pointwise_model(tmp_path / "conv.onnx")
    whole = q.quantize_static(model, tmp_path / "whole.onnx", images, chunk=None)
    chunked = q.quantize_static(model, tmp_path / "chunked.onnx", images, chunk=3)  # 8 -> 4 x 2
    assert len(images) == 8 and q._chunk_options(8, 3) == {"CalibStridedMinMax": 2}
    first, second = _activation_scales(whole), _activation_scales(chunked)
    assert first.keys() == second.keys() and len(first) >= 5
    assert all(np.isclose(first[n], second[n], rtol=1e-6) for n in first)
    assert q._chunk_options(8, 8) == {} and q._chunk_options(61, 8) == {"CalibStridedMinMax": 1}
    for bad in (0, -2, 2.5, True):
        with pytest.raises(ConfigError, match="chunk must be"):
            q._chunk_options(8, bad)


def test_calibration_reader_reads_a_range():
    from ubiq.models.toolchain.compress.sensitivity import CalibrationReader

    manifest = ModelManifest.load(DETECTOR.with_suffix(".json"))
    reader = CalibrationReader([Path("a.png"), Path("b.png"), Path("c.png")], manifest)
    assert len(reader) == 3
    reader.set_range(3, 6)
    assert reader.get_next() is None  # past the end: nothing read
    reader.rewind()
    assert reader._index == 0 and reader._end == 3


def test_a_calibration_cache_is_written_once_and_reused(tmp_path, images, monkeypatch):
    model = _pointwise_model(tmp_path / "conv.onnx")
    cache = tmp_path / "cache" / "calibration.json"
    runs = []
    real = q._calibrate
    monkeypatch.setattr(q, "_calibrate", lambda *a, **k: runs.append(1) or real(*a, **k))
    first = q.quantize_static(model, tmp_path / "a.onnx", images[:4], calibration_cache=cache)
    assert cache.is_file() and len(runs) == 1
    # other images, same cache: the ranges are the cached ones, and nothing is calibrated
    second = q.quantize_static(model, tmp_path / "b.onnx", images[4:], calibration_cache=cache)
    assert len(runs) == 1
    assert _activation_scales(second) == _activation_scales(first)
    fresh = q.quantize_static(model, tmp_path / "c.onnx", images[4:])
    assert len(runs) == 2
    assert _activation_scales(fresh) != _activation_scales(first)


def test_auto_quantize_calibrates_once_per_calibrator(tmp_path, images, monkeypatch):
    model = _pointwise_model(tmp_path / "conv.onnx")
    runs = []
    real = q._calibrate
    monkeypatch.setattr(q, "_calibrate", lambda *a, **k: runs.append(a[2]) or real(*a, **k))
    report = q.auto_quantize(
        model,
        tmp_path / "out",
        images[:2],
        candidates=[
            q.QuantCandidate(),
            q.QuantCandidate("QOperator"),
            q.QuantCandidate(activation_type="int8"),
        ],
        threads=1,
        progress=False,
    )
    built = [a for a in report.attempts if a.path is not None]
    assert len(built) >= 3 and len(runs) == 1, (len(built), runs)
