"""Stages: the steps of a pipeline. A stage takes a :class:`~ubiq.types.FrameResult`,
adds what it finds (detections, track ids, masks, events) and returns it.

A stage is any callable ``stage(result) -> result``. It may also have:

- ``name``: how the summary and ``result.prepared`` call it (default: the class or
  function name in lower case);
- ``prepare(frame) -> object``: work that needs only the frame (resize, normalise). The
  runner calls it one frame ahead on a thread of its own for files, and puts what it
  returns in ``result.prepared[name]``; a stage must also work when it is absent (live
  sources prepare in the loop, so a frame never waits in a queue behind a newer one);
- ``in_flight``: how many frames the stage can work on at once (the runner then
  prepares that many ahead);
- ``close()``: release what the stage holds (called once when the run ends).

A model stage whose backend takes several frames at once (``backend.streams`` > 1, see
:func:`~ubiq.models.runtime.backend.choose_streams`) starts each frame's inference and
decoding in ``prepare`` on a small pool of threads, and takes the results in order in the
loop: the frames of a file are then inferred and decoded side by side, one per core, while
the loop tracks, draws and writes the ones before.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol, runtime_checkable

from ubiq.errors import ConfigError
from ubiq.types import Detections, Frame, FrameResult


@runtime_checkable
class Stage(Protocol):
    """One step of a pipeline: ``result in -> result out``."""

    def __call__(self, result: FrameResult) -> FrameResult: ...


def stage_name(stage: Any) -> str:
    """Returns the stage's ``name``, else its function or class name in lower case."""
    name = getattr(stage, "name", None)
    if isinstance(name, str) and name:
        return name
    name = getattr(stage, "__name__", None) or type(stage).__name__
    return str(name).lower()


def named_stages(stages: Sequence[Any]) -> list[tuple[str, Any]]:
    """Pairs each stage with a unique name (``detect``, ``detect-2``, ...).

    Raises:
        ConfigError: If a stage is not callable or the list is not a sequence.
    """
    if callable(stages) and not isinstance(stages, (list, tuple)):
        stages = [stages]
    named: list[tuple[str, Any]] = []
    seen: dict[str, int] = {}
    for position, stage in enumerate(stages):
        if not callable(stage):
            raise ConfigError(
                f"stages[{position}] must be callable (result -> result), "
                f"got {type(stage).__name__}"
            )
        base = stage_name(stage)
        seen[base] = seen.get(base, 0) + 1
        named.append((base if seen[base] == 1 else f"{base}-{seen[base]}", stage))
    return named


_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_POOLS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def _streams(model: Any) -> int:
    streams = getattr(getattr(model, "backend", None), "streams", 1)
    return streams if isinstance(streams, int) and streams > 1 else 1


def _model_lock(model: Any) -> threading.Lock | None:
    """A lock per model backend for backends whose sessions are not thread-safe (LiteRT's
    interpreter, one OpenVINO request); ``None`` for onnxruntime, whose ``run`` may be
    called concurrently, and for a backend opened with several streams."""
    backend = getattr(model, "backend", None)
    if backend is None or getattr(backend, "name", "onnxruntime") == "onnxruntime":
        return None
    if _streams(model) > 1:
        return None
    with _LOCKS_GUARD:
        lock = _LOCKS.get(backend)
        if lock is None:
            lock = _LOCKS[backend] = threading.Lock()
        return lock


def _stream_pool(model: Any) -> ThreadPoolExecutor | None:
    """One pool of ``backend.streams`` threads per backend (shared by the pipelines of
    several sources), or ``None`` for a backend that runs one frame at a time."""
    streams = _streams(model)
    if streams == 1:
        return None
    with _LOCKS_GUARD:
        pool = _POOLS.get(model.backend)
        if pool is None:
            pool = _POOLS[model.backend] = ThreadPoolExecutor(
                streams, thread_name_prefix="ubiq-infer"
            )
        return pool


class InFlight:
    """A frame whose inference and decoding were started in ``prepare``: the future of
    ``(decoded, inference ms, decode ms)``."""

    __slots__ = ("future",)

    def __init__(self, future: Future) -> None:
        self.future = future


class ModelStage:
    """What every stage that runs a model shares: its input prepared one frame ahead
    (``prepare``), inference under the backend's lock where it needs one, decoding, and
    the three timings (``NAME.preprocess`` when not prepared ahead, ``NAME.inference``,
    ``NAME.decode``). Subclasses put the decoded output into the result.

    Args:
        model: Anything with ``prepare(image)``, ``infer(tensor)`` and ``decode(outputs,
            transform)``.
        name: Stage name in summaries.
        kind: What the model must be, for the error (``"a detection model"``).

    Raises:
        ConfigError: If ``model`` lacks ``prepare``, ``infer`` or ``decode``.
    """

    def __init__(self, model: Any, *, name: str, kind: str) -> None:
        missing = [m for m in ("prepare", "infer", "decode") if not hasattr(model, m)]
        if missing:
            raise ConfigError(
                f"model must be {kind} with prepare/infer/decode, "
                f"got {type(model).__name__} without {', '.join(missing)}"
            )
        self.model = model
        self.name = name
        self._lock = _model_lock(model)
        self._pool = _stream_pool(model)
        self.in_flight = _streams(model)

    def prepare(self, frame: Frame) -> tuple | InFlight:
        """Resizes and normalises the frame into the model's input tensor; with several
        streams, also starts its inference and decoding on the stage's pool."""
        tensor, transform = self.model.prepare(frame.image)
        if self._pool is not None:
            return InFlight(self._pool.submit(self._infer_and_decode, tensor, transform))
        return tensor, transform

    def _infer_and_decode(self, tensor: Any, transform: Any) -> tuple[Any, float, float]:
        began = time.perf_counter()
        outputs = self.model.infer(tensor)
        inferred = time.perf_counter()
        decoded = self.model.decode(outputs, transform)
        done = time.perf_counter()
        return decoded, (inferred - began) * 1e3, (done - inferred) * 1e3

    def run_model(self, result: FrameResult) -> Any:
        """The model's decoded output for this frame, with its timings recorded."""
        prepared = result.prepared.pop(self.name, None)
        if isinstance(prepared, InFlight):
            began = time.perf_counter()
            decoded, inference_ms, decode_ms = prepared.future.result()
            result.timings_ms[f"{self.name}.inference"] = inference_ms
            result.timings_ms[f"{self.name}.decode"] = decode_ms
            result.timings_ms[f"{self.name}.wait"] = (time.perf_counter() - began) * 1e3
            return decoded
        if prepared is None:
            began = time.perf_counter()
            prepared = self.model.prepare(result.frame.image)
            result.timings_ms[f"{self.name}.preprocess"] = (time.perf_counter() - began) * 1e3
        tensor, transform = prepared
        began = time.perf_counter()
        if self._lock is None:
            outputs = self.model.infer(tensor)
        else:
            with self._lock:
                outputs = self.model.infer(tensor)
        inferred = time.perf_counter()
        decoded = self.model.decode(outputs, transform)
        result.timings_ms[f"{self.name}.inference"] = (inferred - began) * 1e3
        result.timings_ms[f"{self.name}.decode"] = (time.perf_counter() - inferred) * 1e3
        return decoded


class Detect(ModelStage):
    """Runs a detection model on each frame and sets ``result.detections``.

    One model may be shared by the pipelines of several sources (each with its own
    ``Detect``): onnxruntime sessions run concurrently, LiteRT interpreters one at a time.

    Args:
        model: A loaded :class:`~ubiq.models.runtime.model.DetectionModel` (or anything
            with its ``prepare(image)``, ``infer(tensor)`` and ``decode(outputs,
            transform)``).
        name: Stage name in summaries (default ``"detect"``).

    Raises:
        ConfigError: If ``model`` lacks ``prepare``, ``infer`` or ``decode``.
    """

    def __init__(self, model: Any, *, name: str = "detect") -> None:
        super().__init__(model, name=name, kind="a detection model")

    def __call__(self, result: FrameResult) -> FrameResult:
        result.detections = self.run_model(result)
        return result


class Function:
    """Wraps ``function(frame) -> Detections`` (or ``None``) as a stage.

    Args:
        function: Called with each frame; a ``Detections`` it returns replaces
            ``result.detections``.
        name: Stage name in summaries (default: the function's name).
    """

    def __init__(
        self, function: Callable[[Frame], Detections | None], *, name: str | None = None
    ) -> None:
        if not callable(function):
            raise ConfigError(f"function must be callable, got {type(function).__name__}")
        self.function = function
        self.name = name or stage_name(function)

    def __call__(self, result: FrameResult) -> FrameResult:
        detections = self.function(result.frame)
        if detections is not None:
            result.detections = detections
        return result
