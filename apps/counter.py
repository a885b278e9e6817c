"""``counter``: counts objects crossing a line, per class and direction.

Each track counts once per direction, after its point has been on the new side for
``min_frames`` frames; the label counted is the one the track had most often. Events:
``line.cross`` per crossing and ``counts`` when the run ends. Defaults: ``counter.yaml``.
"""

from __future__ import annotations

from ubiq.apps.app import App
from ubiq.errors import ConfigError


class CounterApp(App):
    name = "counter"

    def check(self) -> None:
        for position, camera in enumerate(self.config.cameras):
            if not camera.lines:
                raise ConfigError(
                    f"cameras.{position}.lines: the counter needs a line "
                    "(--line X1,Y1,X2,Y2, pixels or frame fractions)"
                )
