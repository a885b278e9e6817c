"""MQTT sink: every event to a broker at QoS 1 through a durable outbox, retained state
topics, an availability topic with a last will, and Home Assistant discovery.

Topics, under a prefix ``ubiq/<device>`` (``<device>`` defaults to the host name)::

    <prefix>/events/<kind>            one message per event, QoS 1: the JSONL record
                                      {"kind", "ts", "frame", "id", ...fields}
    <prefix>/availability             "online" / "offline", retained; the last will
    <prefix>/state/occupancy/<class>  objects of that class in the latest frame
    <prefix>/state/zones/<zone>/occupancy/<class>
                                      objects in a zone (zone.occupancy events)
    <prefix>/state/counts/...         every number of the rules' counts (a ``counts``
                                      event or ``result.data["counts"]``):
                                      lines/<line>/<class>/in, zones/<zone>/entered/<class>;
                                      without rules, counts/<class>: tracks started
    <prefix>/state/last/<class>       the last detection of that class (ts, frame, xyxy,
                                      confidence, label, track_id)
    <prefix>/snapshot                 a JPEG of the latest annotated frame
    homeassistant/{sensor,camera}/<device>/<object>/config   discovery, retained

State topics are retained and published at most once per ``state_interval_s`` (only those
that changed), and all of them again after every (re)connect, because a restarted broker
may have lost them.

Delivery: each event is committed to the outbox (:mod:`ubiq.pipelines.sinks.outbox`)
before it is published and deleted on its PUBACK. A sender thread publishes the oldest
rows, at most ``max_inflight`` unacknowledged at a time. After a reconnect paho re-sends
what was in flight first, and the sender publishes nothing new until those are
acknowledged, so events reach the broker in order. A broker that is down, or a process
killed with SIGKILL, loses nothing: the rows wait in the outbox. Delivery is
at-least-once: a PUBACK lost in an outage, or a kill between PUBACK and delete, sends an
event twice; consumers drop duplicates by ``id``.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ubiq.errors import BackendUnavailable, ConfigError, UbiqError
from ubiq.pipelines.sinks.outbox import (
    DEFAULT_MAX_EVENTS,
    EventRecords,
    Outbox,
    default_outbox_dir,
    outbox_name,
)
from ubiq.types import FrameResult

__all__ = ["MqttOptions", "MqttSink", "parse_mqtt_url"]

logger = logging.getLogger(__name__)

_NAME = re.compile(r"[^A-Za-z0-9_-]+")
_WILDCARDS = re.compile(r"[#+\x00]")


def _topic_name(name: str) -> str:
    """A class or zone name as one topic level: ``"traffic light"`` -> ``traffic_light``."""
    return _NAME.sub("_", str(name)).strip("_") or "unnamed"


@dataclass(frozen=True)
class MqttOptions:
    """Where and how to connect; the password never appears in ``repr``.

    Attributes:
        host: Broker host name or address.
        port: Broker port (default 1883, or 8883 with TLS).
        prefix: Topic prefix, ``ubiq/<device>`` (default: ``ubiq/<host name>``).
        username: User name, or ``None``.
        password: Password (from the environment or a file, never the URL), or ``None``.
        tls: Connect with TLS (``mqtts://``).
        tls_ca: CA bundle that signs the broker's certificate (default: the system's).
        tls_cert: Client certificate (PEM) for brokers that require one.
        tls_key: The client certificate's key (PEM).
        keepalive_s: MQTT keepalive.
        reconnect_max_s: Longest wait between reconnect attempts.
        max_inflight: Most events published and not yet acknowledged.
        state_interval_s: Shortest time between two publishes of the state topics.
        snapshot_interval_s: Shortest time between two snapshots (``0``: no snapshots).
        discovery_prefix: Home Assistant discovery prefix (``None``: no discovery).
        flush_timeout_s: How long ``close()`` waits for queued events to be acknowledged.
    """

    host: str
    port: int = 1883
    prefix: str = ""
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    keepalive_s: int = 30
    reconnect_max_s: float = 10.0
    max_inflight: int = 100
    state_interval_s: float = 1.0
    snapshot_interval_s: float = 10.0
    discovery_prefix: str | None = "homeassistant"
    flush_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if not self.host:
            raise ConfigError("mqtt host must not be empty")
        if not 0 < self.port < 65536:
            raise ConfigError(f"mqtt port must be 1-65535, got {self.port}")
        prefix = self.prefix or f"ubiq/{_topic_name(socket.gethostname())}"
        if any(c in prefix for c in "#+\0") or prefix.startswith("/") or prefix.endswith("/"):
            raise ConfigError(f"mqtt prefix must be a topic without wildcards, got {prefix!r}")
        object.__setattr__(self, "prefix", prefix)
        if self.password is not None and not self.username:
            raise ConfigError("an mqtt password needs a user name (mqtt://USER@HOST)")
        if (self.tls_ca or self.tls_cert or self.tls_key) and not self.tls:
            raise ConfigError("mqtt TLS files need an mqtts:// URL")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("an mqtt client certificate needs its key, and a key its certificate")
        if self.max_inflight < 1:
            raise ConfigError(f"max_inflight must be >= 1, got {self.max_inflight}")

    @property
    def device(self) -> str:
        """The device name: the prefix's last level."""
        return self.prefix.rsplit("/", 1)[-1]

    @property
    def address(self) -> str:
        """``mqtt://host:port`` without credentials, for messages."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context (``None`` without TLS).

        Raises:
            ConfigError: Naming the file that cannot be loaded.
        """
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(cafile=self.tls_ca)
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(f"mqtt TLS CA {self.tls_ca}: {_ssl_reason(error)}") from error
        if self.tls_cert:
            try:
                context.load_cert_chain(self.tls_cert, self.tls_key)
            except (OSError, ssl.SSLError) as error:
                raise ConfigError(
                    f"mqtt TLS certificate {self.tls_cert} / key {self.tls_key}: "
                    f"{_ssl_reason(error)}"
                ) from error
        return context


def _ssl_reason(error: Exception) -> str:
    if isinstance(error, ssl.SSLError):
        return f"not a valid PEM file ({error.reason or error.strerror or error})"
    return getattr(error, "strerror", None) or str(error)


def parse_mqtt_url(url: str, **options) -> MqttOptions:
    """``mqtt[s]://[USER@]HOST[:PORT][/PREFIX]`` -> :class:`MqttOptions`.

    Args:
        url: The broker URL; a password in it is refused (it would show in ``ps`` and
            shell history): give it through the environment or a file instead.
        **options: Further :class:`MqttOptions` fields (``password``, ``tls_ca``, ...).

    Raises:
        ConfigError: Naming what is wrong (never echoing a password).
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise ConfigError(f"{_redact(url)} is not an mqtt:// URL ({error})") from error
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ConfigError(
            f"{_redact(url)} is not an mqtt:// URL: expected mqtt[s]://[USER@]HOST[:PORT][/PREFIX]"
        )
    if parts.password is not None:
        raise ConfigError(
            "no password in the URL, please: set UBIQ_MQTT_PASSWORD or use --mqtt-password-file"
        )
    if not parts.hostname:
        raise ConfigError(f"{_redact(url)} names no host")
    if "#" in url or "+" in parts.path:
        raise ConfigError(f"{_redact(url)}: the topic prefix must not hold the wildcards # or +")
    if parts.query:
        raise ConfigError(f"{_redact(url)}: unexpected ?query")
    tls = parts.scheme == "mqtts"
    return MqttOptions(
        host=parts.hostname,
        port=port if port is not None else (8883 if tls else 1883),
        prefix=unquote(parts.path.strip("/")),
        username=unquote(parts.username) if parts.username else None,
        tls=tls,
        **options,
    )


def _redact(url: str) -> str:
    """The URL with any ``user:password@`` removed."""
    return re.sub(r"//[^/@]*@", "//", url)


class MqttSink:
    """Publishes every event (QoS 1, through a durable outbox) and the retained state.

    The constructor never waits for the broker: if it cannot be reached the run goes on,
    events queue in the outbox, and one warning says so (and one more when it is back).

    Args:
        options: Broker and topic options (:func:`parse_mqtt_url`).
        outbox: The outbox file (default: one per broker, prefix and source under
            ``$UBIQ_HOME/outbox``).
        source_key: Tells this output's outbox from another source's (default: none).
        relative_time: Report ``ts`` relative to the first frame, like the CLI's JSONL.
        max_events: Most events the outbox holds (the oldest are dropped beyond it).

    Raises:
        BackendUnavailable: If paho-mqtt is not installed (the ``[mqtt]`` extra).
        ConfigError: If a TLS file cannot be loaded or the outbox cannot be opened.
    """

    def __init__(
        self,
        options: MqttOptions,
        *,
        outbox: str | Path | None = None,
        source_key: str = "",
        relative_time: bool = False,
        max_events: int = DEFAULT_MAX_EVENTS,
    ) -> None:
        try:
            import paho.mqtt.client as paho
        except ImportError as error:
            raise BackendUnavailable(
                "mqtt", missing="paho-mqtt", hint="pip install 'ubiq[mqtt]'"
            ) from error
        self.options = options
        context = options.ssl_context()
        prefix = options.prefix
        if outbox is None:
            identity = f"{options.address}|{prefix}|{source_key}"
            outbox = default_outbox_dir() / outbox_name("mqtt", identity, options.host)
        self.outbox = Outbox(outbox, max_events=max_events)
        self._records = EventRecords(relative_time=relative_time)
        self._paho = paho
        self._availability = f"{prefix}/availability"
        self._lock = threading.Lock()  # guards the state dicts below
        self._state: dict[str, bytes] = {}  # retained topic -> latest payload
        self._dirty: set[str] = set()
        self._discovery: dict[str, bytes] = {}
        self._new_discovery: set[str] = set()
        self._frame_labels: set[str] = set()
        self._zone_labels: dict[str, set[str]] = {}
        self._track_counts: collections.Counter[str] = collections.Counter()
        self._counts_from_rules = False
        self._next_snapshot_at = 0.0
        self._next_state_at = 0.0
        self._inflight: dict[int, int | None] = {}  # mid -> outbox seq (None: not an event)
        self._acked: collections.deque[int] = collections.deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._connected = False
        self._resync = False  # after a reconnect: wait for paho's re-sends to be acked
        self._announce = True  # publish availability, discovery and all state
        self._down_reported = False
        self._last_error = ""
        self._closed = False
        self.events_sent = 0
        self.published = 0

        try:
            self._client = self._make_client(paho, context)
        except BaseException:
            self.outbox.close()
            raise
        if len(self.outbox):
            logger.warning(
                "mqtt: %d events queued in %s from an earlier run go out first",
                len(self.outbox),
                self.outbox.path,
            )
        self._client.connect_async(options.host, options.port, keepalive=options.keepalive_s)
        self._client.loop_start()
        self._sender = threading.Thread(target=self._send_loop, name="ubiq-mqtt", daemon=True)
        self._sender.start()

    def _make_client(self, paho, context: ssl.SSLContext | None):
        """The paho client with credentials, TLS, the last will and the callbacks."""
        options = self.options
        client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=f"ubiq-{_topic_name(options.device)}-{os.getpid()}-{id(self) % 10000}",
            clean_session=True,
        )
        if options.username:
            client.username_pw_set(options.username, options.password)
        if context is not None:
            client.tls_set_context(context)
        client.will_set(self._availability, "offline", qos=1, retain=True)
        client.max_inflight_messages_set(options.max_inflight + 64)
        client.reconnect_delay_set(1, max(1, int(options.reconnect_max_s)))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_publish = self._on_publish
        reconnect = client.reconnect

        def reconnect_noting_error():
            try:
                return reconnect()
            except OSError as error:
                self._last_error = getattr(error, "strerror", None) or str(error) or "failed"
                raise

        client.reconnect = reconnect_noting_error  # its loop calls self.reconnect()
        return client

    def __repr__(self) -> str:
        return f"MqttSink({self.options.address}/{self.options.prefix}, outbox={self.outbox!r})"

    @property
    def connected(self) -> bool:
        """Whether the broker is connected now."""
        return self._connected

    # paho callbacks (its network thread; they never block on the sender)

    def _on_connect(self, _client, _userdata, _flags, reason_code, _properties) -> None:
        if reason_code.is_failure:
            self._report_down(f"refused the connection: {reason_code}")
            return
        if self._down_reported:
            logger.warning(
                "mqtt: connected to %s; sending %d queued events",
                self.options.address,
                len(self.outbox),
            )
        self._down_reported = False
        self._announce = True
        self._connected = True
        self._wake.set()

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _properties) -> None:
        self._connected = False
        self._resync = True
        if not self._closed:
            self._report_down(f"unreachable (connection lost: {reason_code})")

    def _on_connect_fail(self, _client, _userdata) -> None:
        self._report_down(f"unreachable ({self._last_error or 'cannot connect'})")

    def _on_publish(self, _client, _userdata, mid, _reason_code, _properties) -> None:
        self._acked.append(mid)
        self._wake.set()

    def _report_down(self, what: str) -> None:
        """Says once per outage that the broker is away (``what``: "unreachable (...)")."""
        if self._down_reported or self._closed:
            return
        self._down_reported = True
        logger.warning(
            "mqtt: broker %s %s; the run goes on, events queue in %s and go out when it is back",
            self.options.address,
            what,
            self.outbox.path,
        )

    # the pipeline's side

    def write(self, result: FrameResult) -> None:
        """Queues the result's events (committed before this returns) and updates the state.

        Raises:
            UbiqError: If the outbox cannot be written (a full disk).
        """
        records = self._records(result)
        prefix = self.options.prefix
        for event, record in records:
            body = json.dumps(record, separators=(",", ":")).encode()
            kind = _WILDCARDS.sub("_", event.kind)
            self.outbox.put(f"{prefix}/events/{kind}", body, event.event_id)
        self._update_state(result, records)
        if records:
            self._wake.set()

    def _update_state(self, result: FrameResult, records) -> None:
        now = time.monotonic()
        numbers: dict[tuple[str, ...], int | float] = {}
        counts = result.data.get("counts")
        for event, _record in records:
            if event.kind == "counts":
                counts = event.payload.get("counts", event.payload)
        if isinstance(counts, dict) and counts:
            self._counts_from_rules = True  # the rules count; tracks started are not counts
            numbers.update(_flatten(("counts",), counts))
        for event, _record in records:
            payload = event.payload
            if event.kind == "zone.occupancy" and isinstance(payload.get("counts"), dict):
                self._zone_occupancy(numbers, str(payload.get("zone")), payload["counts"])
            elif event.kind == "track.start" and not self._counts_from_rules:
                label = str(payload.get("label", "object"))
                self._track_counts[label] += 1
                numbers[("counts", label)] = self._track_counts[label]
        for zone, per_label in (result.data.get("occupancy") or {}).items():
            if isinstance(per_label, dict):
                self._zone_occupancy(numbers, str(zone), per_label)
        changed: dict[str, bytes] = {}
        detections = result.detections
        if detections is not None and not result.final:
            per_label: collections.Counter[str] = collections.Counter()
            best: dict[str, dict] = {}
            for item in detections.to_records():
                label = str(item.get("label", item.get("class_id")))
                per_label[label] += 1
                if label not in best or item["confidence"] > best[label]["confidence"]:
                    best[label] = item
            ts = self._records.seconds(result)
            for label, item in best.items():
                last = {"ts": ts, "frame": result.index, **item}
                changed[self._state_topic(("last", label))] = _json(last)
            self._frame_labels |= set(per_label)
            for label in self._frame_labels:
                numbers[("occupancy", label)] = per_label.get(label, 0)
        for path, value in numbers.items():
            topic = self._state_topic(path)
            changed[topic] = _number(value)
            self._discover_sensor(path, topic)
        snapshot = self._snapshot(result, now)
        with self._lock:
            for topic, payload in changed.items():
                if self._state.get(topic) != payload:
                    self._state[topic] = payload
                    self._dirty.add(topic)
            if snapshot is not None:
                self._state[f"{self.options.prefix}/snapshot"] = snapshot
                self._dirty.add(f"{self.options.prefix}/snapshot")
        if self._dirty and (now >= self._next_state_at or result.final):
            self._next_state_at = now + self.options.state_interval_s
            self._wake.set()

    def _zone_occupancy(self, numbers: dict, zone: str, per_label: dict) -> None:
        """``zones/<zone>/occupancy/<label>`` for the labels in the zone now, and 0 for the
        ones seen there before."""
        seen = self._zone_labels.setdefault(zone, set())
        seen |= {str(label) for label in per_label}
        for label in seen:
            value = per_label.get(label, 0)
            if isinstance(value, int | float) and not isinstance(value, bool):
                numbers[("zones", zone, "occupancy", label)] = value

    def _state_topic(self, path: tuple[str, ...]) -> str:
        return "/".join([self.options.prefix, "state", *(_topic_name(p) for p in path)])

    def _snapshot(self, result: FrameResult, now: float) -> bytes | None:
        image = getattr(result.frame, "image", None)
        if image is None or result.final or self.options.snapshot_interval_s <= 0:
            return None
        if now < self._next_snapshot_at:
            return None
        self._next_snapshot_at = now + self.options.snapshot_interval_s
        import cv2

        from ubiq.pipelines.sinks.annotate import draw

        self._discover_camera()
        ok, jpeg = cv2.imencode(".jpg", draw(result), [cv2.IMWRITE_JPEG_QUALITY, 80])
        return jpeg.tobytes() if ok else None

    def _device(self) -> dict:
        return {
            "identifiers": [f"ubiq_{_topic_name(self.options.device)}"],
            "name": f"ubiq {self.options.device}",
            "manufacturer": "ubiq",
            "model": "ubiq pipeline",
        }

    def _add_discovery(self, component: str, object_id: str, config: dict) -> None:
        prefix = self.options.discovery_prefix
        if prefix is None:
            return
        device = _topic_name(self.options.device)
        topic = f"{prefix}/{component}/{device}/{object_id}/config"
        if topic in self._discovery:
            return
        config = {
            **config,
            "unique_id": f"ubiq_{device}_{object_id}",
            "object_id": f"ubiq_{device}_{object_id}",
            "availability_topic": self._availability,
            "device": self._device(),
        }
        with self._lock:
            self._discovery[topic] = _json(config)
            self._new_discovery.add(topic)

    def _discover_sensor(self, path: tuple[str, ...], state_topic: str) -> None:
        """A Home Assistant sensor for one state number (occupancy or a count)."""
        if self.options.discovery_prefix is None:
            return
        occupancy = "occupancy" in path
        self._add_discovery(
            "sensor",
            "_".join(_topic_name(p) for p in path),
            {
                "name": " ".join(str(p) for p in path),
                "state_topic": state_topic,
                "state_class": "measurement" if occupancy else "total_increasing",
                "icon": "mdi:account-group" if occupancy else "mdi:counter",
            },
        )

    def _discover_camera(self) -> None:
        """A Home Assistant camera showing the snapshot topic."""
        self._add_discovery(
            "camera", "snapshot", {"name": "snapshot", "topic": f"{self.options.prefix}/snapshot"}
        )

    # the sender thread

    def _send_loop(self) -> None:
        last_seq = 0
        while True:
            self._wake.wait(0.5)
            self._wake.clear()
            self._take_acks()
            if self._stop.is_set():
                return
            if not self._connected:
                continue
            if self._resync:
                if self._inflight:
                    continue  # paho re-sends what was in flight; nothing new before that
                self._resync = False
            if self._announce:
                self._announce = False
                self._publish(self._availability, b"online")
                with self._lock:
                    retained = list(self._discovery.items()) + list(self._state.items())
                    self._new_discovery.clear()
                    self._dirty.clear()
                for topic, payload in retained:
                    self._publish(topic, payload)
            if self._new_discovery or (self._dirty and time.monotonic() >= self._next_state_at):
                with self._lock:
                    retained = [(t, self._discovery[t]) for t in sorted(self._new_discovery)]
                    retained += [(t, self._state[t]) for t in sorted(self._dirty)]
                    self._new_discovery.clear()
                    self._dirty.clear()
                for topic, payload in retained:
                    self._publish(topic, payload)
            room = self.options.max_inflight - sum(
                1 for seq in self._inflight.values() if seq is not None
            )
            if room <= 0:
                continue
            try:
                items = self.outbox.peek(last_seq, room)
            except UbiqError as error:
                logger.error("mqtt: cannot read outbox %s: %s", self.outbox.path, error)
                continue
            for item in items:
                mid = self._publish(item.topic, item.body, retain=False, seq=item.seq)
                if mid is None:
                    break
                last_seq = item.seq
            if len(items) == room:
                self._wake.set()  # more waiting: go round again once acks free the window

    def _publish(
        self, topic: str, payload: bytes, *, retain: bool = True, seq: int | None = None
    ) -> int | None:
        """Publishes at QoS 1 and notes the message id; ``None`` if paho refused it (an
        event whose topic or payload MQTT cannot carry is dropped, so it blocks nothing)."""
        try:
            info = self._client.publish(topic, payload, qos=1, retain=retain)
        except ValueError as error:
            logger.error("mqtt: cannot publish to %s (%s); dropping it", topic, error)
            if seq is not None:
                with contextlib.suppress(UbiqError):
                    self.outbox.delete([seq])
            return 0
        if info.rc not in (self._paho.MQTT_ERR_SUCCESS, self._paho.MQTT_ERR_NO_CONN):
            logger.error("mqtt: cannot publish to %s: %s", topic, self._paho.error_string(info.rc))
            return None
        self._inflight[info.mid] = seq
        self.published += 1
        return info.mid

    def _take_acks(self) -> None:
        done = []
        while self._acked:
            mid = self._acked.popleft()
            if mid in self._inflight:
                seq = self._inflight.pop(mid)
                if seq is not None:
                    done.append(seq)
        if done:
            try:
                self.outbox.delete(done)
            except UbiqError as error:  # the rows are sent again after a restart
                logger.error("mqtt: cannot update outbox %s: %s", self.outbox.path, error)
                return
            self.events_sent += len(done)

    def close(self) -> None:
        """Publishes the last state, waits up to ``flush_timeout_s`` for queued events to be
        acknowledged (unless the broker is known to be away), says ``offline`` and
        disconnects. Events not yet acknowledged stay in the outbox for the next run."""
        if self._closed:
            return
        self._next_state_at = 0.0
        self._wake.set()
        deadline = time.monotonic() + self.options.flush_timeout_s
        while time.monotonic() < deadline and not self._down_reported:
            idle = not (len(self.outbox) or self._inflight or self._dirty or self._announce)
            if self._connected and idle:
                break
            time.sleep(0.02)
        self._closed = True
        if self._connected:
            info = self._client.publish(self._availability, "offline", qos=1, retain=True)
            # If the connection drops meanwhile, the last will says it instead.
            with contextlib.suppress(RuntimeError):
                info.wait_for_publish(timeout=1.0)
        self._client.disconnect()
        self._client.loop_stop()
        self._stop.set()
        self._wake.set()
        self._sender.join(timeout=5.0)
        self._take_acks()
        waiting = len(self.outbox)
        self.outbox.close()
        if waiting:
            logger.warning(
                "mqtt: %d events stay queued in %s; they go out on the next run",
                waiting,
                self.outbox.path,
            )


def _number(value) -> bytes:
    return str(int(value) if float(value).is_integer() else float(value)).encode()


def _flatten(path: tuple[str, ...], value) -> dict[tuple[str, ...], int | float]:
    """The numbers in a nested mapping by their key path: ``{"a": {"b": 2}}`` ->
    ``{(*path, "a", "b"): 2}``."""
    if isinstance(value, bool):
        return {}
    if isinstance(value, int | float):
        return {path: value}
    if isinstance(value, dict):
        found: dict[tuple[str, ...], int | float] = {}
        for key, item in value.items():
            found.update(_flatten((*path, str(key)), item))
        return found
    return {}


def _json(value) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
