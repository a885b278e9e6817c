"""LiteRT (TensorFlow Lite) backend: ``ai-edge-litert``, or ``tflite_runtime`` as a fallback."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ubiq.errors import BackendUnavailable, ModelError
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
    """Runs a ``.tflite`` file with the LiteRT interpreter on the CPU.

    Raises:
        BackendUnavailable: If no LiteRT runtime is installed.
        ModelError: If the file is corrupt, truncated or not a TFLite flatbuffer.
    """

    name = "litert"

    def __init__(
        self,
        path: str | Path,
        *,
        num_threads: int | None = None,
        experimental_delegates: list | None = None,
    ) -> None:
        interpreter_class = import_interpreter()
        self.path = Path(path)
        native_lines: list[str] = []
        try:
            with native_stderr_captured(native_lines):
                self.interpreter = interpreter_class(
                    model_path=str(path),
                    num_threads=num_threads,
                    experimental_delegates=experimental_delegates,
                )
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
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
        self.metadata: dict[str, str] = {}

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Sets the inputs, invokes the interpreter and returns copies of the outputs."""
        try:
            for name, value in feeds.items():
                self.interpreter.set_tensor(self._input_index[name], value)
            self.interpreter.invoke()
        except (ValueError, RuntimeError) as error:
            raise ModelError(f"{self.path.name} failed to run: {error}") from error
        return {name: self.interpreter.get_tensor(index) for name, index in self._output_index}
