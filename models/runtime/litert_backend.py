"""LiteRT (TensorFlow Lite) backend: ``ai-edge-litert``, or ``tflite_runtime`` as a fallback."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ubiq.errors import BackendUnavailable, ConfigError, ModelError
from ubiq.hardware.accelerators import (
    DeviceSpec,
    check_edgetpu_model,
    load_edgetpu_delegate,
    ops_left_on_cpu,
    parse_device,
)
from ubiq.models.runtime.backend import TensorInfo

logger = logging.getLogger(__name__)


def import_interpreter() -> Any:
    """Returns the ``Interpreter`` class of the installed LiteRT runtime.

    Raises:
        BackendUnavailable: If neither ai-edge-litert nor tflite-runtime is installed.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError as error:
            raise BackendUnavailable(
                "litert",
                missing="the ai-edge-litert package",
                hint="pip install ai-edge-litert",
            ) from error
    return Interpreter


@contextlib.contextmanager
def native_stderr_captured(lines: list[str]) -> Iterator[None]:
    """Collects what native code writes to file descriptor 2 into ``lines``.

    The TFLite runtime prints ``INFO: Created TensorFlow Lite XNNPACK delegate`` and its
    load errors straight to the C stderr; ubiq keeps its stderr to one line per error.
    """
    with tempfile.TemporaryFile(mode="w+b") as capture:
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", "replace")
            lines.extend(line for line in text.splitlines() if line.strip())


class LiteRTBackend:
    """Runs a ``.tflite`` file with the LiteRT interpreter on the CPU or a Coral Edge TPU.

    Args:
        path: The model file.
        num_threads: Interpreter threads (``None``: the runtime's default).
        experimental_delegates: Delegates to hand the interpreter as they are.
        device: ``"auto"``, ``"cpu"``, ``"coral[:usb|usb:N|pci|pci:N]"`` or a
            :class:`~ubiq.hardware.accelerators.DeviceSpec`. ``auto`` uses an Edge TPU for
            ``_edgetpu.tflite`` files when one answers, else the CPU.
        delegate_loader: ``load_delegate(library, options)``; ``None`` uses the runtime's.
        streams: Frames the caller will run at once from as many threads (files): on the
            CPU, that many interpreters (one thread each unless ``num_threads`` says
            otherwise), each used by one call at a time; with an Edge TPU or delegates, 1.

    Attributes:
        device: ``"coral"`` or ``"cpu"``.
        device_reason: One line on why ``auto`` chose it (empty for an explicit device).
        ops_on_cpu: ``(ops left on the CPU, all ops)`` with an Edge TPU, ``None`` when
            unknown.
        streams: How many ``run`` calls may be in flight at once (interpreters).

    Raises:
        BackendUnavailable: If no LiteRT runtime is installed, or ``coral`` was asked for and
            libedgetpu or the Edge TPU is missing.
        ConfigError: If ``device`` is an onnxruntime device.
        ModelError: If the file is corrupt, truncated or not a TFLite flatbuffer, or ``coral``
            was asked for a model that is not int8 / Edge TPU compiled.
    """

    name = "litert"
    supports_streams = True

    def __init__(
        self,
        path: str | Path,
        *,
        num_threads: int | None = None,
        experimental_delegates: list | None = None,
        device: str | DeviceSpec = "cpu",
        delegate_loader: Callable[..., Any] | None = None,
        streams: int = 1,
    ) -> None:
        import queue

        interpreter_class = import_interpreter()
        self.path = Path(path)
        spec = parse_device(device)
        if spec.kind not in ("auto", "cpu", "coral"):
            raise ConfigError(
                f"device {spec} runs ONNX models on onnxruntime, but {self.path.name} is a "
                "TFLite model: use device cpu or coral, or an .onnx model"
            )
        self.device = "cpu"
        self.device_reason = ""
        self.fallback_reason: str | None = None
        self.ops_on_cpu: tuple[int, int] | None = None
        delegates = list(experimental_delegates or [])
        edgetpu_file = self.path.name.lower().endswith("_edgetpu.tflite")
        if spec.kind == "coral" or (spec.kind == "auto" and edgetpu_file):
            delegate = self._edgetpu_delegate(interpreter_class, spec, delegate_loader)
            if delegate is not None:
                delegates.append(delegate)
                self.device = "coral"
        elif spec.kind == "auto":
            self.device_reason = (
                "device auto: cpu (a TFLite model; the Edge TPU runs _edgetpu.tflite files)"
            )
            logger.info("%s", self.device_reason)
        self.streams = 1 if delegates or self.device != "cpu" else max(1, int(streams))
        if self.streams > 1 and num_threads is None:
            num_threads = 1  # one core per frame in flight
        native_lines: list[str] = []
        try:
            with native_stderr_captured(native_lines):
                interpreters = []
                for _ in range(self.streams):
                    interpreter = interpreter_class(
                        model_path=str(path),
                        num_threads=num_threads,
                        experimental_delegates=delegates or None,
                    )
                    interpreter.allocate_tensors()
                    interpreters.append(interpreter)
                self.interpreter = interpreters[0]
        except (ValueError, RuntimeError) as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            if edgetpu_file and self.device == "cpu":
                raise ModelError(
                    f"{self.path.name} is compiled for the Edge TPU and cannot run on the CPU "
                    f"({self.device_reason}): {first_line[:200]}"
                ) from error
            raise ModelError(
                f"cannot load {path}: not a valid TFLite model (corrupt or truncated?): "
                f"{first_line[:200]}"
            ) from error
        for line in native_lines:
            if not line.startswith("INFO:"):
                logger.warning("litert: %s", line)
        input_details = self.interpreter.get_input_details()
        output_details = self.interpreter.get_output_details()
        self.inputs = [
            TensorInfo(d["name"], tuple(int(v) for v in d["shape"]), np.dtype(d["dtype"]).name)
            for d in input_details
        ]
        self.outputs = [
            TensorInfo(d["name"], tuple(int(v) for v in d["shape"]), np.dtype(d["dtype"]).name)
            for d in output_details
        ]
        self.input_quantization = {
            d["name"]: tuple(d.get("quantization", (0.0, 0))) for d in input_details
        }
        self._input_index = {d["name"]: d["index"] for d in input_details}
        self._output_index = [(d["name"], d["index"]) for d in output_details]
        # Full-integer models (the Coral form) give int8/uint8 outputs: decoders get them
        # dequantized, ``(q - zero_point) * scale``, so they see the same values as float.
        self._output_dequantize = {
            d["name"]: (float(d["quantization"][0]), int(d["quantization"][1]))
            for d in output_details
            if np.dtype(d["dtype"]).kind in "iu" and d.get("quantization", (0.0, 0))[0]
        }
        self.metadata: dict[str, str] = {}
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        for interpreter in interpreters:
            self._free.put(interpreter)

    def _edgetpu_delegate(
        self, interpreter_class: Any, spec: DeviceSpec, loader: Callable[..., Any] | None
    ) -> Any:
        """Checks the model, loads the Edge TPU delegate and reports ops left on the CPU.

        Returns:
            The delegate, or ``None`` when ``auto`` found no Edge TPU.

        Raises:
            ModelError: If ``coral`` was asked for a model an Edge TPU cannot run.
            BackendUnavailable: If ``coral`` was asked for and no Edge TPU answers.
        """
        try:
            inspector = interpreter_class(model_path=str(self.path))
        except (ValueError, RuntimeError) as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise ModelError(
                f"cannot load {self.path}: not a valid TFLite model (corrupt or truncated?): "
                f"{first_line[:200]}"
            ) from error
        if spec.kind == "coral":
            check_edgetpu_model(self.path, inspector)
        coral = spec if spec.kind == "coral" else DeviceSpec("coral")
        try:
            delegate = load_edgetpu_delegate(coral, loader)
        except BackendUnavailable as error:
            if spec.explicit:
                raise
            self.device_reason = f"device auto: cpu (no Edge TPU: {error.missing} is missing)"
            logger.info("%s", self.device_reason)
            return None
        if not spec.explicit:
            self.device_reason = "device auto: coral (Edge TPU delegate loaded)"
            logger.info("%s", self.device_reason)
        self.ops_on_cpu = ops_left_on_cpu(inspector)
        if self.ops_on_cpu is None:
            logger.info("coral: this LiteRT runtime cannot tell which ops run on the CPU")
        elif self.ops_on_cpu[0]:
            logger.warning(
                "coral: %d of %d ops of %s run on the CPU (edgetpu_compiler did not map them)",
                *self.ops_on_cpu,
                self.path.name,
            )
        return delegate

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Sets the inputs, invokes the interpreter and returns copies of the outputs.

        Integer outputs with quantization parameters come back dequantized to float32. With
        several streams, each call takes a free interpreter, so up to ``streams`` threads
        may call this at once.
        """
        interpreter = self._free.get()
        try:
            try:
                for name, value in feeds.items():
                    interpreter.set_tensor(self._input_index[name], value)
                interpreter.invoke()
            except (ValueError, RuntimeError) as error:
                raise ModelError(f"{self.path.name} failed to run: {error}") from error
            outputs = {}
            for name, index in self._output_index:
                value = interpreter.get_tensor(index)
                if name in self._output_dequantize:
                    scale, zero_point = self._output_dequantize[name]
                    value = (value.astype(np.float32) - zero_point) * scale
                outputs[name] = value
            return outputs
        finally:
            self._free.put(interpreter)
