"""Temperatures and throttling: thermal zones everywhere, ``vcgencmd`` on a Raspberry Pi.

:func:`read_health` reads one snapshot; :class:`HealthMonitor` samples it and turns the
start and end of throttling into :class:`~ubiq.types.Event` objects (edges, not one per
sample). Nothing is read at import time.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ubiq.types import Event

logger = logging.getLogger(__name__)

# vcgencmd get_throttled bits: 0-3 "now", 16-19 "has occurred since boot".
THROTTLE_FLAGS = {
    0: "under_voltage",
    1: "frequency_capped",
    2: "throttled",
    3: "soft_temperature_limit",
}
_NOW_MASK = 0xF


@dataclass(frozen=True)
class Health:
    """One health snapshot.

    Attributes:
        temperature_c: Hottest thermal zone in degrees C, or ``None`` when none is readable.
        zones: Zone name (its ``type``, e.g. ``"cpu-thermal"``) -> degrees C.
        throttled: Decoded ``vcgencmd get_throttled`` (see :func:`decode_throttled`), or
            ``None`` where ``vcgencmd`` is missing (not a Pi, or not installed).
    """

    temperature_c: float | None = None
    zones: dict[str, float] = field(default_factory=dict)
    throttled: dict | None = None

    @property
    def throttling_now(self) -> bool:
        """True when any "now" flag is set (under-voltage, capped, throttled, soft limit)."""
        return bool(self.throttled and self.throttled["raw"] & _NOW_MASK)

    def to_dict(self) -> dict:
        """Returns the snapshot as JSON-safe values."""
        return {
            "temperature_c": self.temperature_c,
            "zones": dict(self.zones),
            "throttled": None if self.throttled is None else dict(self.throttled),
        }


def decode_throttled(value: int) -> dict:
    """Decodes the bit field of ``vcgencmd get_throttled``.

    Args:
        value: The number after ``throttled=``, e.g. ``0x50005``.

    Returns:
        ``{"raw": int, "hex": "0x50005", "now": {flag: bool}, "since_boot": {flag: bool}}``
        with flags ``under_voltage``, ``frequency_capped``, ``throttled`` and
        ``soft_temperature_limit``.

    Raises:
        ValueError: If ``value`` is negative.
    """
    if value < 0:
        raise ValueError(f"throttled value must be >= 0, got {value}")
    return {
        "raw": value,
        "hex": hex(value),
        "now": {name: bool(value >> bit & 1) for bit, name in THROTTLE_FLAGS.items()},
        "since_boot": {name: bool(value >> (bit + 16) & 1) for bit, name in THROTTLE_FLAGS.items()},
    }


def parse_throttled(text: str) -> int:
    """Parses ``vcgencmd get_throttled`` output (``"throttled=0x50005"``).

    Raises:
        ValueError: If the text is not ``throttled=<hex>``.
    """
    key, _, number = text.strip().partition("=")
    if key != "throttled" or not number:
        raise ValueError(f"expected 'throttled=0x...' from vcgencmd, got {text.strip()!r}")
    try:
        return int(number, 0)
    except ValueError as error:
        raise ValueError(f"expected a hex number after 'throttled=', got {number!r}") from error


def read_thermal_zones(root: Path = Path("/")) -> dict[str, float]:
    """Reads ``<root>/sys/class/thermal/thermal_zone*/temp`` (millidegrees C).

    Returns:
        Zone type -> degrees C. A zone without a ``type`` is named after its folder; a
        duplicate type gets the folder name appended; unreadable zones are skipped.
    """
    zones: dict[str, float] = {}
    folder = Path(root) / "sys/class/thermal"
    if not folder.is_dir():
        return zones
    for zone in sorted(folder.glob("thermal_zone*"), key=lambda p: (len(p.name), p.name)):
        try:
            millidegrees = int((zone / "temp").read_text().strip())
        except (OSError, ValueError):
            continue
        try:
            name = (zone / "type").read_text().strip() or zone.name
        except OSError:
            name = zone.name
        if name in zones:
            name = f"{name}:{zone.name}"
        zones[name] = millidegrees / 1000.0
    return zones


def read_throttled(run: Callable = subprocess.run) -> dict | None:
    """Runs ``vcgencmd get_throttled`` and decodes it.

    Args:
        run: ``subprocess.run`` or a stand-in with its signature (tests).

    Returns:
        The decoded flags, or ``None`` when ``vcgencmd`` is missing or fails.
    """
    try:
        completed = run(
            ["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=2.0, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        logger.debug("vcgencmd get_throttled failed: %s", error)
        return None
    if completed.returncode != 0:
        logger.debug("vcgencmd get_throttled exited %s", completed.returncode)
        return None
    try:
        return decode_throttled(parse_throttled(completed.stdout))
    except ValueError as error:
        logger.debug("%s", error)
        return None


def read_health(root: Path = Path("/"), run: Callable = subprocess.run) -> Health:
    """Reads thermal zones and, where ``vcgencmd`` exists, the Pi's throttling flags.

    Args:
        root: Filesystem root to read.
        run: ``subprocess.run`` or a stand-in (tests). With the real ``subprocess.run``
            and ``root`` ``/``, ``vcgencmd`` is only run when it is on ``PATH``.

    Returns:
        A :class:`Health` snapshot.
    """
    zones = read_thermal_zones(root)
    real_host = run is subprocess.run and Path(root).resolve() == Path("/")
    if run is subprocess.run and (not real_host or shutil.which("vcgencmd") is None):
        throttled = None
    else:
        throttled = read_throttled(run)
    return Health(
        temperature_c=max(zones.values()) if zones else None, zones=zones, throttled=throttled
    )


class HealthMonitor:
    """Samples health and reports throttling as events when it starts and when it ends.

    Args:
        interval_s: How often the runner should call :meth:`sample`.
        reader: A callable returning :class:`Health` (default :func:`read_health`).
        source_id: ``source_id`` of the events.

    Attributes:
        max_temperature_c: Hottest temperature seen so far, or ``None``.
        throttle_events: Times throttling started.
        last: The latest snapshot, or ``None`` before the first sample.

    Raises:
        ValueError: If ``interval_s`` is not positive.
    """

    def __init__(
        self,
        interval_s: float = 5.0,
        reader: Callable[[], Health] = read_health,
        source_id: str = "health",
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.interval_s = float(interval_s)
        self.reader = reader
        self.source_id = source_id
        self.max_temperature_c: float | None = None
        self.throttle_events = 0
        self.last: Health | None = None
        self._throttling = False

    def sample(self) -> tuple[Health, list[Event]]:
        """Reads health once.

        Returns:
            The snapshot and the events it caused: ``health.throttled`` when a "now" flag
            first appears, ``health.recovered`` when they all clear; otherwise none.
        """
        health = self.reader()
        self.last = health
        if health.temperature_c is not None and (
            self.max_temperature_c is None or health.temperature_c > self.max_temperature_c
        ):
            self.max_temperature_c = health.temperature_c
        events = []
        throttling = health.throttling_now
        if throttling != self._throttling:
            self._throttling = throttling
            flags = health.throttled or {}
            payload = {
                "temperature_c": health.temperature_c,
                "throttled": flags.get("hex"),
                "now": [name for name, on in flags.get("now", {}).items() if on],
            }
            kind = "health.throttled" if throttling else "health.recovered"
            if throttling:
                self.throttle_events += 1
            events.append(Event(kind, time.monotonic_ns(), self.source_id, payload))
        return health, events
