"""ONNX Runtime backend."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ubiq.errors import BackendUnavailable, ModelError
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


class OnnxRuntimeBackend:
    """Runs an ``.onnx`` file with onnxruntime.

    Raises:
        BackendUnavailable: If onnxruntime is not installed.
        ModelError: If the file is corrupt, truncated or not ONNX.
    """

    name = "onnxruntime"

    def __init__(
        self,
        path: str | Path,
        *,
        num_threads: int | None = None,
        options: OnnxRuntimeOptions | None = None,
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
        providers = list(options.providers or ["CPUExecutionProvider"])
        self.path = Path(path)
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=session_options, providers=providers
            )
        except Exception as error:  # noqa: BLE001 - onnxruntime raises many private types
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise ModelError(
                f"cannot load {path}: not a valid ONNX model (corrupt or truncated?): "
                f"{first_line[:200]}"
            ) from error
        self.providers = tuple(self.session.get_providers())
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
