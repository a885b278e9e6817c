"""Accelerator choice: ``--device auto|cpu|cuda|tensorrt|openvino[:TARGET[:PREC]]|coral[:...]``.

ONNX models run on onnxruntime with execution providers built per device (TensorRT with
an engine cache keyed by model, TensorRT version and GPU; CUDA; OpenVINO; CPU). TFLite
models run on LiteRT, with the Edge TPU delegate for ``coral``.

``openvino`` alone is onnxruntime's OpenVINO execution provider (``onnxruntime-openvino``).
``openvino:CPU``, ``openvino:GPU``, ``openvino:GPU.1``, ``openvino:NPU`` or ``openvino:AUTO``
names an OpenVINO device and runs on the native ``openvino`` backend unless ``--backend
onnxruntime`` is given (then it is the provider's ``device_type``); a third part asks for an
inference precision: ``openvino:CPU:f32``, ``openvino:GPU:f16``, ``openvino:CPU:bf16``.
Nothing here probes hardware at import time; every probe happens when a device is chosen.
"""

from __future__ import annotations

import logging
import platform
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ubiq.errors import BackendUnavailable, ConfigError, ModelError
from ubiq.paths import file_sha256, ubiq_home

logger = logging.getLogger(__name__)

DEVICE_KINDS = ("auto", "cpu", "cuda", "tensorrt", "openvino", "coral")
DEVICE_CHOICES = (
    "auto, cpu, cuda, tensorrt, openvino[:CPU|GPU[.N]|NPU|AUTO[:bf16|f16|f32]], "
    "coral[:usb|usb:N|pci|pci:N]"
)
OPENVINO_TARGET_PATTERN = re.compile(r"^(CPU|GPU(\.\d+)?|NPU|AUTO)$")
OPENVINO_PRECISIONS = ("bf16", "f16", "f32")
ONNXRUNTIME_DEVICES = ("cuda", "tensorrt", "openvino")
AUTO_ORDER = ("tensorrt", "cuda", "openvino")

PROVIDER_FOR_DEVICE = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
EDGETPU_OP = "edgetpu-custom-op"
EDGETPU_USB_IDS = ("1a6e:089a", "18d1:9302")

_JETSON_WHEEL = (
    "on Jetson install onnxruntime-gpu from NVIDIA's Jetson wheel index for your JetPack "
    "(Jetson AI Lab / elinux.org Jetson_Zoo), not from PyPI"
)
_PROVIDER_HINTS = {
    "tensorrt": f"{_JETSON_WHEEL}; on a PC install onnxruntime-gpu and TensorRT",
    "cuda": f"{_JETSON_WHEEL}; on a PC pip install onnxruntime-gpu in place of onnxruntime",
    "openvino": "pip install onnxruntime-openvino in place of onnxruntime, or use the native "
    "OpenVINO backend with pip install openvino and --device openvino:CPU",
}
_CORAL_HINT = (
    "install libedgetpu1-std from Coral's apt repo, pin it with the matching TFLite runtime; "
    "check lsusb for 1a6e:089a or 18d1:9302 (USB) or /dev/apex_0 (PCIe)"
)


@dataclass(frozen=True)
class DeviceSpec:
    """A parsed ``--device`` value.

    Attributes:
        kind: One of ``DEVICE_KINDS``.
        bus: For ``coral``: ``"usb"``, ``"pci"`` or ``None`` (any Edge TPU).
        index: For ``coral``: the Edge TPU index on that bus, or ``None`` (the first).
        target: For ``openvino``: the OpenVINO device (``CPU``, ``GPU``, ``GPU.1``, ``NPU``,
            ``AUTO``), or ``None`` (onnxruntime's OpenVINO provider on its default, CPU).
        precision: For ``openvino``: ``bf16``, ``f16`` or ``f32``, or ``None`` (OpenVINO's
            default for the device).
    """

    kind: str = "auto"
    bus: str | None = None
    index: int | None = None
    target: str | None = None
    precision: str | None = None

    @property
    def explicit(self) -> bool:
        """Whether the user named this device (so a fall back to CPU is an error)."""
        return self.kind != "auto"

    @property
    def edgetpu_device(self) -> str | None:
        """The libedgetpu ``device`` option (``usb``, ``usb:0``, ``pci:1``), or ``None``."""
        if self.bus is None:
            return None
        return self.bus if self.index is None else f"{self.bus}:{self.index}"

    def __str__(self) -> str:
        if self.target:
            return ":".join(p for p in (self.kind, self.target, self.precision) if p)
        device = self.edgetpu_device
        return f"{self.kind}:{device}" if device else self.kind


def parse_device(text: str | DeviceSpec | None) -> DeviceSpec:
    """Parses ``--device`` text such as ``cuda``, ``coral:usb:1`` or ``openvino:NPU``.

    Raises:
        ConfigError: Naming the bad value and listing the valid ones.
    """
    if isinstance(text, DeviceSpec):
        return text
    if text is None:
        return DeviceSpec("auto")
    value = str(text).strip().lower()
    parts = value.split(":")
    kind = parts[0]
    bad = ConfigError(f"device: unknown device {text!r}; expected one of {DEVICE_CHOICES}")
    if kind not in DEVICE_KINDS:
        raise bad
    if len(parts) == 1:
        return DeviceSpec(kind)
    if kind == "openvino":
        return _parse_openvino(parts, bad)
    if kind != "coral" or len(parts) > 3 or parts[1] not in ("usb", "pci"):
        raise bad
    if len(parts) == 2:
        return DeviceSpec(kind, parts[1])
    if not parts[2].isdigit():
        raise bad
    return DeviceSpec(kind, parts[1], int(parts[2]))


def _parse_openvino(parts: list[str], bad: ConfigError) -> DeviceSpec:
    """``openvino:TARGET[:PRECISION]`` (already lower case) to a spec."""
    target = parts[1].upper()
    if len(parts) > 3 or not OPENVINO_TARGET_PATTERN.match(target):
        raise bad
    precision = parts[2] if len(parts) == 3 else None
    if precision is not None and precision not in OPENVINO_PRECISIONS:
        raise ConfigError(
            f"device: unknown OpenVINO precision {precision!r} in "
            f"{':'.join(parts)!r}; expected one of {', '.join(OPENVINO_PRECISIONS)}"
        )
    return DeviceSpec("openvino", target=target, precision=precision)


def openvino_devices(core: Any = None) -> list[tuple[str, str]]:
    """Returns the OpenVINO devices of this machine: ``[(name, full name), ...]``.

    Args:
        core: An ``openvino.Core``; ``None`` makes one.

    Raises:
        BackendUnavailable: If the openvino package is not installed.
    """
    if core is None:
        core = openvino_core()
    devices = []
    for name in core.available_devices:
        try:
            full_name = str(core.get_property(name, "FULL_DEVICE_NAME"))
        except RuntimeError:
            full_name = name
        devices.append((name, full_name))
    return devices


def openvino_core() -> Any:
    """Returns a new ``openvino.Core``.

    Raises:
        BackendUnavailable: If the openvino package is not installed.
    """
    try:
        import openvino
    except ImportError as error:
        raise BackendUnavailable(
            "openvino", missing="the openvino package", hint="pip install 'ubiq[openvino]'"
        ) from error
    return openvino.Core()


# ---------------------------------------------------------------- onnxruntime providers


def tensorrt_version() -> str:
    """Returns the TensorRT version (``tensorrt`` module, else onnxruntime's build info),
    or ``"unknown"``."""
    try:
        import tensorrt

        return str(tensorrt.__version__)
    except ImportError:
        pass
    try:
        import onnxruntime

        info = onnxruntime.get_build_info()
    except (ImportError, AttributeError):
        return "unknown"
    match = re.search(r"tensorrt[-_ ]?version\s*[=:]\s*([\w.]+)", info, re.IGNORECASE)
    return match.group(1) if match else "unknown"


def gpu_name() -> str:
    """Returns the GPU's name: the Jetson board model, else ``nvidia-smi``'s first GPU, else
    ``"unknown-gpu"``."""
    model_file = Path("/proc/device-tree/model")
    if model_file.is_file():
        try:
            return model_file.read_bytes().decode("utf-8", "replace").strip("\x00 \n")
        except OSError:
            pass
    try:
        completed = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown-gpu"
    lines = completed.stdout.strip().splitlines()
    return lines[0].strip() if completed.returncode == 0 and lines else "unknown-gpu"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "unknown"


def engine_cache_dir(
    model_path: str | Path, *, trt_version: str | None = None, device_name: str | None = None
) -> Path:
    """Returns the TensorRT engine cache folder of one model on one GPU and TensorRT.

    ``<ubiq_home>/engines/<sha256[:16]>-trt<version>-<device>``: an engine built for
    another model, TensorRT release or GPU is never reused.
    """
    version = trt_version if trt_version is not None else tensorrt_version()
    device = device_name if device_name is not None else gpu_name()
    key = f"{file_sha256(model_path)[:16]}-trt{_slug(version)}-{_slug(device)}"
    return ubiq_home() / "engines" / key


def onnxruntime_providers(
    device: DeviceSpec,
    model_path: str | Path,
    *,
    trt_version: str | None = None,
    device_name: str | None = None,
) -> list[str | tuple[str, dict]]:
    """Returns the onnxruntime ``providers`` list for a resolved device.

    Args:
        device: A device other than ``auto`` and ``coral``.
        model_path: The model (its hash keys the TensorRT engine cache).
        trt_version: TensorRT version for the cache key (``None``: detect it).
        device_name: GPU name for the cache key (``None``: detect it).

    Raises:
        ConfigError: If the device does not run on onnxruntime.
    """
    if device.kind == "tensorrt":
        cache = engine_cache_dir(model_path, trt_version=trt_version, device_name=device_name)
        options = {
            "trt_fp16_enable": True,
            "trt_int8_enable": False,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
        }
        return [
            ("TensorrtExecutionProvider", options),
            "CUDAExecutionProvider",
            "CPUExecutionProvider",
        ]
    if device.kind == "cuda":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device.kind == "openvino":
        options = {"device_type": device.target or "CPU"}
        if device.precision is not None:
            if device.precision == "bf16":
                raise ConfigError(
                    f"device {device}: onnxruntime's OpenVINO provider takes precision f16 or "
                    "f32; bf16 needs --backend openvino"
                )
            options["precision"] = device.precision.upper().replace("F", "FP")
        return [("OpenVINOExecutionProvider", options), "CPUExecutionProvider"]
    if device.kind == "cpu":
        return ["CPUExecutionProvider"]
    raise ConfigError(
        f"device {device} does not run ONNX models; use one of cpu, cuda, tensorrt, openvino"
    )


def provider_names(providers: Sequence[str | tuple[str, dict]]) -> list[str]:
    """Returns the provider names of a ``providers`` list (dropping their options)."""
    return [p if isinstance(p, str) else p[0] for p in providers]


def require_provider(device: DeviceSpec, available: Sequence[str]) -> None:
    """Raises if the device's execution provider is not built into this onnxruntime.

    Raises:
        BackendUnavailable: Naming the provider and how to get a build that has it.
    """
    provider = PROVIDER_FOR_DEVICE.get(device.kind)
    if provider is None or provider in available:
        return
    raise BackendUnavailable(
        device.kind,
        missing=f"{provider} in this onnxruntime build",
        hint=f"it has {', '.join(available)}; {_PROVIDER_HINTS.get(device.kind, '')}",
    )


def resolve_onnxruntime_auto(available: Sequence[str]) -> tuple[DeviceSpec, str]:
    """Picks tensorrt, cuda, openvino or cpu from the providers built in; returns the device
    and a one-line reason."""
    for kind in AUTO_ORDER:
        if PROVIDER_FOR_DEVICE[kind] in available:
            return DeviceSpec(kind), f"device auto: {kind} ({PROVIDER_FOR_DEVICE[kind]} available)"
    absent = "/".join(PROVIDER_FOR_DEVICE[kind] for kind in AUTO_ORDER)
    return DeviceSpec("cpu"), f"device auto: cpu (no {absent} in this onnxruntime build)"


def session_fallback(
    device: DeviceSpec, requested: Sequence[str | tuple[str, dict]], actual: Sequence[str]
) -> str | None:
    """Compares the providers asked for with those the session loaded.

    Returns:
        ``None`` if the device's provider loaded, else a one-line reason.
    """
    wanted = PROVIDER_FOR_DEVICE.get(device.kind)
    if wanted is None or wanted in actual:
        return None
    return (
        f"{wanted} was requested ({', '.join(provider_names(requested))}) but onnxruntime "
        f"fell back to {', '.join(actual) or 'nothing'}; its libraries (CUDA, cuDNN, "
        "TensorRT) may be missing or mismatched: run with -v to see onnxruntime's log"
    )


# ---------------------------------------------------------------- Coral Edge TPU


def edgetpu_library_name(system: str | None = None) -> str:
    """Returns the libedgetpu file name for ``system`` (``platform.system()`` by default)."""
    system = system or platform.system()
    return {"Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}.get(system, "libedgetpu.so.1")


def import_load_delegate() -> Callable[..., Any]:
    """Returns ``load_delegate`` of ai-edge-litert, else of tflite-runtime.

    Raises:
        BackendUnavailable: If neither runtime is installed.
    """
    try:
        from ai_edge_litert.interpreter import load_delegate
    except ImportError:
        try:
            from tflite_runtime.interpreter import load_delegate
        except ImportError as error:
            raise BackendUnavailable(
                "coral", missing="the ai-edge-litert package", hint="pip install ai-edge-litert"
            ) from error
    return load_delegate


def _quiet_unraisable(unraisable: Any) -> None:
    logger.debug("ignored while loading the Edge TPU delegate: %s", unraisable.exc_value)


def load_edgetpu_delegate(
    device: DeviceSpec, loader: Callable[..., Any] | None = None, *, library: str | None = None
) -> Any:
    """Loads the Edge TPU delegate for ``device``.

    Args:
        device: A ``coral`` device (its bus and index become libedgetpu's ``device``).
        loader: ``load_delegate(library, options)``; ``None`` uses the installed runtime's.
        library: The libedgetpu file name (``None``: this platform's).

    Raises:
        BackendUnavailable: If the library or the Edge TPU is missing. The real loader raises
            ``ValueError("Failed to load delegate from libedgetpu.so.1 ...")`` for both, and
            ai-edge-litert an ``OSError`` when the library itself cannot be opened.
    """
    loader = loader or import_load_delegate()
    library = library or edgetpu_library_name()
    options = {"device": device.edgetpu_device} if device.edgetpu_device else {}
    where = f" on {device.edgetpu_device}" if device.edgetpu_device else ""
    # A half-built Delegate complains from __del__ on stderr; keep that off the user's
    # screen (the one line below says what is wrong).
    saved_hook = sys.unraisablehook
    sys.unraisablehook = _quiet_unraisable
    try:
        return loader(library, options)
    except (ValueError, OSError) as error:
        detail = " ".join(str(error).split())[:200]
        error.__traceback__ = None  # frees the half-built delegate while the hook is quiet
        logger.debug("load_delegate(%r, %r) failed: %s", library, options, detail)
        raise BackendUnavailable(
            "coral", missing=f"{library} or an Edge TPU{where}", hint=_CORAL_HINT
        ) from error
    finally:
        sys.unraisablehook = saved_hook


def check_edgetpu_model(path: str | Path, interpreter: Any) -> None:
    """Checks that a model can run on an Edge TPU.

    Args:
        path: The ``.tflite`` file.
        interpreter: A LiteRT interpreter of ``path`` on the CPU (tensors need not be
            allocated).

    Raises:
        ModelError: If the model is neither an ``_edgetpu.tflite`` file nor fully int8 with
            int8/uint8 inputs, explaining ``edgetpu_compiler``.
    """
    path = Path(path)
    if path.name.lower().endswith("_edgetpu.tflite"):
        return
    import numpy as np

    input_types = sorted({np.dtype(d["dtype"]).name for d in interpreter.get_input_details()})
    float_tensors = [
        d["name"]
        for d in interpreter.get_tensor_details()
        if np.dtype(d["dtype"]).kind == "f" and not _is_output(d, interpreter)
    ]
    if set(input_types) <= {"int8", "uint8"} and not float_tensors:
        logger.warning(
            "%s is fully int8 but not compiled for the Edge TPU: every op runs on the CPU; "
            "compile it with edgetpu_compiler into %s_edgetpu.tflite",
            path.name,
            path.stem,
        )
        return
    raise ModelError(
        f"{path.name} cannot run on a Coral Edge TPU: it needs a fully int8 model "
        f"(inputs are {', '.join(input_types)}, {len(float_tensors)} float tensors) compiled "
        f"by edgetpu_compiler into {path.stem}_edgetpu.tflite; quantize it to full int8 "
        "(TFLite converter with a representative dataset), then run `edgetpu_compiler "
        f"{path.name}` on x86-64 Debian/Ubuntu"
    )


def _is_output(detail: dict, interpreter: Any) -> bool:
    return detail["index"] in {d["index"] for d in interpreter.get_output_details()}


def ops_left_on_cpu(interpreter: Any) -> tuple[int, int] | None:
    """Counts ops an Edge TPU does not run: ``(ops on the CPU, all ops)``.

    Args:
        interpreter: A LiteRT interpreter of the model on the CPU, without delegates.

    Returns:
        ``None`` when this runtime cannot tell (no ``_get_ops_details``).
    """
    get_ops = getattr(interpreter, "_get_ops_details", None)
    if get_ops is None:
        return None
    try:
        ops = get_ops()
    except (ValueError, RuntimeError):
        return None
    on_cpu = sum(1 for op in ops if op.get("op_name") != EDGETPU_OP)
    return on_cpu, len(ops)
