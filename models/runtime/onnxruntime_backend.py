"""ONNX Runtime backend."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ubiq.errors import BackendUnavailable, ModelError
from ubiq.hardware.accelerators import (
    PROVIDER_FOR_DEVICE,
    DeviceSpec,
    onnxruntime_providers,
    parse_device,
    provider_names,
    require_provider,
    resolve_onnxruntime_auto,
    session_fallback,
)
from ubiq.models.runtime.backend import TensorInfo

logger = logging.getLogger(__name__)

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


@dataclass(frozen=True)
class OnnxRuntimeOptions:
    """Session options.

    Attributes:
        providers: Execution providers in order of preference (``None``: CPU only).
        num_threads: Intra-op threads (``None``: onnxruntime's default).
        graph_optimization: ``"all"``, ``"extended"``, ``"basic"`` or ``"disabled"``.
    """

    providers: tuple[str | tuple[str, dict], ...] | None = None
    num_threads: int | None = None
    graph_optimization: str = "all"


def _shape(shape: list) -> tuple[int, ...]:
    return tuple(int(v) if isinstance(v, int) else -1 for v in shape)


def _make_engine_cache(providers: list) -> None:
    """Creates the TensorRT engine cache folder a provider list names, if any."""
    for provider in providers:
        if isinstance(provider, tuple) and "trt_engine_cache_path" in provider[1]:
            Path(provider[1]["trt_engine_cache_path"]).mkdir(parents=True, exist_ok=True)


class OnnxRuntimeBackend:
    """Runs an ``.onnx`` file with onnxruntime on the CPU, CUDA, TensorRT or OpenVINO.

    Args:
        path: The model file.
        num_threads: Intra-op threads (``None``: onnxruntime's default).
        options: Session options; explicit ``providers`` there override ``device``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"tensorrt"``, ``"openvino"`` or a
            :class:`~ubiq.hardware.accelerators.DeviceSpec`.
        streams: Frames the caller will run at once from as many threads (files, where the
            next frames are known ahead). On the CPU the session then gets one intra-op
            thread unless ``num_threads`` says otherwise, so each call keeps a core to
            itself; elsewhere (CUDA, TensorRT) it stays 1.

    Attributes:
        device: The device that was resolved (``"cpu"`` when ``auto`` found nothing else).
        device_reason: One line on why ``auto`` chose it (empty for an explicit device).
        fallback_reason: Set when onnxruntime silently fell back (``auto`` only).
        streams: How many ``run`` calls may usefully be in flight at once (1: one at a time).

    Raises:
        BackendUnavailable: If onnxruntime is not installed, the device's execution provider
            is not built in, or an explicitly requested provider fell back to another.
        ModelError: If the file is corrupt, truncated or not ONNX.
    """

    name = "onnxruntime"
    supports_streams = True

    def __init__(
        self,
        path: str | Path,
        *,
        num_threads: int | None = None,
        options: OnnxRuntimeOptions | None = None,
        device: str | DeviceSpec = "cpu",
        streams: int = 1,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as error:
            raise BackendUnavailable(
                "onnxruntime", missing="the onnxruntime package", hint="pip install onnxruntime"
            ) from error
        options = options or OnnxRuntimeOptions(num_threads=num_threads)
        session_options = ort.SessionOptions()
        threads = options.num_threads if options.num_threads is not None else num_threads
        if threads:
            session_options.intra_op_num_threads = threads
            session_options.inter_op_num_threads = 1
        levels = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        }
        session_options.graph_optimization_level = levels[options.graph_optimization]
        session_options.log_severity_level = 3
        self.path = Path(path)
        spec = parse_device(device)
        self.explicit_device = spec.explicit
        self.device_reason = ""
        self.fallback_reason: str | None = None
        if options.providers:
            providers = list(options.providers)
            spec = DeviceSpec("cpu") if spec.kind == "auto" else spec
        else:
            available = list(ort.get_available_providers())
            if spec.kind == "auto":
                spec, self.device_reason = resolve_onnxruntime_auto(available)
                logger.info("%s", self.device_reason)
            require_provider(spec, available)
            providers = ["CPUExecutionProvider"]
            if self.path.is_file():
                providers = onnxruntime_providers(spec, self.path)
                _make_engine_cache(providers)
        self.device = spec.kind
        self.streams = 1
        if streams > 1 and self.device == "cpu" and not options.providers:
            self.streams = int(streams)
            # One core per frame in flight: calls then never wait on each other's workers.
            session_options.intra_op_num_threads = threads or 1
            session_options.inter_op_num_threads = 1
        if spec.kind != "cpu" and logger.isEnabledFor(logging.INFO):
            session_options.log_severity_level = 2  # -v: show why a provider did not load
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=session_options, providers=providers
            )
        except Exception as error:  # noqa: BLE001 - onnxruntime raises many private types
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            if spec.kind != "cpu":
                raise ModelError(
                    f"cannot load {path} on {spec.kind} (providers "
                    f"{', '.join(provider_names(providers))}): {first_line[:200]}; "
                    "try device cpu to tell a model fault from a device fault"
                ) from error
            raise ModelError(
                f"cannot load {path}: not a valid ONNX model (corrupt or truncated?): "
                f"{first_line[:200]}"
            ) from error
        self.providers = tuple(self.session.get_providers())
        self._check_fallback(spec, providers)
        self.inputs = [
            TensorInfo(i.name, _shape(i.shape), _ORT_TYPES.get(i.type, i.type))
            for i in self.session.get_inputs()
        ]
        self.outputs = [
            TensorInfo(o.name, _shape(o.shape), _ORT_TYPES.get(o.type, o.type))
            for o in self.session.get_outputs()
        ]
        self._output_names = [o.name for o in self.outputs]
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    def _check_fallback(self, spec: DeviceSpec, providers: list) -> None:
        """Reports a provider that was asked for but did not load.

        Raises:
            BackendUnavailable: If the device was requested explicitly.
        """
        reason = session_fallback(spec, providers, self.providers)
        if reason is None:
            return
        if self.explicit_device:
            raise BackendUnavailable(
                spec.kind, missing=f"a working {PROVIDER_FOR_DEVICE[spec.kind]}", hint=reason
            )
        self.fallback_reason = reason
        self.device = self.providers[0].removesuffix("ExecutionProvider").lower()
        logger.warning("device %s: %s", spec, reason)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs the session; returns outputs by name.

        Raises:
            ModelError: If onnxruntime rejects the inputs or fails inside the graph.
        """
        try:
            results = self.session.run(self._output_names, feeds)
        except Exception as error:  # noqa: BLE001 - onnxruntime raises many private types
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise ModelError(f"{self.path.name} failed to run: {first_line[:300]}") from error
        return dict(zip(self._output_names, results))
