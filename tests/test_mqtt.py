"""MQTT out, against a real mosquitto on loopback: the durable outbox, the sink's topics,
retained state, availability and Home Assistant discovery, TLS and passwords, the CLI
flags, and the outage/SIGKILL bar (benchmarks/mqtt_outage.py)."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from mqtt_support import (
    MOSQUITTO,
    Broker,
    Subscriber,
    free_port,
    mosquitto_broker_fixture,  # noqa: F401 - the fixture
)
from support import REPO, run_ubiq

from ubiq.errors import ConfigError
from ubiq.pipelines.sinks.outbox import Outbox
from ubiq.types import Detections, Event, Frame, FrameResult

pytest.importorskip("paho.mqtt.client", reason="paho-mqtt (the [mqtt] extra) is missing")
needs_mosquitto = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed")


def one_error_line(result):
    assert result.returncode not in (0, 134), result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def _result(index: int, labels=("person",), kind: str | None = "x.tick") -> FrameResult:
    image = np.full((48, 64, 3), 80, np.uint8)
    result = FrameResult(Frame(image, index, index * 100_000_000, "cam"))
    boxes = np.array([[4 + 2 * i, 4, 20 + 2 * i, 30] for i in range(len(labels))], np.float32)
    names = tuple(sorted(set(labels)))
    result.detections = Detections(
        xyxy=boxes.reshape(-1, 4),
        confidence=np.linspace(0.9, 0.6, len(labels)).astype(np.float32),
        class_id=np.array([names.index(label) for label in labels], np.int64),
        labels=names,
    )
    if kind:
        result.add_event(kind, n=index)
    return result


# the outbox


def test_outbox_keeps_order_across_reopen_and_deletes_only_what_is_acknowledged(tmp_path):
    path = tmp_path / "box" / "o.sqlite"
    outbox = Outbox(path)
    seqs = [outbox.put(f"t/{i}", f"body{i}".encode(), f"id{i}") for i in range(5)]
    assert seqs == sorted(seqs) and len(outbox) == 5
    assert outbox.delete([seqs[1], seqs[3], 999]) == 2
    outbox.close()
    reopened = Outbox(path)
    items = reopened.peek(0, 10)
    assert [i.event_id for i in items] == ["id0", "id2", "id4"]
    assert [i.body for i in items] == [b"body0", b"body2", b"body4"]
    assert [i.event_id for i in reopened.peek(items[0].seq, 10)] == ["id2", "id4"]
    assert reopened.put("t", b"new", "id5") > seqs[-1]  # sequence numbers are never reused
    import sqlite3

    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    reopened.close()


def test_outbox_is_bounded_and_drops_the_oldest_saying_so_once(tmp_path, caplog):
    outbox = Outbox(tmp_path / "o.sqlite", max_events=3)
    with caplog.at_level(logging.WARNING):
        for i in range(6):
            outbox.put("t", b"x", f"id{i}")
    assert len(outbox) == 3 and outbox.dropped == 3
    assert [i.event_id for i in outbox.peek(0, 10)] == ["id3", "id4", "id5"]
    assert sum("is full" in r.message for r in caplog.records) == 1
    outbox.close()


def test_outbox_refuses_a_second_process_and_a_file_that_is_not_an_outbox(tmp_path):
    path = tmp_path / "o.sqlite"
    first = Outbox(path)
    with pytest.raises(ConfigError, match="in use by another ubiq process"):
        Outbox(path)
    first.close()
    Outbox(path).close()  # free again once closed
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(ConfigError, match="is not a ubiq outbox"):
        Outbox(junk)
    with pytest.raises(ConfigError, match="max_events must be"):
        Outbox(tmp_path / "b.sqlite", max_events=0)


def test_outbox_rows_committed_before_a_sigkill_survive_it(tmp_path):
    path = tmp_path / "o.sqlite"
    code = (
        "import os, signal, sys\n"
        "from ubiq.pipelines.sinks.outbox import Outbox\n"
        f"box = Outbox({str(path)!r})\n"
        "for i in range(500):\n"
        "    box.put('t', b'x' * 200, f'id{i}')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=False)
    assert result.returncode == -9
    outbox = Outbox(path)  # the killed process's lock is gone with it
    assert [i.event_id for i in outbox.peek(0, 1000)] == [f"id{i}" for i in range(500)]
    outbox.close()


# URLs and options


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://broker", ("broker", 1883, False, None)),
        ("mqtts://cam@broker.lan/ubiq/door", ("broker.lan", 8883, True, "cam")),
        ("mqtt://10.0.0.2:1884/home/cams/garage", ("10.0.0.2", 1884, False, None)),
    ],
)
def test_mqtt_urls_give_host_port_tls_user_and_prefix(url, expected):
    from ubiq.pipelines.sinks.mqtt import parse_mqtt_url

    options = parse_mqtt_url(url)
    assert (options.host, options.port, options.tls, options.username) == expected
    if url.count("/") > 2:
        assert options.prefix == url.split("/", 3)[3]
    else:
        assert options.prefix.startswith("ubiq/") and options.device


def test_a_password_never_shows_in_options_errors_or_repr(tmp_path):
    from ubiq.pipelines.sinks.mqtt import MqttSink, parse_mqtt_url

    with pytest.raises(ConfigError) as caught:
        parse_mqtt_url("mqtt://cam:hunter2secret@broker")
    assert "hunter2secret" not in str(caught.value) and "UBIQ_MQTT_PASSWORD" in str(caught.value)
    options = parse_mqtt_url("mqtt://cam@127.0.0.1:1/ubiq/t", password="hunter2secret")
    assert "hunter2secret" not in repr(options)
    sink = MqttSink(options, outbox=tmp_path / "o.sqlite")
    assert "hunter2secret" not in repr(sink)
    sink.close()


# the sink against mosquitto


@needs_mosquitto
def test_events_state_availability_discovery_and_snapshot(mosquitto_broker, tmp_path):
    from ubiq.pipelines.sinks import JsonlSink
    from ubiq.pipelines.sinks.mqtt import MqttSink, parse_mqtt_url

    subscriber = Subscriber(mosquitto_broker.port)
    options = parse_mqtt_url(f"{mosquitto_broker.url}/ubiq/door", state_interval_s=0.0)
    sink = MqttSink(options, outbox=tmp_path / "o.sqlite", relative_time=True)
    jsonl = JsonlSink(tmp_path / "events.jsonl", relative_time=True)
    results = [_result(i, ("person", "person", "car") if i < 3 else ("person",)) for i in range(5)]
    results[1].events.append(Event("track.start", 0, "cam", {"track_id": 1, "label": "person"}))
    results[2].events.append(Event("track.start", 0, "cam", {"track_id": 2, "label": "person"}))
    results[3].events.append(
        Event("zone.occupancy", 0, "cam", {"zone": "porch", "counts": {"person": 2}})
    )
    results[4].data["counts"] = {  # what pipelines.rules puts there every frame
        "lines": {"door": {"person": {"in": 3, "out": 1}}},
        "zones": {"porch": {"entered": {"person": 2}, "occupancy": {"person": 1}}},
    }
    for result in results:
        sink.write(result)
        jsonl.write(result)
    assert subscriber.wait_for(lambda s: len(s.events()) == 8)
    assert subscriber.wait_for(lambda s: s.latest("ubiq/door/availability") == b"online")
    jsonl.close()
    sink.close()
    expected = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert subscriber.events() == [r for r in expected if "kind" in r]
    topics = {t for t, _p, _r in subscriber.messages}
    assert {"ubiq/door/events/x.tick", "ubiq/door/events/track.start"} <= topics
    assert subscriber.wait_for(lambda s: s.latest("ubiq/door/availability") == b"offline")
    assert subscriber.latest("ubiq/door/state/occupancy/person") == b"1"
    assert subscriber.latest("ubiq/door/state/occupancy/car") == b"0"
    assert subscriber.latest("ubiq/door/state/zones/porch/occupancy/person") == b"2"
    assert subscriber.latest("ubiq/door/state/counts/person") == b"2"  # tracks started
    assert subscriber.latest("ubiq/door/state/counts/lines/door/person/in") == b"3"
    assert subscriber.latest("ubiq/door/state/counts/zones/porch/entered/person") == b"2"
    last = json.loads(subscriber.latest("ubiq/door/state/last/person"))
    assert last["frame"] == 4 and last["ts"] == pytest.approx(0.4) and last["label"] == "person"
    assert last["xyxy"] == [4.0, 4.0, 20.0, 30.0]
    config = json.loads(subscriber.latest("homeassistant/sensor/door/occupancy_person/config"))
    assert config["state_class"] == "measurement"
    assert config["state_topic"] == "ubiq/door/state/occupancy/person"
    assert config["availability_topic"] == "ubiq/door/availability"
    assert config["device"]["identifiers"] == ["ubiq_door"] and config["unique_id"]
    counts = json.loads(
        subscriber.latest("homeassistant/sensor/door/counts_lines_door_person_in/config")
    )
    assert counts["state_topic"] == "ubiq/door/state/counts/lines/door/person/in"
    assert counts["state_class"] == "total_increasing"
    camera = json.loads(subscriber.latest("homeassistant/camera/door/snapshot/config"))
    assert camera["topic"] == "ubiq/door/snapshot"
    jpeg = cv2.imdecode(np.frombuffer(subscriber.latest("ubiq/door/snapshot"), np.uint8), 1)
    assert jpeg.shape == (48, 64, 3)
    retained = {t for t, _p, retain in subscriber.messages if retain}
    assert not any("/events/" in t for t, _p, r in subscriber.messages if r)
    subscriber.close()
    # a late subscriber gets the retained state (and no events)
    late = Subscriber(mosquitto_broker.port, client_id="late")
    assert late.wait_for(lambda s: s.latest("ubiq/door/state/counts/person") == b"2")
    assert not late.events() and not retained
    late.close()


@needs_mosquitto
def test_state_is_republished_after_a_broker_that_lost_it_comes_back(tmp_path):
    from ubiq.pipelines.sinks.mqtt import MqttSink, parse_mqtt_url

    broker = Broker(tmp_path / "broker").start()
    options = parse_mqtt_url(
        f"{broker.url}/ubiq/yard", state_interval_s=0.0, reconnect_max_s=1, snapshot_interval_s=0
    )
    sink = MqttSink(options, outbox=tmp_path / "o.sqlite")
    sink.write(_result(0, ("dog", "dog")))
    first = Subscriber(broker.port, client_id="first")
    assert first.wait_for(lambda s: s.latest("ubiq/yard/state/occupancy/dog") == b"2")
    first.close()
    broker.stop()
    for path in broker.folder.glob("*.db"):
        path.unlink()  # a broker that lost its retained messages
    broker.start()
    fresh = Subscriber(broker.port, client_id="fresh")
    assert fresh.wait_for(lambda s: s.latest("ubiq/yard/state/occupancy/dog") == b"2")
    assert fresh.wait_for(lambda s: s.latest("ubiq/yard/availability") == b"online")
    assert fresh.latest("homeassistant/sensor/yard/occupancy_dog/config") is not None
    sink.close()
    fresh.close()
    broker.stop()


@needs_mosquitto
def test_unreachable_broker_at_start_queues_says_so_once_and_delivers_later(tmp_path, caplog):
    from ubiq.pipelines.sinks.mqtt import MqttSink, parse_mqtt_url

    port = free_port()
    options = parse_mqtt_url(f"mqtt://127.0.0.1:{port}/ubiq/late", reconnect_max_s=1)
    with caplog.at_level(logging.WARNING, logger="ubiq.pipelines.sinks.mqtt"):
        sink = MqttSink(options, outbox=tmp_path / "o.sqlite")
        for i in range(20):
            sink.write(_result(i, ()))
        time.sleep(2.5)  # several reconnect attempts fail meanwhile
        assert len(sink.outbox) == 20 and not sink.connected
        broker = Broker(tmp_path / "broker", port=port).start()
        subscriber = Subscriber(port)
        assert subscriber.wait_for(lambda s: len(s.events()) == 20)
        sink.close()
    assert [e["n"] for e in subscriber.events()] == list(range(20))
    down = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(down) == 1 and "Connection refused" in down[0].getMessage()
    subscriber.close()
    broker.stop()


@needs_mosquitto
def test_events_left_by_a_run_go_out_first_on_the_next(mosquitto_broker, tmp_path):
    from ubiq.pipelines.sinks.mqtt import MqttSink, parse_mqtt_url

    dead = parse_mqtt_url(f"mqtt://127.0.0.1:{free_port()}/ubiq/r", flush_timeout_s=0.1)
    sink = MqttSink(dead, outbox=tmp_path / "o.sqlite")
    for i in range(10):
        sink.write(_result(i, ()))
    sink.close()
    subscriber = Subscriber(mosquitto_broker.port)
    alive = parse_mqtt_url(f"{mosquitto_broker.url}/ubiq/r")
    sink = MqttSink(alive, outbox=tmp_path / "o.sqlite")
    for i in range(10, 15):
        sink.write(_result(i, ()))
    sink.close()
    assert len(sink.outbox) == 0
    assert [e["n"] for e in subscriber.events()] == list(range(15))
    subscriber.close()


# TLS and passwords, through the CLI


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """A CA and a server certificate for 127.0.0.1 made with openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=ubiq test CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (folder / "ext.cnf").write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "authorityKeyIdentifier=keyid\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
    )
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2",
            "-extfile", "ext.cnf")  # fmt: skip
    return folder


@needs_mosquitto
def test_track_over_tls_with_a_password_from_a_file_sends_the_jsonl_events(
    blazeface_path, tls_files, tmp_path
):
    secret = "s3cret-Pa55word"
    passwords = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "cam", secret], check=True)
    config = (
        f"cafile {tls_files / 'ca.pem'}\ncertfile {tls_files / 'server.pem'}\n"
        f"keyfile {tls_files / 'server.key'}\nallow_anonymous false\npassword_file {passwords}\n"
    )
    broker = Broker(tmp_path / "broker", config=config).start()
    import ssl

    context = ssl.create_default_context(cafile=str(tls_files / "ca.pem"))
    subscriber = Subscriber(broker.port, username="cam", password=secret, tls_context=context)
    (tmp_path / "pw").write_text(secret + "\n")
    jsonl = tmp_path / "out.jsonl"
    result = run_ubiq(
        "track", "--model", str(blazeface_path), "--jsonl", str(jsonl), "--max-frames", "60",
        "--mqtt", f"mqtts://cam@127.0.0.1:{broker.port}/ubiq/tls", "--mqtt-tls-ca",
        str(tls_files / "ca.pem"), "--mqtt-password-file", str(tmp_path / "pw"),
        "--outbox", str(tmp_path / "outbox"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert secret not in result.stderr + result.stdout
    events = [r for r in map(json.loads, jsonl.read_text().splitlines()) if "kind" in r]
    assert [e["kind"] for e in events] == ["track.start", "track.end"]
    assert subscriber.wait_for(lambda s: len(s.events()) == 2)
    assert subscriber.events() == events
    subscriber.close()
    # a wrong password: the run goes on, says so in one line, never shows the password
    result = run_ubiq(
        "track", "--model", str(blazeface_path), "--max-frames", "10",
        "--mqtt", f"mqtts://cam@127.0.0.1:{broker.port}/ubiq/tls", "--mqtt-tls-ca",
        str(tls_files / "ca.pem"), "--outbox", str(tmp_path / "outbox"),
        env={"UBIQ_MQTT_PASSWORD": "wrong-Pa55"},
    )  # fmt: skip
    broker.stop()
    assert result.returncode == 0, result.stderr
    refused = [line for line in result.stderr.splitlines() if "mqtt" in line]
    assert len(refused) >= 1 and "refused" in refused[0] and "wrong-Pa55" not in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--mqtt", "http://broker"], "--mqtt: http://broker is not an mqtt:// URL"),
        (["--mqtt", "mqtt://u:topsecret@broker"], "--mqtt: no password in the URL"),
        (["--mqtt", "mqtt://broker/ubiq/#"], "must not hold the wildcards"),
        (["--mqtt", "mqtt://broker:0"], "--mqtt: mqtt port must be 1-65535, got 0"),
        (["--mqtt-tls-ca", "ca.pem"], "--mqtt-tls-ca needs --mqtt URL"),
        (["--mqtt", "mqtt://b", "--mqtt-tls-ca", "{bad}"], "--mqtt-tls-* need an mqtts:// URL"),
        (["--mqtt", "mqtts://b", "--mqtt-tls-ca", "no.pem"], "--mqtt-tls-ca: no such file no.pem"),
        (["--mqtt", "mqtts://b", "--mqtt-tls-ca", "{bad}"], "--mqtt-tls-ca: {bad} is not a PEM"),
        (["--mqtt", "mqtts://b", "--mqtt-tls-cert", "{bad}"], "go together"),
        (
            ["--mqtt", "mqtts://b", "--mqtt-tls-cert", "{bad}", "--mqtt-tls-key", "{bad}"],
            "--mqtt-tls-cert/--mqtt-tls-key: {bad} and {bad} are not a matching PEM",
        ),
        (["--mqtt", "mqtt://b", "--mqtt-password-file", "{empty}"], "{empty} is empty"),
        (["--mqtt", "mqtt://b", "--mqtt-password-file", "{bad}"], "needs a user"),
        (["--mqtt", "mqtt://u@b", "--mqtt-password-file", "no-pw"], "cannot read no-pw"),
        (["--webhook", "ftp://x"], "--webhook: ftp://x is not an http:// or https:// URL"),
        (["--webhook", "https://u:topsecret@x/h"], "--webhook: no user or password"),
        (["--webhook-secret-file", "{bad}"], "--webhook-secret-file needs --webhook URL"),
        (["--outbox", "{bad}"], "--outbox needs --mqtt or --webhook"),
        (["--mqtt", "mqtt://b", "--outbox", "{bad}/sub"], "--outbox: cannot create {bad}/sub"),
    ],
)
def test_bad_event_flags_give_one_line_and_touch_nothing(blazeface_path, tmp_path, args, expected):
    paths = {"bad": tmp_path / "bad.pem", "empty": tmp_path / "empty"}
    paths["bad"].write_text("not a certificate\n")
    paths["empty"].write_text("\n")
    jsonl = tmp_path / "keep.jsonl"
    jsonl.write_text("{}\n")
    home = tmp_path / "home"
    args = [arg.format(**paths) for arg in args]
    result = run_ubiq(
        "detect", "--model", str(blazeface_path), "--jsonl", str(jsonl), *args,
        env={"UBIQ_HOME": str(home)},
    )  # fmt: skip
    line = one_error_line(result)
    assert expected.format(**paths) in line
    assert "topsecret" not in line
    assert jsonl.read_text() == "{}\n"
    assert not (home / "outbox").exists()


def test_listen_takes_the_same_flags_and_checks_them_first(tmp_path):
    jsonl = tmp_path / "keep.jsonl"
    jsonl.write_text("{}\n")
    line = one_error_line(
        run_ubiq("listen", "--source", "no.wav", "--jsonl", str(jsonl), "--mqtt", "http://x")
    )
    assert "--mqtt: http://x is not an mqtt:// URL" in line and jsonl.read_text() == "{}\n"


@needs_mosquitto
def test_listen_sends_its_speech_events(mosquitto_broker, tmp_path):
    from ubiq.models.datasets.commands import make_clip
    from ubiq.models.runtime.audio_features import write_wav

    clip = make_clip("turn on the light", "en-us", 150, 50, snr_db=None, lead_s=0.5, tail_s=0.5)
    wav = tmp_path / "talk.wav"
    write_wav(wav, np.concatenate([clip.samples, np.zeros(16000, np.float32)]), 16000)
    subscriber = Subscriber(mosquitto_broker.port)
    jsonl = tmp_path / "speech.jsonl"
    result = run_ubiq(
        "listen", "--source", str(wav), "--jsonl", str(jsonl), "--quiet",
        "--mqtt", f"{mosquitto_broker.url}/ubiq/mic", "--outbox", str(tmp_path / "outbox"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["kind"] for r in records] == ["speech.start", "speech.end"]
    assert subscriber.wait_for(lambda s: len(s.events()) == 2)
    for sent, record in zip(subscriber.events(), records, strict=True):
        assert {k: sent[k] for k in record} == record and sent["id"]
        assert sent["ts"] >= record["t_end"] - 1e-6 if sent["kind"] == "speech.end" else True
    subscriber.close()


# the outage/SIGKILL bar (benchmarks/mqtt_outage.py)


def _outage_module():
    spec = importlib.util.spec_from_file_location("mqtt_outage", REPO / "benchmarks/mqtt_outage.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _assert_no_loss(figures, events):
    assert figures["jsonl_events"] == events and figures["frames_in_jsonl"]
    assert figures["missing"] == 0 and figures["extra"] == 0
    assert figures["payload_mismatches"] == 0 and figures["in_order"]
    assert figures["received_unique"] == events
    assert figures["queued_at_kill"] > 0  # the kill really left unsent events behind
    assert figures["backlog_at_broker_back"] > 0 and figures["exit_code_second_run"] == 0
    assert figures["outbox_left"] == 0


@needs_mosquitto
def test_outage_and_sigkill_lose_nothing_short(tmp_path):
    figures = _outage_module().run_outage(
        events=200, rate=50, outage_s=3, stop_at=60, kill_at=120, folder=tmp_path
    )
    _assert_no_loss(figures, 200)


@needs_mosquitto
@pytest.mark.slow
def test_outage_and_sigkill_lose_nothing_1000_events_10_s_outage(tmp_path):
    figures = _outage_module().run_outage(folder=tmp_path)
    _assert_no_loss(figures, 1000)
    assert figures["broker_down_s"] >= 10


def test_ubiq_home_outbox_default(tmp_path, monkeypatch):
    from ubiq.pipelines.sinks.outbox import default_outbox_dir

    monkeypatch.setenv("UBIQ_HOME", str(tmp_path))
    assert default_outbox_dir() == tmp_path / "outbox"
    assert os.environ["UBIQ_HOME"] == str(tmp_path)


# the README's "Events out" block (README_EVENTS is its text; once the section is in
# README.md the test checks the two agree)

README_EVENTS = """\
ubiq track --source demo --jsonl events.jsonl --mqtt mqtt://localhost/ubiq/frontdoor
UBIQ_WEBHOOK_SECRET=change-me ubiq track --source demo --webhook http://localhost:8080/ubiq
"""


@needs_mosquitto
def test_the_readme_events_block(mosquitto_broker, ubiq_home, tmp_path):
    import re
    import shlex

    from mqtt_support import Receiver

    from ubiq.pipelines.sinks.webhook import sign

    readme = (REPO / "README.md").read_text()
    if "## Events out: MQTT and webhooks" in readme:
        block = re.search(r"## Events out: MQTT and webhooks.*?```bash\n(.*?)```", readme, re.S)
        assert block.group(1) == README_EVENTS
    receiver = Receiver()
    subscriber = Subscriber(mosquitto_broker.port)
    # the same commands, pointed at this test's broker and receiver instead of localhost
    text = README_EVENTS.replace("mqtt://localhost/", f"mqtt://127.0.0.1:{mosquitto_broker.port}/")
    text = text.replace("http://localhost:8080/ubiq", f"http://127.0.0.1:{receiver.port}/ubiq")
    try:
        for line in text.splitlines():
            words = shlex.split(line)
            env = {}
            while "=" in words[0]:
                key, value = words.pop(0).split("=", 1)
                env[key] = value
            assert words[0] == "ubiq"
            result = subprocess.run(
                [sys.executable, "-m", "ubiq", *words[1:]],
                cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
                env={**os.environ, **env},
            )  # fmt: skip
            assert result.returncode == 0, result.stderr
        jsonl = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
        events = [r for r in jsonl if "kind" in r]
        assert [e["kind"] for e in events] == ["track.start", "track.end"]
        assert subscriber.wait_for(lambda s: len(s.events()) == len(events))
        assert subscriber.events() == events
        assert subscriber.latest("ubiq/frontdoor/state/counts/face") == b"1"
        assert subscriber.latest("homeassistant/camera/frontdoor/snapshot/config") is not None
        assert receiver.wait_for(2)
        assert [r["kind"] for r in receiver.delivered()] == ["track.start", "track.end"]
        _path, headers, body, _status = receiver.requests[0]
        assert headers["X-Ubiq-Signature"] == sign(b"change-me", body)
    finally:
        receiver.close()
        subscriber.close()
