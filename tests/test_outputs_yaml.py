"""The outputs that leave the machine, from an app's YAML and the Python API: ``outputs:
{mqtt, webhook, webhook_batch, clips, serve, ...}`` publish as the flags do (a real mosquitto
and a real HTTP server on loopback), flags win over the YAML, and an error names the key."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from mqtt_support import (
    Receiver,
    Subscriber,
    free_port,
    mosquitto_broker_fixture,  # noqa: F401 - the fixture
)
from support import run_ubiq

from ubiq.apps.app import App, output_options
from ubiq.apps.config import OutputsConfig, load_config
from ubiq.errors import ConfigError


def one_error_line(result):
    assert result.returncode not in (0, 134), result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def events_of(jsonl: Path) -> list[dict]:
    return [r for r in map(json.loads, jsonl.read_text().splitlines()) if "kind" in r]


def write_config(tmp_path: Path, outputs: dict, **top) -> Path:
    config = tmp_path / "app.yaml"
    config.write_text(json.dumps({"app": "counter", "outputs": outputs, **top}))
    return config


# the schema


def test_outputs_take_every_flag_by_its_name():
    outputs = OutputsConfig(
        mqtt="mqtt://127.0.0.1:1883/ubiq/door",
        webhook="https://hooks.example/ubiq",
        webhook_batch=20,
        webhook_batch_s=2,
        clips="runs/clips",
        clip_kinds=["zone.*", "line.cross"],
        serve=8080,
        outbox="runs/outbox",
    )
    assert outputs.serve == "8080"  # a bare port in YAML is a number
    options, from_config = output_options(outputs)
    assert options.mqtt == "mqtt://127.0.0.1:1883/ubiq/door" and options.webhook_batch == 20
    assert options.clip_kinds == "zone.*,line.cross" and options.clip_pre is None
    assert from_config == {
        "mqtt", "webhook", "webhook_batch", "webhook_batch_s", "clips", "clip_kinds",
        "serve", "outbox",
    }  # fmt: skip


def test_a_flag_wins_over_its_key():
    import argparse

    outputs = OutputsConfig(mqtt="mqtt://yaml-broker/a", webhook="https://yaml/hook")
    flags = argparse.Namespace(mqtt="mqtt://flag-broker/b", source=["demo"])
    options, from_config = output_options(outputs, flags)
    assert options.mqtt == "mqtt://flag-broker/b" and options.webhook == "https://yaml/hook"
    assert options.source == ["demo"] and from_config == {"webhook"}


@pytest.mark.parametrize(
    ("outputs", "expected"),
    [
        ({"mqtt_tls_cafile": "ca.pem"}, "outputs.mqtt_tls_cafile: unknown key"),
        ({"webhook_batch": 0}, "outputs.webhook_batch: Input should be greater than or equal"),
        ({"clip_pre": 90}, "outputs.clip_pre: Input should be less than or equal to 60"),
        ({"clip_kinds": []}, "outputs.clip_kinds: List should have at least 1 item"),
    ],
)
def test_a_bad_key_names_its_path(tmp_path, outputs, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(write_config(tmp_path, outputs))


@pytest.mark.parametrize(
    ("outputs", "expected"),
    [
        ({"mqtt": "http://broker"}, "outputs.mqtt: "),
        ({"webhook": "ftp://x/hook"}, "outputs.webhook: ftp://x/hook is not an http://"),
        ({"webhook_batch": 5}, "outputs.webhook_batch needs --webhook URL"),
        ({"serve": "127.0.0.1:99999"}, "outputs.serve: "),
        ({"token_file": "no/such/token"}, "outputs.token_file: cannot read no/such/token"),
        ({"mqtt_tls_ca": "ca.pem"}, "outputs.mqtt_tls_ca needs --mqtt URL"),
    ],
)
def test_ubiq_run_names_the_bad_yaml_key_in_one_line(tmp_path, outputs, expected):
    jsonl = tmp_path / "out.jsonl"
    config = write_config(tmp_path, outputs)
    line = one_error_line(
        run_ubiq("run", "counter", "--config", str(config), "--jsonl", str(jsonl))
    )
    assert expected in line, line
    assert not jsonl.exists()


def test_a_bad_flag_is_named_as_a_flag_even_with_a_yaml(tmp_path):
    config = write_config(tmp_path, {"mqtt": "mqtt://127.0.0.1/ubiq/x"})
    line = one_error_line(run_ubiq("run", "counter", "--config", str(config), "--mqtt", "http://x"))
    assert "--mqtt: " in line and "outputs.mqtt" not in line


def test_the_python_api_names_the_key(tmp_path):
    app = App.from_yaml(write_config(tmp_path, {"webhook": "https://me:pw@x/hook"}))
    with pytest.raises(ConfigError, match="^outputs.webhook: no user or password"):
        app.run(max_frames=1)


# real services


def test_ubiq_run_publishes_the_yaml_mqtt_events(mosquitto_broker, tmp_path, ubiq_home):
    subscriber = Subscriber(mosquitto_broker.port, topic="ubiq/yaml/#", client_id="yaml-sub")
    jsonl = tmp_path / "events.jsonl"
    config = write_config(
        tmp_path,
        {
            "jsonl": str(jsonl),
            "mqtt": f"{mosquitto_broker.url}/ubiq/yaml",
            "outbox": str(tmp_path / "outbox"),
        },
    )
    try:
        result = run_ubiq("run", "counter", "--config", str(config), "--max-frames", "60")
        assert result.returncode == 0, result.stderr
        events = events_of(jsonl)
        assert events and events[-1]["kind"] == "counts"
        assert subscriber.wait_for(lambda s: len(s.events()) >= len(events))
        assert subscriber.events() == events
        assert subscriber.latest("ubiq/yaml/availability") == b"offline"
    finally:
        subscriber.close()
    # the outbox went where the YAML said, and is empty
    assert [p.suffix for p in (tmp_path / "outbox").iterdir() if p.suffix == ".sqlite"]


def test_the_mqtt_flag_overrides_the_yaml(mosquitto_broker, tmp_path, ubiq_home):
    subscriber = Subscriber(mosquitto_broker.port, topic="ubiq/#", client_id="override-sub")
    jsonl = tmp_path / "events.jsonl"
    dead = f"mqtt://127.0.0.1:{free_port()}/ubiq/from-yaml"
    config = write_config(tmp_path, {"jsonl": str(jsonl), "mqtt": dead})
    try:
        result = run_ubiq(
            "run", "counter", "--config", str(config), "--max-frames", "30",
            "--mqtt", f"{mosquitto_broker.url}/ubiq/from-flag",
            "--outbox", str(tmp_path / "outbox"),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        events = events_of(jsonl)
        assert subscriber.wait_for(lambda s: len(s.events()) >= len(events))
        topics = {t for t, _p, _r in subscriber.messages}
        assert any(t.startswith("ubiq/from-flag/events/") for t in topics)
        assert not any(t.startswith("ubiq/from-yaml") for t in topics)
        assert "from-yaml" not in result.stderr  # the YAML's broker was never tried
    finally:
        subscriber.close()


def test_python_api_posts_batched_webhooks_and_writes_clips(tmp_path, ubiq_home):
    receiver = Receiver()
    clips = tmp_path / "clips"
    config = write_config(
        tmp_path,
        {
            "webhook": receiver.url,
            "webhook_batch": 200,
            "webhook_batch_s": 30,  # only close() sends the batch: one request
            "outbox": str(tmp_path / "outbox"),
            "clips": str(clips),
            "clip_kinds": ["track.start"],
            "clip_pre": 0.5,
            "clip_post": 0,
        },
    )
    seen = []
    try:
        App.from_yaml(config).run(max_frames=40, on_event=seen.append)
        assert receiver.wait_for(1)
        (request,) = receiver.requests
        _path, headers, body, status = request
        assert status == 200 and headers["X-Ubiq-Event"] == "batch"
        posted = json.loads(body)
        assert int(headers["X-Ubiq-Batch"]) == len(posted) == len(seen) >= 1
        assert [p["id"] for p in posted] == [e.event_id for e in seen]
        starts = [p for p in posted if p["kind"] == "track.start"]
        assert starts and posted[-1]["kind"] == "counts" and "snapshot" not in posted[-1]
        # the clip recorder ran as the last stage: the webhook got the files' names
        for start in starts:
            assert Path(start["snapshot"]).parent == clips and Path(start["snapshot"]).is_file()
            assert Path(start["clip"]).is_file()
    finally:
        receiver.close()


def test_python_api_serves_the_live_view_from_yaml(tmp_path, ubiq_home):
    port = free_port()
    config = write_config(tmp_path, {"serve": f"127.0.0.1:{port}"})
    app = App.from_yaml(config)
    answers = []

    def probe(result):
        if result.index == 5:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as reply:
                answers.append(reply.status)

    app.run(max_frames=10, on_result=probe)
    assert answers == [200]
