"""Webhooks out, against a real HTTP server on loopback: signed JSON POSTs of the JSONL
records, retries with backoff after 5xx and outages, in order, through the durable outbox."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time

import numpy as np
import pytest
from mqtt_support import Receiver, free_port
from support import run_ubiq

from ubiq.errors import ConfigError
from ubiq.pipelines.sinks.webhook import WebhookOptions, WebhookSink, sign
from ubiq.types import Frame, FrameResult

SECRET = b"webhook-Secret-42"


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


def _result(index: int) -> FrameResult:
    result = FrameResult(Frame(np.zeros((8, 8, 3), np.uint8), index, index * 50_000_000, "cam"))
    result.add_event("x.tick", n=index)
    return result


def _options(url: str, **overrides) -> WebhookOptions:
    settings = {"secret": SECRET, "retry_initial_s": 0.05, "retry_max_s": 0.2}
    return WebhookOptions(url, **(settings | overrides))


def test_each_event_is_posted_signed_with_its_jsonl_record(receiver, tmp_path):
    from ubiq.pipelines.sinks import JsonlSink

    sink = WebhookSink(_options(receiver.url), outbox=tmp_path / "o.sqlite", relative_time=True)
    jsonl = JsonlSink(tmp_path / "e.jsonl", relative_time=True)
    for i in range(5):
        result = _result(i)
        sink.write(result)
        jsonl.write(result)
    jsonl.close()
    sink.close()
    records = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert receiver.delivered() == [r for r in records if "kind" in r]
    for path, headers, body, _status in receiver.requests:
        assert path == "/hook?token=t0ken"
        assert headers["Content-Type"] == "application/json"
        expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-Ubiq-Signature"], expected)
        assert headers["X-Ubiq-Event-Id"] == json.loads(body)["id"]
        assert headers["X-Ubiq-Event"] == "x.tick"
    assert sign(b"other", receiver.requests[0][2]) != receiver.requests[0][1]["X-Ubiq-Signature"]
    assert len(sink.outbox) == 0 and sink.events_sent == 5


def test_5xx_answers_are_retried_with_backoff_and_order_is_kept(receiver, tmp_path, caplog):
    receiver.plan = [500, 503, 502, 200, 500, 429]
    with caplog.at_level(logging.WARNING, logger="ubiq.pipelines.sinks.webhook"):
        sink = WebhookSink(_options(receiver.url), outbox=tmp_path / "o.sqlite")
        for i in range(4):
            sink.write(_result(i))
        assert receiver.wait_for(4)
        sink.close()
    assert [r["n"] for r in receiver.delivered()] == [0, 1, 2, 3]
    statuses = [s for _p, _h, _b, s in receiver.requests]
    assert statuses == [500, 503, 502, 200, 500, 429, 200, 200, 200]
    # the same event is retried (same id) until it is taken
    first_ids = {json.loads(b)["id"] for _p, _h, b, _s in receiver.requests[:4]}
    assert len(first_ids) == 1
    gaps = np.diff(receiver.times[:4])
    assert gaps[1] > gaps[0] * 1.5  # exponential backoff: 0.05, 0.1, 0.2 s
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 2 and "HTTP 500" in failures[0].getMessage()  # once per outage
    assert "t0ken" not in caplog.text  # the URL's query (a token) is never logged


def test_a_refused_body_is_dropped_and_the_queue_moves_on(receiver, tmp_path, caplog):
    receiver.plan = [422]
    with caplog.at_level(logging.ERROR, logger="ubiq.pipelines.sinks.webhook"):
        sink = WebhookSink(_options(receiver.url), outbox=tmp_path / "o.sqlite")
        for i in range(3):
            sink.write(_result(i))
        assert receiver.wait_for(2)
        sink.close()
    assert [r["n"] for r in receiver.delivered()] == [1, 2]
    assert sink.events_refused == 1 and "HTTP 422" in caplog.text


def test_events_wait_in_the_outbox_while_the_server_is_down_and_across_restarts(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    sink = WebhookSink(_options(url, flush_timeout_s=0.2), outbox=tmp_path / "o.sqlite")
    for i in range(6):
        sink.write(_result(i))
    time.sleep(0.5)
    sink.close()  # the server never answered: everything stays queued
    assert len(sink.outbox) == 6 and sink.events_sent == 0
    server = Receiver(port)
    try:
        sink = WebhookSink(_options(url), outbox=tmp_path / "o.sqlite")
        for i in range(6, 9):
            sink.write(_result(i))
        assert server.wait_for(9)
        sink.close()
        assert [r["n"] for r in server.delivered()] == list(range(9))
        assert len(sink.outbox) == 0
    finally:
        server.close()


def test_server_that_comes_back_gets_the_queue_in_order(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    sink = WebhookSink(_options(url), outbox=tmp_path / "o.sqlite")
    for i in range(5):
        sink.write(_result(i))
    time.sleep(0.4)
    server = Receiver(port)
    try:
        sink.write(_result(5))
        assert server.wait_for(6)
        sink.close()
        assert [r["n"] for r in server.delivered()] == list(range(6))
    finally:
        server.close()


def test_options_check_the_url_and_never_show_the_secret(tmp_path):
    with pytest.raises(ConfigError, match="not an http:// or https:// URL"):
        WebhookOptions("ftp://x")
    with pytest.raises(ConfigError, match="no user or password"):
        WebhookOptions("https://me:pw@x/h")
    options = WebhookOptions("https://x/h?token=abc", secret="s3cr3t-value")
    assert options.secret == b"s3cr3t-value"
    assert "s3cr3t" not in repr(options) and "abc" not in options.address
    sink = WebhookSink(options, outbox=tmp_path / "o.sqlite")
    assert "s3cr3t" not in repr(sink) and "abc" not in repr(sink)
    sink.close()


def test_detect_cli_posts_track_events_signed_with_the_secret_file(
    blazeface_path, receiver, tmp_path
):
    (tmp_path / "secret").write_text(SECRET.decode() + "\n")
    jsonl = tmp_path / "out.jsonl"
    result = run_ubiq(
        "track", "--model", str(blazeface_path), "--max-frames", "60", "--jsonl", str(jsonl),
        "--webhook", receiver.url, "--webhook-secret-file", str(tmp_path / "secret"),
        "--outbox", str(tmp_path / "outbox"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert SECRET.decode() not in result.stderr
    events = [r for r in map(json.loads, jsonl.read_text().splitlines()) if "kind" in r]
    assert [e["kind"] for e in events] == ["track.start", "track.end"]
    assert receiver.delivered() == events
    for _path, headers, body, _status in receiver.requests:
        assert headers["X-Ubiq-Signature"] == sign(SECRET, body)


def test_webhook_secret_from_the_environment(blazeface_path, receiver, tmp_path):
    result = run_ubiq(
        "track", "--model", str(blazeface_path), "--max-frames", "30",
        "--webhook", receiver.url, "--outbox", str(tmp_path / "outbox"),
        env={"UBIQ_WEBHOOK_SECRET": "from-env-secret"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert receiver.requests
    for _path, headers, body, _status in receiver.requests:
        assert headers["X-Ubiq-Signature"] == sign(b"from-env-secret", body)
