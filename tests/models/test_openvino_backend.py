"""Tests of the native OpenVINO backend on real models: ONNX and IR, precision, the model
cache, devices that are missing, corrupt IR, and OpenVINO itself missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import assert_concurrent_runs_match, run_ubiq

from ubiq.errors import BackendUnavailable, ConfigError, ModelError
from ubiq.hardware.accelerators import DeviceSpec, onnxruntime_providers, parse_device
from ubiq.models.runtime.backend import load_backend
from ubiq.models.runtime.bench import sample_image
from ubiq.models.runtime.device_sweep import agreement_images, map50_against
from ubiq.models.runtime.model import DetectionModel

MNV2 = Path(__file__).resolve().parents[2] / "ubiq" / "data" / "models" / "ubiq-det-mnv2.onnx"

openvino = pytest.importorskip("openvino", reason="openvino is not installed (ubiq[openvino])")


@pytest.fixture(autouse=True)
def _ubiq_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "ubiq_home"
    monkeypatch.setenv("UBIQ_HOME", str(home))
    return home


@pytest.fixture
def mnv2(tmp_path: Path) -> Path:
    """The shipped detector with its manifest in the ONNX metadata."""
    return Path(shutil.copy(MNV2, tmp_path / "mnv2.onnx"))


@pytest.fixture
def mnv2_ir(mnv2: Path, tmp_path: Path) -> Path:
    """The shipped detector as OpenVINO IR (fp32 weights, metadata kept)."""
    from ubiq.models.toolchain.export.openvino_ir import export_openvino

    return export_openvino(mnv2, tmp_path / "ir" / "mnv2.xml").path


def _feed(model_path: Path) -> dict[str, np.ndarray]:
    model = DetectionModel.load(model_path, backend="onnxruntime", device="cpu")
    tensor, _ = model.prepare(sample_image())
    return {model.manifest.input.name: tensor}


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def _lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


# ------------------------------------------------------------------ device text


@pytest.mark.parametrize(
    ("text", "target", "precision", "shown"),
    [
        ("openvino:cpu", "CPU", None, "openvino:CPU"),
        ("openvino:NPU", "NPU", None, "openvino:NPU"),
        ("openvino:gpu.1:f16", "GPU.1", "f16", "openvino:GPU.1:f16"),
        ("openvino:AUTO:bf16", "AUTO", "bf16", "openvino:AUTO:bf16"),
    ],
)
def test_parse_openvino_targets(text, target, precision, shown):
    spec = parse_device(text)
    assert (spec.kind, spec.target, spec.precision) == ("openvino", target, precision)
    assert str(spec) == shown


@pytest.mark.parametrize("text", ["openvino:TPU", "openvino:CPU:int4", "openvino:CPU:f32:x"])
def test_parse_rejects_bad_openvino_values(text):
    with pytest.raises(ConfigError) as caught:
        parse_device(text)
    assert repr(text.lower()) in str(caught.value) or repr(text) in str(caught.value)


def test_onnxruntime_provider_takes_the_target_and_precision(mnv2):
    providers = onnxruntime_providers(parse_device("openvino:NPU:f16"), mnv2)
    assert providers == [
        ("OpenVINOExecutionProvider", {"device_type": "NPU", "precision": "FP16"}),
        "CPUExecutionProvider",
    ]
    with pytest.raises(ConfigError, match="bf16 needs --backend openvino"):
        onnxruntime_providers(parse_device("openvino:CPU:bf16"), mnv2)


# ------------------------------------------------------------------ real runs


def test_onnx_f32_matches_onnxruntime(mnv2):
    feed = _feed(mnv2)
    reference = load_backend(mnv2, "onnxruntime", device="cpu").run(feed)["output0"]
    backend = load_backend(mnv2, device="openvino:CPU:f32", num_threads=1)
    assert backend.name == "openvino"
    assert (backend.target, backend.precision, backend.device) == ("CPU", "f32", "CPU f32")
    assert backend.device_reason == "CPU f32 (requested, LATENCY hint)"
    assert [(t.name, t.shape, t.dtype) for t in backend.inputs] == [
        ("images", (1, 3, 256, 256), "float32")
    ]
    assert backend.outputs[0].shape == (1, 10, 1344)
    got = backend.run(feed)["output0"]
    assert got.shape == reference.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, reference, atol=2e-3)


def test_default_precision_is_openvinos_and_shown(mnv2):
    backend = load_backend(mnv2, "openvino")
    core = openvino.Core()
    capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    expected = "bf16" if "BF16" in capabilities else "f32"
    assert backend.precision == expected
    assert backend.device_reason == (
        f"device auto: CPU {expected} (OpenVINO's default here, LATENCY hint)"
    )
    feed = _feed(mnv2)
    reference = load_backend(mnv2, "onnxruntime", device="cpu").run(feed)["output0"]
    assert _cosine(backend.run(feed)["output0"], reference) > 0.999


def test_detections_agree_with_onnxruntime_fp32(mnv2):
    images = agreement_images()
    reference = DetectionModel.load(mnv2, backend="onnxruntime", device="cpu")
    openvino_model = DetectionModel.load(mnv2, backend="openvino", device="openvino:CPU:f32")
    assert openvino_model.manifest == reference.manifest  # same manifest, from ONNX metadata
    expected = [reference(image) for image in images]
    got = [openvino_model(image) for image in images]
    assert sum(len(d) for d in expected) >= 3
    assert map50_against(expected, got) >= 0.98


def test_ir_pair_runs_with_its_manifest(mnv2, mnv2_ir):
    assert mnv2_ir.with_suffix(".bin").is_file()
    model = DetectionModel.load(mnv2_ir, device="openvino:CPU:f32")  # .xml picks openvino
    assert model.backend.name == "openvino"
    assert model.manifest.name == "ubiq-det-mnv2" and model.manifest.format == "xml"
    reference = DetectionModel.load(mnv2, backend="onnxruntime", device="cpu")
    images = agreement_images()
    assert map50_against([reference(i) for i in images], [model(i) for i in images]) >= 0.98


def test_model_cache_is_written_and_reused(mnv2, _ubiq_home):
    from ubiq.models.runtime.openvino_backend import cache_dir

    first = load_backend(mnv2, device="openvino:CPU:f32")
    blobs = sorted(cache_dir().glob("*.blob"))
    assert cache_dir().is_relative_to(_ubiq_home) and len(blobs) == 1
    second = load_backend(mnv2, device="openvino:CPU:f32")
    assert sorted(cache_dir().glob("*.blob")) == blobs  # imported, not compiled again
    feed = _feed(mnv2)
    np.testing.assert_array_equal(first.run(feed)["output0"], second.run(feed)["output0"])


# ------------------------------------------------------------------ bad input


def test_missing_device_names_the_devices_that_exist(mnv2):
    present = openvino.Core().available_devices
    if "NPU" in present:
        pytest.skip("this machine has an NPU")
    with pytest.raises(BackendUnavailable) as caught:
        load_backend(mnv2, "openvino", device="openvino:NPU")
    message = str(caught.value)
    assert caught.value.name == "openvino:NPU" and "\n" not in message
    for name in present:
        assert name in message


def test_cli_missing_npu_is_one_line(mnv2):
    if "NPU" in openvino.Core().available_devices:
        pytest.skip("this machine has an NPU")
    result = run_ubiq("detect", "--model", str(mnv2), "--device", "openvino:NPU")
    assert result.returncode == BackendUnavailable.exit_code
    lines = _lines(result.stderr)
    assert len(lines) == 1 and "NPU" in lines[0] and "sees CPU" in lines[0], result.stderr


def test_onnxruntime_device_on_the_openvino_backend_is_a_config_error(mnv2):
    with pytest.raises(ConfigError, match="device cuda runs on onnxruntime"):
        load_backend(mnv2, "openvino", device="cuda")


@pytest.mark.parametrize("damage", ["garbage xml", "truncated bin", "missing bin"])
def test_corrupt_ir_pair_is_one_clear_line(mnv2_ir, damage):
    weights = mnv2_ir.with_suffix(".bin")
    if damage == "garbage xml":
        mnv2_ir.write_text("<net name='x'><layers><layer id='0'")
    elif damage == "truncated bin":
        weights.write_bytes(weights.read_bytes()[:1000])
    else:
        weights.unlink()
    with pytest.raises(ModelError) as caught:
        load_backend(mnv2_ir, device="openvino:CPU")
    assert mnv2_ir.name in str(caught.value) and "\n" not in str(caught.value)
    result = run_ubiq("detect", "--model", str(mnv2_ir), "--max-frames", "2")
    assert result.returncode == ModelError.exit_code
    lines = _lines(result.stderr)
    assert len(lines) == 1 and mnv2_ir.name in lines[0], result.stderr


def test_openvino_not_installed_is_one_line(mnv2, tmp_path):
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "openvino.py").write_text("raise ImportError(\"No module named 'openvino'\")\n")
    result = run_ubiq(
        "detect", "--model", str(mnv2), "--backend", "openvino", env={"PYTHONPATH": str(shadow)}
    )
    assert result.returncode == BackendUnavailable.exit_code
    lines = _lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert "backend 'openvino' is unavailable: the openvino package is missing" in lines[0]
    assert "pip install 'ubiq[openvino]'" in lines[0]


def test_importing_ubiq_does_not_import_openvino():
    code = (
        "import sys, ubiq, ubiq.cli, ubiq.models.runtime.backend, ubiq.models.runtime.model;"
        "print('openvino' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cli_detect_shows_the_backend_device_and_precision(mnv2):
    result = run_ubiq(
        "detect", "--model", str(mnv2), "--device", "openvino:CPU:f32", "--max-frames", "3",
        "--streams", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = _lines(result.stderr)[-1]
    assert summary.startswith(
        "ubiq detect: ubiq-det-mnv2 (openvino, CPU f32 (requested, LATENCY hint)) on demo: 3"
    ), summary
    # A file by default: frames in flight, compiled for throughput (one stream per core).
    result = run_ubiq(
        "detect", "--model", str(mnv2), "--device", "openvino:CPU:f32", "--max-frames", "3"
    )
    assert result.returncode == 0, result.stderr
    summary = _lines(result.stderr)[-1]
    streams = DetectionModel.load(mnv2, device="openvino:CPU:f32", streams=4).backend.streams
    if streams > 1:
        assert "(openvino, CPU f32 (requested, THROUGHPUT hint), " in summary, summary
        assert " frames at once) on demo: 3 frames" in summary, summary


def test_plain_openvino_device_still_means_the_onnxruntime_provider(mnv2):
    spec = parse_device("openvino")
    assert spec == DeviceSpec("openvino") and spec.target is None
    import onnxruntime

    if "OpenVINOExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-openvino is installed")
    with pytest.raises(BackendUnavailable) as caught:
        load_backend(mnv2, device="openvino")
    assert "--device openvino:CPU" in caught.value.hint


def test_doctor_lists_openvino_devices():
    from ubiq.deploy.doctor import collect, format_report

    report = collect()
    devices = report["runtimes"]["openvino"]["devices"]
    assert [d["name"] for d in devices] == openvino.Core().available_devices
    line = next(x for x in format_report(report).splitlines() if x.strip().startswith("openvino"))
    assert openvino.__version__.split("-")[0] in line and "CPU: " in line


def test_streams_compile_for_throughput_and_run_concurrently(mnv2: Path):
    """With streams, OpenVINO compiles for THROUGHPUT and keeps a pool of requests, so
    threads may call ``run`` at once; each call gets its own input's answer."""
    one = load_backend(mnv2, "openvino", device="openvino:CPU:f32")
    many = load_backend(mnv2, "openvino", device="openvino:CPU:f32", streams=2)
    assert one.streams == 1 and "LATENCY hint" in one.device_reason
    assert 1 <= many.streams <= 2 and "THROUGHPUT hint" in many.device_reason
    base = _feed(mnv2)
    name = next(iter(base))
    feeds = [{name: np.ascontiguousarray(base[name] * scale)} for scale in (0.2, 0.6, 1.0, 1.4)]
    assert_concurrent_runs_match(one, many, feeds)


def test_an_avx2_profile_runs_f32_when_the_default_cannot_compile(mnv2, tmp_path):
    """With oneDNN limited to AVX2 (an AVX2-only machine's profile) the CPU's bf16 default
    cannot compile; the backend asks for f32 and says why, and a default that fails to
    compile for another reason falls back to f32 too."""
    import platform

    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("ONEDNN_MAX_CPU_ISA=AVX2 is an x86 profile")
    result = run_ubiq(
        "detect", "--model", str(mnv2), "--backend", "openvino", "--max-frames", "3",
        env={"ONEDNN_MAX_CPU_ISA": "AVX2"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = _lines(result.stderr)[-1]
    assert "(openvino, device auto: CPU f32 (ONEDNN_MAX_CPU_ISA=AVX2 leaves no bf16" in summary
    assert "on demo: 3 frames" in summary
    # Not knowing the limit, the default is tried first; where it fails, f32 runs.
    code = (
        "import sys; from ubiq.models.runtime import openvino_backend as ov;"
        "ov._NO_BF16_ISAS = ();"
        "b = ov.OpenVinoBackend(sys.argv[1]); print(b.device, '|', b.device_reason)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(mnv2)],
        capture_output=True, text=True, check=False,
        env={**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "UBIQ_HOME": str(tmp_path / "h")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("CPU f32 | device auto: CPU f32 ("), done.stdout
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    if "avx512_bf16" in flags or "amx_bf16" in flags:  # OpenVINO's default here is bf16
        assert "OpenVINO's default failed to compile here" in done.stdout, done.stdout


def test_a_qoperator_int8_model_names_the_operations_openvino_cannot_convert(tmp_path):
    """A valid int8 model in QOperator form (QLinearConv with per-channel scales) runs on
    onnxruntime but not on OpenVINO's ONNX reader: one line naming the operations, not
    "corrupt or truncated"."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    weights = np.random.default_rng(0).standard_normal((16, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 8, 8])],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "conv.onnx")
    batches = iter(
        {"x": np.random.default_rng(i).standard_normal((1, 3, 8, 8)).astype(np.float32)}
        for i in range(4)
    )

    class Reader(CalibrationDataReader):
        def get_next(self):
            return next(batches, None)

    quantized = tmp_path / "conv.int8.onnx"
    quantize_static(
        tmp_path / "conv.onnx",
        quantized,
        Reader(),
        quant_format=QuantFormat.QOperator,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    load_backend(quantized, "onnxruntime", num_threads=1, device="cpu")  # valid
    with pytest.raises(ModelError) as raised:
        load_backend(quantized, "openvino", num_threads=1, device="openvino:CPU")
    message = str(raised.value)
    assert "on OpenVINO: it cannot convert its operations QLinearConv" in message, message
    assert "\n" not in message and "corrupt" not in message
