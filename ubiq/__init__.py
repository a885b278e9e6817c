"""ubiq: an embedded intelligence kit.

Importing ubiq has no side effects: no hardware probing, no settings files, no downloads,
and no heavy imports. The Python API below is loaded on first use:

```python
import ubiq

model = ubiq.load_model("blazeface")                     # zoo name or .onnx/.tflite file
pipeline = ubiq.Pipeline([ubiq.Detect(model)], sinks=[ubiq.JsonlSink("faces.jsonl")])
for result in pipeline.stream("demo", max_frames=30):   # a camera index, file, URL, ...
    print(result.index, result.detections.to_records())
```
"""

from __future__ import annotations

import importlib
from typing import Any

from ubiq.errors import (
    BackendUnavailable,
    ConfigError,
    ModelError,
    SourceError,
    UbiqError,
    ZooError,
)
from ubiq.types import Detections, Event, Frame, FrameResult

__version__ = "0.1.0"

# name -> "module:attribute", imported on first access (PEP 562), so `import ubiq` stays light.
_LAZY = {
    "open_source": "ubiq.hardware.sources:open_source",
    "load_model": "ubiq.models.runtime.loader:load_model",
    "Pipeline": "ubiq.pipelines.pipeline:Pipeline",
    "run_sources": "ubiq.pipelines.pipeline:run_sources",
    "RunSummary": "ubiq.pipelines.summary:RunSummary",
    "Detect": "ubiq.pipelines.stage:Detect",
    "Function": "ubiq.pipelines.stage:Function",
    "Track": "ubiq.pipelines.track.stage:Track",
    "ClassifyTracks": "ubiq.pipelines.classify:ClassifyTracks",
    "Rules": "ubiq.pipelines.rules.rules:Rules",
    "Line": "ubiq.pipelines.rules.geometry:Line",
    "Zone": "ubiq.pipelines.rules.geometry:Zone",
    "App": "ubiq.apps.app:App",
    "JsonlSink": "ubiq.pipelines.sinks:JsonlSink",
    "VideoSink": "ubiq.pipelines.sinks:VideoSink",
    "ImageSink": "ubiq.pipelines.sinks:ImageSink",
    "WindowSink": "ubiq.pipelines.sinks:WindowSink",
    "CallbackSink": "ubiq.pipelines.sinks:CallbackSink",
    "draw": "ubiq.pipelines.sinks:draw",
    "LiveViewSink": "ubiq.pipelines.sinks.live:LiveViewSink",
    "ClipRecorder": "ubiq.pipelines.sinks.clips:ClipRecorder",
    "MqttSink": "ubiq.pipelines.sinks.mqtt:MqttSink",
    "WebhookSink": "ubiq.pipelines.sinks.webhook:WebhookSink",
}


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'ubiq' has no attribute {name!r}")
    module_name, attribute = target.split(":")
    value = getattr(importlib.import_module(module_name), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "App",
    "Line",
    "Rules",
    "Zone",
    "BackendUnavailable",
    "CallbackSink",
    "ClipRecorder",
    "ConfigError",
    "Detect",
    "Detections",
    "Event",
    "Frame",
    "FrameResult",
    "Function",
    "ImageSink",
    "JsonlSink",
    "ModelError",
    "MqttSink",
    "Pipeline",
    "RunSummary",
    "SourceError",
    "Track",
    "UbiqError",
    "VideoSink",
    "WebhookSink",
    "WindowSink",
    "ZooError",
    "__version__",
    "draw",
    "load_model",
    "open_source",
    "run_sources",
]
