"""``zone-alert``: intrusion and loitering in polygon zones, with a snapshot of each alert.

A track of a ``forbidden`` label entering a zone is a ``zone.intrusion``; any track staying
``dwell_s`` seconds is a ``zone.dwell`` (loitering). Each alert writes a JPEG of the
annotated frame into ``outputs.snapshots`` and names it in the event's ``snapshot``.
Defaults: ``zone_alert.yaml``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2

from ubiq.apps.app import App
from ubiq.errors import ConfigError, UbiqError
from ubiq.types import FrameResult

ALERTS = ("zone.intrusion", "zone.dwell")


class Snapshots:
    """Writes a JPEG of the annotated frame for each alert event and adds its path to the
    event (``snapshot``), so every output reports the same file.

    Args:
        folder: Where the JPEGs go (created).
        annotators: What to draw on them.
        kinds: Event kinds that get a snapshot.

    Raises:
        ConfigError: If the folder cannot be created.
    """

    def __init__(self, folder: str | Path, annotators=None, kinds=ALERTS) -> None:
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"snapshots: cannot create {self.folder}: {error.strerror}") from None
        self.annotators = annotators
        self.kinds = tuple(kinds)
        self.name = "snapshots"

    def __call__(self, result: FrameResult) -> FrameResult:
        from ubiq.pipelines.sinks.annotate import draw

        for position, event in enumerate(result.events):
            if event.kind not in self.kinds:
                continue
            source = "".join(c if c.isalnum() else "_" for c in result.source_id)
            path = self.folder / (
                f"{source}-{result.index:06d}-{event.kind.split('.')[-1]}-"
                f"{event.payload.get('track_id', 0)}.jpg"
            )
            image = draw(result, self.annotators)
            ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
            try:
                path.write_bytes(data.tobytes())
            except OSError as error:
                raise UbiqError(f"snapshots: cannot write {path}: {error.strerror}") from None
            result.events[position] = dataclasses.replace(
                event, payload={**event.payload, "snapshot": str(path)}
            )
        return result


class ZoneAlertApp(App):
    name = "zone-alert"

    def check(self) -> None:
        for position, camera in enumerate(self.config.cameras):
            if not camera.zones:
                raise ConfigError(
                    f"cameras.{position}.zones: zone-alert needs a zone "
                    "(--zone X1,Y1,X2,Y2,X3,Y3,..., pixels or frame fractions)"
                )

    def extra_stages(self, camera, position: int) -> list:
        folder = self.config.outputs.snapshots
        if not folder:
            return []
        return [Snapshots(folder, self.annotators(position))]
