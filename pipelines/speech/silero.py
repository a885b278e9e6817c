"""Silero VAD v5 in ONNX: the speech probability of each 32 ms frame of a 16 kHz stream.

The model file comes from the installed ``silero-vad`` package (installed with
``--no-deps``, so torch is not pulled in) and runs on onnxruntime; the package itself is
never imported. :class:`ubiq.pipelines.speech.vad.VadSegmenter` turns the probabilities
into speech segments.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np

from ubiq.errors import BackendUnavailable, ModelError

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
FRAME_SAMPLES = 512
"""Samples per frame at 16 kHz (32 ms), the only frame size Silero VAD v5 accepts."""
CONTEXT_SAMPLES = 64
"""Samples of the previous frame prepended to each frame (Silero VAD v5 and later)."""
_STATE_SHAPE = (2, 1, 128)
_HINT = "pip install --no-deps silero-vad"


def find_silero_model() -> Path:
    """Locates ``silero_vad.onnx`` in the installed ``silero-vad`` package (never imports it).

    Returns:
        The path of ``silero_vad/data/silero_vad.onnx``.

    Raises:
        BackendUnavailable: The package or its model file is missing.
    """
    try:
        spec = importlib.util.find_spec("silero_vad")
    except (ImportError, ValueError):
        spec = None
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / "data" / "silero_vad.onnx"
        if path.is_file():
            return path
    missing = "the silero-vad package" if spec is None else "silero_vad/data/silero_vad.onnx"
    raise BackendUnavailable("silero-vad", missing=missing, hint=_HINT)


class SileroVad:
    """Speech probability of each 32 ms frame of a 16 kHz stream, by Silero VAD v5 in ONNX.

    Args:
        model_path: The ``.onnx`` file (``None``: :func:`find_silero_model`).
        threads: onnxruntime intra-op threads.

    Raises:
        BackendUnavailable: onnxruntime or the silero-vad package is missing.
        ModelError: The file is missing, corrupt, or not a Silero VAD v5 model.
        ValueError: For ``threads`` < 1.
    """

    def __init__(self, model_path: str | Path | None = None, *, threads: int = 1) -> None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive int, got {threads!r}")
        try:
            import onnxruntime as ort
        except ImportError as error:
            raise BackendUnavailable(
                "onnxruntime", missing="the onnxruntime package", hint="pip install onnxruntime"
            ) from error
        path = find_silero_model() if model_path is None else Path(model_path).expanduser()
        if not path.is_file():
            raise ModelError(f"Silero VAD model not found: {path}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises several unrelated types
            raise ModelError(f"cannot load Silero VAD model {path}: {error}") from error
        inputs = {tensor.name for tensor in self._session.get_inputs()}
        if inputs != {"input", "state", "sr"}:
            raise ModelError(
                f"{path} is not a Silero VAD v5 model: inputs must be input, state, sr, "
                f"got {', '.join(sorted(inputs))}"
            )
        self.model_path = path
        self.threads = threads
        self._sample_rate = np.array(SAMPLE_RATE, np.int64)
        self.reset()

    def reset(self) -> None:
        """Forgets the stream: zero recurrent state and zero context."""
        self._state = np.zeros(_STATE_SHAPE, np.float32)
        self._context = np.zeros(CONTEXT_SAMPLES, np.float32)

    def probability(self, chunk: np.ndarray) -> float:
        """Speech probability of the next frame of the stream.

        Args:
            chunk: ``(512,)`` float32 samples in ``[-1, 1]`` at 16 kHz, following the
                previous call's frame.

        Returns:
            The probability, in ``[0, 1]``.

        Raises:
            ValueError: For a frame that is not 512 samples.
        """
        chunk = np.asarray(chunk, np.float32)
        if chunk.shape != (FRAME_SAMPLES,):
            raise ValueError(f"chunk must have shape ({FRAME_SAMPLES},), got {chunk.shape}")
        frame = np.concatenate([self._context, chunk])[None, :]
        output, state = self._session.run(
            None, {"input": frame, "state": self._state, "sr": self._sample_rate}
        )
        self._state = state
        self._context = frame[0, -CONTEXT_SAMPLES:]
        return float(output.reshape(-1)[0])
