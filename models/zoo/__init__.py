"""The ubiq model zoo: named models, where to fetch them, and the local cache.

```python
from ubiq.models.zoo import pull, resolve_model

path = pull("blazeface")              # ~/.cache/ubiq/models/blazeface/blazeface.tflite
path = resolve_model("model.onnx")    # an existing file is used as is
```

Importing this package does no I/O and never imports Ultralytics (AGPL-3.0, optional);
:mod:`ubiq.models.zoo.ultralytics_adapter` imports it only when exporting.
"""

from .catalog import ZooEntry, ZooSource, get_entry, list_entries
from .fetch import cache_dir, cached_path, model_dir, pull, resolve_model, ubiq_home
from .ultralytics_adapter import (
    export_ultralytics,
    manifest_from_onnx,
    manifest_from_ultralytics_metadata,
)

__all__ = [
    "ZooEntry",
    "ZooSource",
    "cache_dir",
    "cached_path",
    "export_ultralytics",
    "get_entry",
    "list_entries",
    "manifest_from_onnx",
    "manifest_from_ultralytics_metadata",
    "model_dir",
    "pull",
    "resolve_model",
    "ubiq_home",
]
