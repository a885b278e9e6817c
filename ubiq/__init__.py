"""ubiq: an embedded intelligence kit.

Importing ubiq has no side effects: no hardware probing, no settings files, no downloads.
"""

from ubiq.errors import (
    BackendUnavailable,
    ConfigError,
    ModelError,
    SourceError,
    UbiqError,
    ZooError,
)
from ubiq.types import Detections, Event, Frame

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailable",
    "ConfigError",
    "Detections",
    "Event",
    "Frame",
    "ModelError",
    "SourceError",
    "UbiqError",
    "ZooError",
    "__version__",
]
