"""OpenVINO backend: ONNX files and OpenVINO IR (``.xml`` + ``.bin``) on CPU, GPU, NPU or AUTO.

Chosen with ``--backend openvino`` or a device such as ``openvino:CPU`` (see
:mod:`ubiq.hardware.accelerators`). The model is compiled with the ``LATENCY`` performance
hint (one camera, one frame in flight) and a model cache under ``$UBIQ_HOME/openvino``, so a
second start imports the compiled blob instead of compiling again. The precision is
OpenVINO's default for the device (``bf16`` on a CPU with AVX-512 BF16 or AMX, ``f32`` on
an AVX2 CPU, ``f16`` on a GPU or NPU) unless the device names one (``openvino:CPU:f32``);
``device`` and ``device_reason`` say which was used.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ubiq.errors import BackendUnavailable, ConfigError, ModelError
from ubiq.hardware.accelerators import DeviceSpec, openvino_core, openvino_devices, parse_device
from ubiq.models.runtime.backend import TensorInfo
from ubiq.models.runtime.litert_backend import native_stderr_captured
from ubiq.paths import ubiq_home

logger = logging.getLogger(__name__)

SUFFIXES = (".onnx", ".xml")
PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT")
# Metadata keys OpenVINO keeps from an ONNX file (``metadata_props``) under this rt_info key.
_FRAMEWORK_INFO = "framework"


@dataclass(frozen=True)
class OpenVinoOptions:
    """Compile options.

    Attributes:
        performance_hint: ``"LATENCY"`` (one request, the fewest ms per frame) or
            ``"THROUGHPUT"`` (streams for several requests in flight).
        cache: Keep compiled models under ``$UBIQ_HOME/openvino/cache`` (``CACHE_DIR``).
        extra_config: Other OpenVINO properties, passed as they are (for example
            ``{"ENABLE_CPU_PINNING": "NO"}``).
    """

    performance_hint: str = "LATENCY"
    cache: bool = True
    extra_config: tuple[tuple[str, str], ...] = ()


def cache_dir() -> Path:
    """The OpenVINO model cache: ``$UBIQ_HOME/openvino/cache``."""
    return ubiq_home() / "openvino" / "cache"


def _metadata_cache_path(path: Path) -> Path:
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    import hashlib

    return ubiq_home() / "openvino" / "metadata" / f"{hashlib.sha1(key.encode()).hexdigest()}.json"


# oneDNN ISA limits with no bf16 compute (``ONEDNN_MAX_CPU_ISA``), such as an AVX2 profile.
_NO_BF16_ISAS = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI")


def _isa_without_bf16() -> str:
    """The ``ONEDNN_MAX_CPU_ISA`` value when it rules out bf16 kernels, else ``""``."""
    import os

    value = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    return value if value in _NO_BF16_ISAS else ""


def _first_error_line(error: Exception) -> str:
    """The line of an OpenVINO exception that says what went wrong (not ``Exception from``)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith("Exception from")]
    return (useful or lines or [type(error).__name__])[0][:240]


def _any_to_text(value: Any) -> str:
    try:
        return str(value.astype(str))
    except (AttributeError, RuntimeError, TypeError):
        return str(value)


def read_metadata(model: Any) -> dict[str, str]:
    """Returns the ONNX ``metadata_props`` that OpenVINO kept in a model's rt_info.

    Works for a model read from ONNX and for IR saved from one (``save_model`` keeps them).
    """
    if not model.has_rt_info([_FRAMEWORK_INFO]):
        return {}
    framework = model.get_rt_info()[_FRAMEWORK_INFO]
    items = framework.items() if isinstance(framework, dict) else []
    return {str(key): _any_to_text(value) for key, value in items}


def _shape(port: Any) -> tuple[int, ...]:
    return tuple(
        dimension.get_length() if dimension.is_static else -1
        for dimension in port.get_partial_shape()
    )


def _tensor_info(port: Any) -> TensorInfo:
    try:
        dtype = np.dtype(port.get_element_type().to_dtype()).name
    except (RuntimeError, TypeError):
        dtype = str(port.get_element_type())
    return TensorInfo(port.get_any_name(), _shape(port), dtype)


class OpenVinoBackend:
    """Runs an ``.onnx`` file or an OpenVINO IR ``.xml`` (with its ``.bin``) with OpenVINO.

    Args:
        path: The model file.
        num_threads: CPU inference threads (``INFERENCE_NUM_THREADS``; ``None``: OpenVINO's
            default).
        device: ``"auto"`` or ``"cpu"`` (OpenVINO's CPU), ``"openvino"`` (CPU) or
            ``"openvino:TARGET[:PRECISION]"`` (``CPU``, ``GPU``, ``GPU.N``, ``NPU``, ``AUTO``),
            or a :class:`~ubiq.hardware.accelerators.DeviceSpec`.
        options: Compile options.
        streams: Frames the caller will run at once from as many threads (files, where the
            next frames are known ahead): more than 1 compiles with the ``THROUGHPUT`` hint
            and keeps a pool of infer requests, so ``run`` may be called concurrently.

    Attributes:
        device: The device and precision that run the model, e.g. ``"CPU bf16"``.
        device_reason: One line: why this device and precision (shown by ``ubiq detect``).
        target: The OpenVINO device name the model was compiled for (``"CPU"``, ``"NPU"``).
        precision: The inference precision in use (``"bf16"``, ``"f16"``, ``"f32"``), or
            ``"default"`` when the device does not report it.
        compile_ms: Milliseconds to compile (or import from the cache) the model.
        streams: How many ``run`` calls may be in flight at once (the number of infer
            requests: OpenVINO's optimal number for the hint, at most ``streams``).

    Raises:
        BackendUnavailable: If openvino is not installed, or the device is not on this machine
            (the message names the devices that are).
        ConfigError: If the device is not an OpenVINO one, or an option is unknown.
        ModelError: If the file is missing, corrupt, truncated, an IR without its ``.bin``, or
            not a format this backend reads.
    """

    name = "openvino"
    supports_streams = True

    def __init__(
        self,
        path: str | Path,
        *,
        num_threads: int | None = None,
        device: str | DeviceSpec = "auto",
        options: OpenVinoOptions | None = None,
        streams: int = 1,
    ) -> None:
        import queue
        import time

        options = options or OpenVinoOptions()
        if options.performance_hint not in PERFORMANCE_HINTS:
            raise ConfigError(
                f"performance_hint must be one of {', '.join(PERFORMANCE_HINTS)}, "
                f"got {options.performance_hint!r}"
            )
        self.path = Path(path)
        spec = parse_device(device)
        if spec.kind not in ("auto", "cpu", "openvino"):
            raise ConfigError(
                f"device {spec} runs on onnxruntime or litert, not on --backend openvino: use "
                "device cpu or openvino:CPU|GPU|NPU|AUTO"
            )
        self._check_file()
        core = openvino_core()
        import openvino

        self.version = openvino.__version__.split("-")[0]
        self.target = spec.target or "CPU"
        self._check_target(core, spec)
        hint = "THROUGHPUT" if streams > 1 else options.performance_hint
        config = {"PERFORMANCE_HINT": hint}
        if streams > 1:
            config["PERFORMANCE_HINT_NUM_REQUESTS"] = int(streams)
        limited = _isa_without_bf16() if spec.precision is None and self.target == "CPU" else ""
        if spec.precision is not None:
            config["INFERENCE_PRECISION_HINT"] = spec.precision
        elif limited:  # the CPU plugin would still pick bf16 from the CPU's flags
            config["INFERENCE_PRECISION_HINT"] = "f32"
        if num_threads is not None and self.target == "CPU":
            config["INFERENCE_NUM_THREADS"] = int(num_threads)
        if options.cache:
            cache_dir().mkdir(parents=True, exist_ok=True)
            config["CACHE_DIR"] = str(cache_dir())
        config.update(dict(options.extra_config))
        started = time.perf_counter()
        self.metadata = self._metadata(core)
        self.compiled, fell_back = self._compile(core, config, spec)
        self.compile_ms = (time.perf_counter() - started) * 1e3
        self.streams = 1
        if streams > 1:
            try:
                optimal = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            except RuntimeError:
                optimal = streams
            self.streams = max(1, min(int(streams), optimal))
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(self.streams):
            self._requests.put(self.compiled.create_infer_request())
        self.inputs = [_tensor_info(port) for port in self.compiled.inputs]
        self.outputs = [_tensor_info(port) for port in self.compiled.outputs]
        self._output_ports = list(self.compiled.outputs)
        self.precision = self._read_precision()
        self.device = f"{self._execution_devices()} {self.precision}"
        chosen = "requested" if spec.precision else "OpenVINO's default here"
        if limited:
            chosen = f"ONEDNN_MAX_CPU_ISA={limited} leaves no bf16 kernels, so f32"
        if fell_back:
            chosen = f"OpenVINO's default failed to compile here ({fell_back}), so f32"
        why = f"{self.device} ({chosen}, {hint} hint)"
        self.device_reason = f"device auto: {why}" if spec.kind == "auto" else why
        self.fallback_reason: str | None = None

    def _compile(self, core: Any, config: dict, spec: DeviceSpec) -> tuple[Any, str]:
        """Compiles the model; returns it and, when OpenVINO's default precision failed to
        compile on the CPU and f32 was used instead, why (else ``""``).

        The CPU plugin picks bf16 from the CPU's flags; with oneDNN's ISA limited below
        them (``ONEDNN_MAX_CPU_ISA=AVX2``, a profile of an AVX2-only machine) that choice
        cannot compile, while f32 can.
        """
        native_lines: list[str] = []
        try:
            with native_stderr_captured(native_lines):
                return core.compile_model(str(self.path), self.target, config), ""
        except RuntimeError as error:
            failure = _first_error_line(error)
            if spec.precision is None and self.target == "CPU":
                retry = {**config, "INFERENCE_PRECISION_HINT": "f32"}
                try:
                    with native_stderr_captured(native_lines):
                        compiled = core.compile_model(str(self.path), self.target, retry)
                except RuntimeError:
                    pass
                else:
                    logger.warning(
                        "OpenVINO's default precision failed to compile (%s); using f32", failure
                    )
                    return compiled, failure
            raise ModelError(
                f"cannot load {self.path} with OpenVINO {self.version} on {self.target}: {failure}"
            ) from error

    def _check_file(self) -> None:
        suffix = self.path.suffix.lower()
        if suffix not in SUFFIXES:
            raise ModelError(
                f"{self.path.name}: the openvino backend reads .onnx and OpenVINO IR .xml "
                f"(+ .bin) files, got {suffix or '(no suffix)'!r}"
            )
        if not self.path.is_file():
            raise ModelError(f"model file not found: {self.path}")
        weights = self.path.with_suffix(".bin")
        if suffix == ".xml" and not weights.is_file():
            raise ModelError(
                f"OpenVINO IR {self.path.name} needs its weights {weights.name} beside it: "
                "not found"
            )

    def _check_target(self, core: Any, spec: DeviceSpec) -> None:
        """Raises if the OpenVINO device is not on this machine, naming those that are."""
        if self.target == "AUTO":
            return
        devices = openvino_devices(core)
        names = [name for name, _ in devices]
        family = self.target.split(".")[0]
        if self.target in names or (
            self.target == family and any(name.split(".")[0] == family for name in names)
        ):
            return
        present = ", ".join(f"{name} ({full})" for name, full in devices) or "none"
        raise BackendUnavailable(
            str(spec),
            missing=f"an OpenVINO {self.target} device",
            hint=f"OpenVINO {self.version} sees {present}; use --device openvino:"
            f"{names[0] if names else 'CPU'} or install the {family} driver",
        )

    def _metadata(self, core: Any) -> dict[str, str]:
        """The model's metadata, from a small cache keyed by file, size and mtime (reading a
        model costs as much as importing it compiled)."""
        cached = _metadata_cache_path(self.path)
        if cached.is_file():
            try:
                return dict(json.loads(cached.read_text()))
            except (OSError, ValueError):
                logger.debug("ignoring unreadable metadata cache %s", cached)
        native_lines: list[str] = []
        try:
            with native_stderr_captured(native_lines):
                model = core.read_model(str(self.path))
        except RuntimeError as error:
            unconverted = re.search(r"Conversion is failed for: ([^\n]+)", str(error))
            if unconverted:  # a valid file with operations OpenVINO's reader cannot convert
                raise ModelError(
                    f"cannot load {self.path} on OpenVINO: it cannot convert its operations "
                    f"{unconverted.group(1).strip()} (it reads int8 ONNX models in QDQ form, not "
                    "QOperator's QLinear* operations)"
                ) from error
            kind = "OpenVINO IR pair" if self.path.suffix.lower() == ".xml" else "ONNX model"
            raise ModelError(
                f"cannot load {self.path}: not a valid {kind} (corrupt or truncated?): "
                f"{_first_error_line(error)}"
            ) from error
        metadata = read_metadata(model)
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            cached.write_text(json.dumps(metadata))
        except OSError as error:
            logger.debug("cannot write metadata cache %s: %s", cached, error)
        return metadata

    def _read_precision(self) -> str:
        try:
            value = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        except RuntimeError:
            return "default"
        name = value.get_type_name() if hasattr(value, "get_type_name") else str(value)
        return {"bfloat16": "bf16", "float16": "f16", "float32": "f32"}.get(name, name)

    def _execution_devices(self) -> str:
        try:
            devices = list(self.compiled.get_property("EXECUTION_DEVICES"))
        except RuntimeError:
            return self.target
        text = ",".join(str(d) for d in devices) or self.target
        return text if self.target != "AUTO" else f"AUTO({text})"

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs one inference request (a free one of the pool, so up to ``streams`` threads
        may call this at once); returns outputs by name.

        Raises:
            ModelError: If OpenVINO rejects the inputs or fails inside the graph.
        """
        request = self._requests.get()
        try:
            results = request.infer(feeds, share_inputs=True, share_outputs=False)
        except (RuntimeError, TypeError, ValueError) as error:
            raise ModelError(
                f"{self.path.name} failed to run on OpenVINO: {_first_error_line(error)}"
            ) from error
        finally:
            self._requests.put(request)
        return {
            info.name: results[port]
            for info, port in zip(self.outputs, self._output_ports, strict=True)
        }
