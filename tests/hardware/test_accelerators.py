"""Tests of ubiq.hardware.accelerators: --device parsing, providers, fall backs, Coral."""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from support import one_op_onnx, run_ubiq

from ubiq.errors import BackendUnavailable, ConfigError, ModelError
from ubiq.hardware import accelerators
from ubiq.hardware.accelerators import (
    DeviceSpec,
    check_edgetpu_model,
    edgetpu_library_name,
    engine_cache_dir,
    load_edgetpu_delegate,
    onnxruntime_providers,
    ops_left_on_cpu,
    parse_device,
    require_provider,
    resolve_onnxruntime_auto,
    session_fallback,
)
from ubiq.models.runtime import litert_backend
from ubiq.models.runtime.backend import load_backend
from ubiq.models.runtime.bench import bench_model
from ubiq.models.runtime.litert_backend import LiteRTBackend, import_interpreter
from ubiq.models.runtime.onnxruntime_backend import OnnxRuntimeBackend

ORT_LOGGER = "ubiq.models.runtime.onnxruntime_backend"
LITERT_LOGGER = "ubiq.models.runtime.litert_backend"
REAL_DELEGATE_ERROR = "Failed to load delegate from libedgetpu.so.1\n"


@pytest.fixture(autouse=True)
def _ubiq_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "ubiq_home"
    monkeypatch.setenv("UBIQ_HOME", str(home))
    return home


@pytest.fixture
def relu_onnx(tmp_path: Path) -> Path:
    return one_op_onnx(tmp_path / "relu.onnx", "Relu", [1, 3, 8, 8], [1, 3, 8, 8])


@pytest.fixture
def edgetpu_named(blazeface_path: Path, tmp_path: Path) -> Path:
    """The real BlazeFace file under an ``_edgetpu.tflite`` name (it has no Edge TPU ops)."""
    return Path(shutil.copy(blazeface_path, tmp_path / "blazeface_edgetpu.tflite"))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


# ------------------------------------------------------------------ parsing


@pytest.mark.parametrize(
    ("text", "expected", "edgetpu_device"),
    [
        ("auto", DeviceSpec("auto"), None),
        ("CPU", DeviceSpec("cpu"), None),
        ("cuda", DeviceSpec("cuda"), None),
        ("tensorrt", DeviceSpec("tensorrt"), None),
        ("openvino", DeviceSpec("openvino"), None),
        ("coral", DeviceSpec("coral"), None),
        ("coral:usb", DeviceSpec("coral", "usb"), "usb"),
        ("coral:usb:1", DeviceSpec("coral", "usb", 1), "usb:1"),
        ("coral:pci", DeviceSpec("coral", "pci"), "pci"),
        ("coral:pci:0", DeviceSpec("coral", "pci", 0), "pci:0"),
    ],
)
def test_parse_device(text, expected, edgetpu_device):
    spec = parse_device(text)
    assert spec == expected
    assert spec.edgetpu_device == edgetpu_device
    assert spec.explicit == (expected.kind != "auto")


@pytest.mark.parametrize("text", ["gpu", "cuda:0", "coral:usb:x", "coral:eth", "coral:usb:1:2", ""])
def test_parse_device_rejects_bad_values_and_lists_the_valid_ones(text):
    with pytest.raises(ConfigError) as caught:
        parse_device(text)
    message = str(caught.value)
    assert repr(text) in message
    for valid in ("auto", "cpu", "cuda", "tensorrt", "openvino", "coral[:usb|usb:N|pci|pci:N]"):
        assert valid in message


def test_edgetpu_library_name_per_platform():
    assert edgetpu_library_name("Linux") == "libedgetpu.so.1"
    assert edgetpu_library_name("Darwin") == "libedgetpu.1.dylib"
    assert edgetpu_library_name("Windows") == "edgetpu.dll"


# ------------------------------------------------------------------ providers


def test_tensorrt_providers_and_engine_cache_keyed_by_model_version_and_device(
    relu_onnx, _ubiq_home
):
    providers = onnxruntime_providers(
        DeviceSpec("tensorrt"), relu_onnx, trt_version="10.3.0", device_name="Jetson Orin Nano"
    )
    cache = _ubiq_home / "engines" / f"{_sha256(relu_onnx)[:16]}-trt10.3.0-jetson-orin-nano"
    assert providers == [
        (
            "TensorrtExecutionProvider",
            {
                "trt_fp16_enable": True,
                "trt_int8_enable": False,
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache),
            },
        ),
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    other_device = engine_cache_dir(relu_onnx, trt_version="10.3.0", device_name="AGX Orin")
    other_version = engine_cache_dir(relu_onnx, trt_version="8.6.2", device_name="AGX Orin")
    assert len({cache, other_device, other_version}) == 3


def test_tensorrt_version_unknown_without_tensorrt_here():
    pytest.importorskip("onnxruntime")
    if "tensorrt" in onnxruntime.get_build_info().lower():
        pytest.skip("this onnxruntime build names a TensorRT version")
    try:
        import tensorrt  # noqa: F401

        pytest.skip("tensorrt is installed")
    except ImportError:
        pass
    assert accelerators.tensorrt_version() == "unknown"


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"]),
        (
            "openvino",
            [("OpenVINOExecutionProvider", {"device_type": "CPU"}), "CPUExecutionProvider"],
        ),
        ("cpu", ["CPUExecutionProvider"]),
    ],
)
def test_providers_per_device(relu_onnx, kind, expected):
    assert onnxruntime_providers(DeviceSpec(kind), relu_onnx) == expected


def test_coral_has_no_onnxruntime_providers(relu_onnx):
    with pytest.raises(ConfigError, match="device coral does not run ONNX models"):
        onnxruntime_providers(DeviceSpec("coral"), relu_onnx)


def test_require_provider_names_what_is_missing_and_the_fix():
    require_provider(DeviceSpec("cuda"), ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(BackendUnavailable) as caught:
        require_provider(DeviceSpec("tensorrt"), ["CPUExecutionProvider"])
    assert caught.value.name == "tensorrt"
    assert caught.value.missing == "TensorrtExecutionProvider in this onnxruntime build"
    assert "Jetson wheel index" in caught.value.hint
    assert "\n" not in str(caught.value)


def test_auto_order_prefers_tensorrt_then_cuda_then_openvino():
    cpu = "CPUExecutionProvider"
    assert resolve_onnxruntime_auto([cpu])[0] == DeviceSpec("cpu")
    assert resolve_onnxruntime_auto(["OpenVINOExecutionProvider", cpu])[0].kind == "openvino"
    assert resolve_onnxruntime_auto(["CUDAExecutionProvider", cpu])[0].kind == "cuda"
    both = ["CUDAExecutionProvider", "TensorrtExecutionProvider", cpu]
    assert resolve_onnxruntime_auto(both) == (
        DeviceSpec("tensorrt"),
        "device auto: tensorrt (TensorrtExecutionProvider available)",
    )


def test_session_fallback_compares_asked_with_loaded():
    asked = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert (
        session_fallback(
            DeviceSpec("cuda"), asked, ["CUDAExecutionProvider", "CPUExecutionProvider"]
        )
        is None
    )
    reason = session_fallback(DeviceSpec("cuda"), asked, ["CPUExecutionProvider"])
    assert reason.startswith("CUDAExecutionProvider was requested")
    assert "fell back to CPUExecutionProvider" in reason


# ------------------------------------------------------------------ onnxruntime here (CPU only)


def test_auto_resolves_to_cpu_here_with_a_reason(relu_onnx, caplog):
    if set(onnxruntime.get_available_providers()) & set(
        accelerators.PROVIDER_FOR_DEVICE.values()
    ) - {"CPUExecutionProvider"}:
        pytest.skip("this onnxruntime build has an accelerator provider")
    with caplog.at_level(logging.INFO, logger=ORT_LOGGER):
        backend = load_backend(relu_onnx)
    reason = (
        "device auto: cpu (no TensorrtExecutionProvider/CUDAExecutionProvider/"
        "OpenVINOExecutionProvider in this onnxruntime build)"
    )
    assert backend.device == "cpu"
    assert backend.device_reason == reason
    assert backend.fallback_reason is None
    assert backend.providers == ("CPUExecutionProvider",)
    assert [r.getMessage() for r in caplog.records if r.name == ORT_LOGGER] == [reason]
    x = np.linspace(-1, 1, 3 * 8 * 8, dtype=np.float32).reshape(1, 3, 8, 8)
    np.testing.assert_array_equal(backend.run({"images": x})["features"], np.maximum(x, 0))


@pytest.mark.parametrize(
    ("kind", "provider"),
    [
        ("tensorrt", "TensorrtExecutionProvider"),
        ("cuda", "CUDAExecutionProvider"),
        ("openvino", "OpenVINOExecutionProvider"),
    ],
)
def test_explicit_device_missing_from_this_build_is_unavailable(relu_onnx, kind, provider):
    if provider in onnxruntime.get_available_providers():
        pytest.skip(f"{provider} is built in here")
    with pytest.raises(BackendUnavailable) as caught:
        load_backend(relu_onnx, device=kind)
    assert caught.value.name == kind
    assert caught.value.missing == f"{provider} in this onnxruntime build"
    assert "pip install" in caught.value.hint or "Jetson" in caught.value.hint


def test_device_for_the_other_model_format_is_a_config_error(blazeface_path, relu_onnx):
    with pytest.raises(ConfigError, match="device cuda runs on onnxruntime"):
        load_backend(blazeface_path, device="cuda")
    with pytest.raises(ConfigError, match="device coral:usb runs on litert"):
        load_backend(relu_onnx, device="coral:usb")


@pytest.fixture
def cpu_only_session(monkeypatch):
    """onnxruntime that claims CUDA and TensorRT are built in, but whose sessions load on the
    CPU alone (what a missing libcudnn does); records the providers asked for."""
    asked: list = []
    real_session = onnxruntime.InferenceSession

    def session(path, sess_options=None, providers=None):
        asked.append(providers)
        return real_session(path, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(
        onnxruntime,
        "get_available_providers",
        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    monkeypatch.setattr(onnxruntime, "InferenceSession", session)
    return asked


def test_silent_fallback_for_an_explicit_device_is_an_error(relu_onnx, cpu_only_session):
    with pytest.raises(BackendUnavailable) as caught:
        OnnxRuntimeBackend(relu_onnx, device="cuda")
    assert cpu_only_session == [["CUDAExecutionProvider", "CPUExecutionProvider"]]
    assert caught.value.missing == "a working CUDAExecutionProvider"
    assert "fell back to CPUExecutionProvider" in caught.value.hint


def test_silent_fallback_under_auto_is_reported(relu_onnx, cpu_only_session, caplog, _ubiq_home):
    with caplog.at_level(logging.INFO, logger=ORT_LOGGER):
        backend = load_backend(relu_onnx, device="auto")
    (asked,) = cpu_only_session
    assert [p if isinstance(p, str) else p[0] for p in asked] == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    cache = Path(asked[0][1]["trt_engine_cache_path"])
    assert cache.parent == _ubiq_home / "engines" and cache.is_dir()
    assert cache.name.startswith(_sha256(relu_onnx)[:16] + "-trt")
    assert backend.device_reason == "device auto: tensorrt (TensorrtExecutionProvider available)"
    assert backend.device == "cpu"
    assert backend.fallback_reason.startswith("TensorrtExecutionProvider was requested")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and backend.fallback_reason in warnings[0].getMessage()


def test_a_provider_that_throws_is_reported_as_a_device_fault(relu_onnx, monkeypatch):
    def session(path, sess_options=None, providers=None):
        raise RuntimeError("CUDA failure 35: CUDA driver version is insufficient\nmore")

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider"])
    monkeypatch.setattr(onnxruntime, "InferenceSession", session)
    with pytest.raises(ModelError) as caught:
        OnnxRuntimeBackend(relu_onnx, device="cuda")
    message = str(caught.value)
    assert "on cuda (providers CUDAExecutionProvider, CPUExecutionProvider)" in message
    assert "CUDA driver version is insufficient" in message and "try device cpu" in message
    assert "\n" not in message


def test_bench_records_the_device(relu_onnx):
    result = bench_model(str(relu_onnx), runs=3, warmup=1, device="cpu")
    assert result.device == "cpu" and result.backend == "onnxruntime"
    assert result.to_dict()["device"] == "cpu"
    with pytest.raises(ConfigError, match="'npu'"):
        bench_model(str(relu_onnx), runs=3, warmup=1, device="npu")


# ------------------------------------------------------------------ Coral


def real_like_failing_loader(library, options=None):
    """Fails exactly as ``load_delegate`` does when libedgetpu finds no Edge TPU."""
    raise ValueError(f"Failed to load delegate from {library}\n")


class FakeDelegate:
    def __init__(self, library, options):
        self.library = library
        self.options = options


def test_real_loader_here_gives_one_clear_error_and_nothing_on_stderr(capfd):
    pytest.importorskip("ai_edge_litert")
    from ai_edge_litert.interpreter import load_delegate

    if _has_edge_tpu():
        pytest.skip("libedgetpu and an Edge TPU are present")
    capfd.readouterr()
    with pytest.raises(BackendUnavailable) as caught:
        load_edgetpu_delegate(DeviceSpec("coral", "usb", 0), load_delegate)
    assert caught.value.name == "coral"
    assert caught.value.missing == "libedgetpu.so.1 or an Edge TPU on usb:0"
    assert "libedgetpu1-std" in caught.value.hint and "18d1:9302" in caught.value.hint
    assert "Exception ignored" not in capfd.readouterr().err


def test_fake_loader_fails_like_the_real_one():
    with pytest.raises(ValueError, match=REAL_DELEGATE_ERROR):
        real_like_failing_loader("libedgetpu.so.1", {"device": "usb:0"})
    with pytest.raises(BackendUnavailable) as caught:
        load_edgetpu_delegate(
            DeviceSpec("coral", "pci", 1), real_like_failing_loader, library="libedgetpu.so.1"
        )
    assert caught.value.missing == "libedgetpu.so.1 or an Edge TPU on pci:1"
    assert isinstance(caught.value.__cause__, ValueError)


def test_loader_gets_the_library_and_device_option():
    delegate = load_edgetpu_delegate(DeviceSpec("coral", "usb", 2), FakeDelegate, library="x.so")
    assert (delegate.library, delegate.options) == ("x.so", {"device": "usb:2"})
    delegate = load_edgetpu_delegate(DeviceSpec("coral"), FakeDelegate, library="x.so")
    assert delegate.options == {}


def test_coral_with_a_float_model_names_edgetpu_compiler(blazeface_path):
    with pytest.raises(ModelError) as caught:
        LiteRTBackend(blazeface_path, device="coral", delegate_loader=FakeDelegate)
    message = str(caught.value)
    assert "edgetpu_compiler" in message and "float32" in message
    assert "blazeface_edgetpu.tflite" in message


class _Stub:
    def __init__(self, inputs, tensors, outputs=(), ops=None):
        self._inputs, self._tensors, self._outputs = inputs, tensors, outputs
        if ops is not None:
            self._get_ops_details = lambda: ops

    def get_input_details(self):
        return [{"dtype": d, "index": i} for i, d in enumerate(self._inputs)]

    def get_tensor_details(self):
        return [{"name": f"t{i}", "dtype": d, "index": i} for i, d in enumerate(self._tensors)]

    def get_output_details(self):
        return [{"index": i} for i in self._outputs]


def test_check_edgetpu_model_accepts_full_int8_and_rejects_mixed(tmp_path, caplog):
    path = tmp_path / "ssd_int8.tflite"
    with caplog.at_level(logging.WARNING):
        check_edgetpu_model(path, _Stub([np.uint8], [np.uint8, np.int32, np.int8]))
    assert "not compiled for the Edge TPU" in caplog.text
    # A float output after a DEQUANTIZE is allowed; a float input is not.
    check_edgetpu_model(path, _Stub([np.int8], [np.int8, np.float32], outputs=(1,)))
    with pytest.raises(ModelError, match="edgetpu_compiler ssd_int8.tflite"):
        check_edgetpu_model(path, _Stub([np.float32], [np.float32, np.int8]))
    with pytest.raises(ModelError, match="1 float tensors"):
        check_edgetpu_model(path, _Stub([np.uint8], [np.uint8, np.float32]))


def test_ops_left_on_cpu_counts_ops_not_mapped_to_the_edge_tpu():
    ops = [{"op_name": "edgetpu-custom-op"}, {"op_name": "DEQUANTIZE"}, {"op_name": "ADD"}]
    assert ops_left_on_cpu(_Stub([], [], ops=ops)) == (2, 3)
    assert ops_left_on_cpu(_Stub([], [])) is None


@pytest.fixture
def recording_interpreter(monkeypatch):
    """The real interpreter, recording the delegates it is handed (a fake delegate has no
    native pointer, so the real interpreter is built without it)."""
    real = import_interpreter()
    calls: list = []

    def interpreter(model_path, num_threads=None, experimental_delegates=None):
        calls.append(experimental_delegates)
        return real(model_path=model_path, num_threads=num_threads)

    monkeypatch.setattr(litert_backend, "import_interpreter", lambda: interpreter)
    return calls


def test_coral_passes_the_loaded_delegate_to_the_interpreter(
    edgetpu_named, recording_interpreter, caplog
):
    with caplog.at_level(logging.INFO, logger=LITERT_LOGGER):
        backend = LiteRTBackend(
            edgetpu_named, device="coral:usb:0", delegate_loader=FakeDelegate, num_threads=1
        )
    inspector_delegates, run_delegates = recording_interpreter
    assert inspector_delegates is None
    (delegate,) = run_delegates
    assert isinstance(delegate, FakeDelegate)
    assert (delegate.library, delegate.options) == ("libedgetpu.so.1", {"device": "usb:0"})
    assert backend.device == "coral" and backend.device_reason == ""
    op_count = len(import_interpreter()(model_path=str(edgetpu_named))._get_ops_details())
    assert backend.ops_on_cpu == (op_count, op_count)  # BlazeFace has no Edge TPU op
    assert f"{op_count} of {op_count} ops of blazeface_edgetpu.tflite run on the CPU" in caplog.text
    assert backend.inputs[0].shape == (1, 128, 128, 3)


def test_coral_with_the_failing_loader_is_unavailable(edgetpu_named):
    if _has_edge_tpu():
        pytest.skip("an Edge TPU is present")
    with pytest.raises(BackendUnavailable) as caught:
        load_backend(edgetpu_named, device="coral:usb:0")
    assert caught.value.missing == "libedgetpu.so.1 or an Edge TPU on usb:0"
    with pytest.raises(BackendUnavailable, match="on pci:0"):
        LiteRTBackend(edgetpu_named, device="coral:pci:0", delegate_loader=real_like_failing_loader)


def test_auto_on_an_edgetpu_file_falls_back_to_cpu_with_a_reason(edgetpu_named):
    backend = LiteRTBackend(edgetpu_named, device="auto", delegate_loader=real_like_failing_loader)
    assert backend.device == "cpu"
    assert backend.device_reason == (
        "device auto: cpu (no Edge TPU: libedgetpu.so.1 or an Edge TPU is missing)"
    )


def test_auto_on_an_edgetpu_file_uses_a_working_edge_tpu(edgetpu_named, recording_interpreter):
    backend = LiteRTBackend(edgetpu_named, device="auto", delegate_loader=FakeDelegate)
    assert backend.device == "coral"
    assert backend.device_reason == "device auto: coral (Edge TPU delegate loaded)"
    assert isinstance(recording_interpreter[-1][0], FakeDelegate)


def test_auto_on_a_plain_tflite_is_cpu(blazeface_path):
    backend = load_backend(blazeface_path)
    assert backend.device == "cpu"
    assert "device auto: cpu" in backend.device_reason


# ------------------------------------------------------------------ the real CLI


def test_cli_detect_tensorrt_here_is_one_line_and_nonzero(yolo_onnx):
    if "TensorrtExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("TensorRT is built into this onnxruntime")
    result = run_ubiq(
        "detect", "--model", str(yolo_onnx), "--device", "tensorrt", "--max-frames", "2"
    )
    assert result.returncode == BackendUnavailable.exit_code
    lines = _error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ubiq detect: error: backend 'tensorrt' is unavailable")
    assert "TensorrtExecutionProvider in this onnxruntime build" in lines[0]


def test_cli_detect_coral_here_is_one_line_and_nonzero(blazeface_path, edgetpu_named):
    result = run_ubiq(
        "detect", "--model", str(edgetpu_named), "--device", "coral", "--max-frames", "2"
    )
    assert result.returncode == BackendUnavailable.exit_code
    lines = _error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert "backend 'coral' is unavailable: libedgetpu.so.1 or an Edge TPU is missing" in lines[0]
    result = run_ubiq("detect", "--model", str(blazeface_path), "--device", "coral:usb")
    assert result.returncode == ModelError.exit_code
    lines = _error_lines(result.stderr)
    assert len(lines) == 1 and "edgetpu_compiler" in lines[0], result.stderr


def test_cli_detect_auto_prints_the_device_reason(blazeface_path):
    result = run_ubiq("detect", "--model", str(blazeface_path), "--max-frames", "2")
    assert result.returncode == 0, result.stderr
    summary = _error_lines(result.stderr)[-1]
    assert summary.startswith("ubiq detect: blazeface (litert, device auto: cpu (")


def test_cli_bad_device_lists_the_valid_ones(blazeface_path):
    for command in (("detect", "--model", str(blazeface_path)), ("bench", str(blazeface_path))):
        result = run_ubiq(*command, "--device", "tpu")
        assert result.returncode == ConfigError.exit_code
        lines = _error_lines(result.stderr)
        assert len(lines) == 1 and "'tpu'" in lines[0] and "openvino" in lines[0], result.stderr


def test_cli_bench_device_tensorrt_here_fails(relu_onnx):
    if "TensorrtExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("TensorRT is built into this onnxruntime")
    result = run_ubiq("bench", str(relu_onnx), "--device", "tensorrt", "--runs", "2")
    assert result.returncode == BackendUnavailable.exit_code
    assert "TensorrtExecutionProvider" in _error_lines(result.stderr)[-1]


# ------------------------------------------------------------------ real devices


def _has_edge_tpu() -> bool:
    try:
        load_edgetpu_delegate(DeviceSpec("coral"))
    except BackendUnavailable:
        return False
    return True


@pytest.mark.hardware("jetson")
@pytest.mark.skipif(
    "TensorrtExecutionProvider" not in onnxruntime.get_available_providers(),
    reason="no TensorrtExecutionProvider in this onnxruntime build",
)
def test_tensorrt_on_a_real_gpu_loads_and_caches_an_engine(relu_onnx):
    backend = load_backend(relu_onnx, device="tensorrt")
    assert backend.providers[0] == "TensorrtExecutionProvider"
    x = np.linspace(-1, 1, 3 * 8 * 8, dtype=np.float32).reshape(1, 3, 8, 8)
    np.testing.assert_allclose(backend.run({"images": x})["features"], np.maximum(x, 0), atol=1e-3)
    cache = engine_cache_dir(relu_onnx)
    assert any(cache.iterdir()), f"no engine written to {cache}"


@pytest.mark.hardware("jetson")
@pytest.mark.skipif(
    "CUDAExecutionProvider" not in onnxruntime.get_available_providers(),
    reason="no CUDAExecutionProvider in this onnxruntime build",
)
def test_cuda_on_a_real_gpu_loads(relu_onnx):
    backend = load_backend(relu_onnx, device="cuda")
    assert backend.providers[0] == "CUDAExecutionProvider"
    assert backend.fallback_reason is None


@pytest.mark.hardware("coral")
def test_coral_on_a_real_edge_tpu(edgetpu_named):
    if not _has_edge_tpu():
        pytest.skip("no libedgetpu or Edge TPU here")
    backend = load_backend(edgetpu_named, device="coral")
    assert backend.device == "coral"
    assert backend.ops_on_cpu is not None
