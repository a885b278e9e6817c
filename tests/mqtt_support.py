"""Real services for the events-out tests: Debian's mosquitto on a free loopback port, a
subscriber that records what arrives, and an HTTP receiver for webhooks (importable:
pytest puts tests/ on sys.path).

``mosquitto_broker`` is a pytest fixture (import ``mosquitto_broker_fixture`` into a test
module to use it); it skips with a
clear reason when the ``mosquitto`` binary or paho-mqtt is missing.
"""

from __future__ import annotations

import getpass
import json
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
)
SKIP_REASON = (
    "the mosquitto broker is not installed (apt-get install mosquitto, or "
    "scripts/install-system-deps.sh)"
)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Broker:
    """One mosquitto process with its own config, persistence folder and log.

    Args:
        folder: Where the config, the persistence file and the log go.
        port: The loopback port (default: a free one); it stays the same across restarts.
        config: Extra lines for ``mosquitto.conf`` (TLS listeners, password files, ...).
    """

    def __init__(self, folder: Path, port: int | None = None, config: str = "") -> None:
        if MOSQUITTO is None:
            pytest.skip(SKIP_REASON)
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.config_path = self.folder / "mosquitto.conf"
        self.log_path = self.folder / "mosquitto.log"
        listener = config or "allow_anonymous true\n"
        self.config_path.write_text(
            # Run as whoever started it (as root, mosquitto would switch to the user
            # "mosquitto", which cannot write the persistence file here).
            f"user {getpass.getuser()}\n"
            f"listener {self.port} 127.0.0.1\n"
            f"{listener}"
            "persistence true\n"
            f"persistence_location {self.folder}/\n"
            "max_queued_messages 0\n"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
        )
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:PORT``."""
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0) -> Broker:
        """Starts mosquitto and waits until it accepts connections."""
        log = open(self.log_path, "ab")  # noqa: SIM115 - the broker writes it while it runs
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config_path)], stdout=log, stderr=log
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log_path.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port} in {timeout_s} s")

    def stop(self) -> None:
        """Stops mosquitto cleanly (SIGTERM: it saves its persistence file)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture(name="mosquitto_broker")
def mosquitto_broker_fixture(tmp_path):
    """A running mosquitto on a free loopback port (stopped after the test)."""
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt (the [mqtt] extra) is missing")
    broker = Broker(tmp_path / "broker").start()
    yield broker
    broker.stop()


class Subscriber:
    """Subscribes to ``topic`` at QoS 1 with a persistent session (messages queued while it
    or the broker was away still arrive) and records every message.

    Attributes:
        messages: ``(topic, payload bytes, retain)`` in arrival order.
        arrived_at: ``time.monotonic()`` of each message's arrival, in the same order.
    """

    def __init__(
        self, port: int, topic: str = "#", client_id: str = "ubiq-test-subscriber", **auth
    ) -> None:
        import paho.mqtt.client as paho

        self.messages: list[tuple[str, bytes, bool]] = []
        self.arrived_at: list[float] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False
        )
        if auth.get("username"):
            client.username_pw_set(auth["username"], auth.get("password"))
        if auth.get("tls_context") is not None:
            client.tls_set_context(auth["tls_context"])
        client.reconnect_delay_set(1, 1)

        def on_connect(client, _userdata, _flags, reason_code, _properties):
            if not reason_code.is_failure:
                client.subscribe(topic, qos=1)

        def on_subscribe(*_args):
            self._subscribed.set()

        def on_message(_client, _userdata, message):
            with self._lock:
                self.messages.append((message.topic, bytes(message.payload), message.retain))
                self.arrived_at.append(time.monotonic())

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        client.connect_async("127.0.0.1", port)
        client.loop_start()
        self.client = client
        if not self._subscribed.wait(10):
            raise RuntimeError("the test subscriber could not subscribe")

    def events(self) -> list[dict]:
        """The event payloads (``.../events/...`` topics), decoded, in arrival order."""
        with self._lock:
            return [json.loads(p) for t, p, _r in self.messages if "/events/" in t]

    def event_arrivals(self) -> list[tuple[float, dict]]:
        """``(arrival time, decoded event)`` for every event message, in arrival order."""
        with self._lock:
            pairs = list(zip(self.arrived_at, self.messages, strict=True))
        return [(at, json.loads(p)) for at, (t, p, _r) in pairs if "/events/" in t]

    def latest(self, topic: str) -> bytes | None:
        """The last payload on ``topic``."""
        with self._lock:
            found = [p for t, p, _r in self.messages if t == topic]
        return found[-1] if found else None

    def wait_for(self, condition, timeout_s: float = 20.0) -> bool:
        """Polls ``condition(self)`` until it is true or the time is up."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition(self):
                return True
            time.sleep(0.05)
        return condition(self)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Receiver:
    """A threaded HTTP server that records every POST and answers from a plan.

    Attributes:
        requests: ``(path, headers, body, status answered)`` in arrival order.
        plan: Statuses to answer next, first first (200 once it is empty).
    """

    def __init__(self, port: int = 0) -> None:
        self.requests: list[tuple[str, dict, bytes, int]] = []
        self.plan: list[int] = []
        self.times: list[float] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = receiver.plan.pop(0) if receiver.plan else 200
                receiver.requests.append((self.path, dict(self.headers), body, status))
                receiver.times.append(time.monotonic())
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook?token=t0ken"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def delivered(self) -> list[dict]:
        """The bodies answered with 2xx, decoded."""
        return [json.loads(b) for _p, _h, b, s in self.requests if 200 <= s < 300]

    def wait_for(self, count: int, timeout_s: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and len(self.delivered()) < count:
            time.sleep(0.02)
        return len(self.delivered()) >= count

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
