"""The Python API's centre: a :class:`Pipeline` is stages and sinks, run over a source.

```python
import ubiq

model = ubiq.load_model("blazeface")
pipeline = ubiq.Pipeline([ubiq.Detect(model)], sinks=[ubiq.JsonlSink("faces.jsonl")])
for result in pipeline.stream("demo", max_frames=30):   # iterate results ...
    print(result.index, len(result.detections))
summary = pipeline.run("demo")                         # ... or just run it with the sinks
```

Three ways to use it, like MediaPipe's running modes: :meth:`Pipeline.process` runs one
image or frame (image mode); :meth:`Pipeline.stream` yields each finished
:class:`~ubiq.types.FrameResult` of a source (video mode); :meth:`Pipeline.run` runs a
source to the end with the sinks and callbacks, handles Ctrl-C, and returns a
:class:`~ubiq.pipelines.summary.RunSummary` (live mode). :func:`run_sources` runs one
pipeline per source side by side, sharing a model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from ubiq.errors import ConfigError
from ubiq.pipelines.runner import Runner, check_max_frames, run_many
from ubiq.pipelines.stage import named_stages
from ubiq.pipelines.summary import RunSummary
from ubiq.types import Event, Frame, FrameResult


def as_source(source: Any, **options: Any) -> Any:
    """Returns a source object: ``source`` itself, or ``open_source(source, **options)``
    for a spec such as ``"demo"``, ``0``, ``"clip.mp4"``, ``"rtsp://..."``.

    Raises:
        SourceError: If a spec names no usable source.
    """
    if isinstance(source, (str, int)) or hasattr(source, "__fspath__"):
        from ubiq.hardware.sources import open_source

        return open_source(str(source) if not isinstance(source, str) else source, **options)
    if not hasattr(source, "__iter__") or not hasattr(source, "__enter__"):
        raise ConfigError(
            f"source must be a source spec (str) or a Source, got {type(source).__name__}"
        )
    return source


class Pipeline:
    """Stages that grow each frame's result, and sinks that receive the finished results.

    Args:
        stages: Callables ``result -> result`` in order (``ubiq.Detect(model)``, a tracker,
            rules, or your own function).
        sinks: Objects with ``write(result)`` and ``close()`` (``ubiq.JsonlSink``,
            ``ubiq.VideoSink``, ...). They are closed when a run ends, so a pipeline with
            file sinks runs once; build a new one for the next run.
        on_result: Called with every finished result.
        on_event: Called with every event a frame produced.

    Raises:
        ConfigError: If a stage is not callable or a sink lacks ``write``.
    """

    def __init__(
        self,
        stages: Sequence[Callable[[FrameResult], FrameResult]],
        sinks: Sequence[Any] = (),
        *,
        on_result: Callable[[FrameResult], None] | None = None,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        self._named = named_stages(stages)
        self.stages = [stage for _, stage in self._named]
        for position, sink in enumerate(sinks):
            if not callable(getattr(sink, "write", None)):
                raise ConfigError(
                    f"sinks[{position}] must have write(result), got {type(sink).__name__}"
                )
        self.sinks = list(sinks)
        self.on_result = on_result
        self.on_event = on_event
        self.runner: Runner | None = None

    def runner_for(
        self, source: Any, *, max_frames: int | None = None, health: Any = None
    ) -> Runner:
        """Builds the :class:`Runner` of this pipeline over ``source`` (a spec or Source).

        Raises:
            ConfigError: If ``max_frames`` is not ``None`` or an integer >= 1.
            SourceError: If a spec names no usable source.
        """
        self.runner = Runner(
            as_source(source),
            self.stages,
            self.sinks,
            max_frames=max_frames,
            on_result=self.on_result,
            on_event=self.on_event,
            health=health,
        )
        return self.runner

    def run(self, source: Any, *, max_frames: int | None = None, health: Any = None) -> RunSummary:
        """Runs ``source`` through the stages into the sinks until it ends, ``max_frames``,
        Ctrl-C/SIGTERM or :meth:`stop`.

        Returns:
            The run's summary (frames, FPS, per-stage p50/p90, counts).
        """
        return self.runner_for(source, max_frames=max_frames, health=health).run()

    def stream(self, source: Any, *, max_frames: int | None = None) -> Iterator[FrameResult]:
        """Yields each finished result (the sinks have already seen it).

        Leaving the loop early (``break``) closes the source and the sinks. The summary is
        ``pipeline.runner.summary`` afterwards.
        """
        return self.runner_for(source, max_frames=max_frames).results()

    def events(self, source: Any, *, max_frames: int | None = None) -> Iterator[Event]:
        """Yields every event the frames of ``source`` produce, in order."""
        for result in self.stream(source, max_frames=max_frames):
            yield from result.events

    def process(self, image: np.ndarray | Frame, *, index: int = 0) -> FrameResult:
        """Runs the stages on one image or frame (no sinks): image mode.

        Args:
            image: An ``(H, W, 3)`` uint8 BGR image, or a :class:`~ubiq.types.Frame`.
            index: Frame index given to a bare image.

        Raises:
            ValueError: If the image is not ``(H, W, 3)`` uint8.
        """
        frame = image if isinstance(image, Frame) else Frame(image, index, time.monotonic_ns())
        result = FrameResult(frame)
        for _name, stage in self._named:
            result = stage(result)
        return result

    def stop(self) -> None:
        """Stops the current run after the frame in progress (thread- and signal-safe)."""
        if self.runner is not None:
            self.runner.stop("stop")


def run_sources(
    sources: Sequence[Any],
    build: Callable[[Any], Pipeline],
    *,
    max_frames: int | None = None,
    health: Any = None,
) -> list[RunSummary]:
    """Runs one pipeline per source side by side (a thread each), e.g. two to four cameras.

    Build every pipeline's ``Detect`` stage on one loaded model to load it once: the
    onnxruntime session serves all sources concurrently (LiteRT takes turns). A signal
    stops them all.

    Args:
        sources: Source specs or Source objects.
        build: Called once per opened source object (its ``source_id`` names it) and
            returns that source's pipeline (own stages, own sinks).
        max_frames: Per-source frame limit.
        health: Optional health monitor, sampled by the first source's runner.

    Returns:
        One summary per source, in order.

    Raises:
        ConfigError: If ``sources`` is empty or ``max_frames`` is invalid.
    """
    check_max_frames(max_frames)
    if not sources:
        raise ConfigError("sources must name at least one source, got none")
    runners = []
    for position, spec in enumerate(sources):
        source = as_source(spec)
        pipeline = build(source)
        if not isinstance(pipeline, Pipeline):
            raise ConfigError(
                f"build must return a Pipeline, got {type(pipeline).__name__} for "
                f"source {getattr(source, 'source_id', spec)!r}"
            )
        runners.append(
            pipeline.runner_for(
                source, max_frames=max_frames, health=health if position == 0 else None
            )
        )
    return run_many(runners)
